"""The internal-error policy: what both daemons do when their own code fails.

One key, `failure.on_internal_error`, for the policy daemon and the milter:
"defer" (451 4.7.1: the client keeps the mail and retries; the default) or
"accept" (the mail goes through unchecked, logged at error level as
accept-unchecked). Either way the decision line carries rule
`internal.error`, the exception's type and where it was raised, never the
exception's text: that text can quote the message or the request.
"""

from __future__ import annotations

import traceback
from pathlib import PurePath

from mailwarden.verdict import Action, Verdict, defer, rule_id

INTERNAL_ERROR = rule_id("internal.error")
POLICIES = ("defer", "accept")

_TEXT = ("Loi tam thoi khi kiem tra thu, vui long thu lai sau. "
         "Temporary error checking the message, try again later")


def summary(e: BaseException) -> dict[str, str]:
    """{"error": type, "where": file:line:function} of the deepest frame in our package
    (else the deepest frame). No exception text."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "mailwarden" in PurePath(f.filename).parts]
    out = {"error": type(e).__name__}
    if ours or frames:
        frame = (ours or frames)[-1]
        parts = PurePath(frame.filename).parts
        where = "/".join(parts[parts.index("mailwarden"):]) if "mailwarden" in parts \
            else PurePath(frame.filename).name
        out["where"] = f"{where}:{frame.lineno}:{frame.name}"
    return out


def internal_error(e: BaseException, policy: str) -> Verdict:
    """The verdict for an unexpected exception under `policy` ("defer" or "accept")."""
    if policy == "accept":
        return Verdict(Action.ACCEPT, INTERNAL_ERROR, 250, "2.0.0", "accepted unchecked",
                       detail={**summary(e), "policy": "accept"})
    return defer(INTERNAL_ERROR, _TEXT, detail=summary(e))
