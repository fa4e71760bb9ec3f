"""Notification templates: operator-editable files, rendered with the event's values.

A template is a text file in UTF-8: header lines (`Subject: ...`), an empty line, the
body. `{name}` is replaced by a value (see `values()`); `{{` and `}}` are literal
braces; an unknown name is left as written, so a typo shows in the mail instead of
losing it. The file for an event is the first that exists of:

    lock-KIND.txt (KIND = rate, manual, failed-logins, ...), lock.txt
    unlock.txt

Shipped in conf/notify/ (installed as /etc/mailwarden/notify/): Vietnamese first,
then English.
"""

from __future__ import annotations

import string
import time
from dataclasses import dataclass
from pathlib import Path

from mailwarden.rules.ratelock import RateSettings, limit_for
from mailwarden.settings import NotifierSettings
from mailwarden.store.events import AuditEvent
from mailwarden.units import format_duration

_MAX_VALUE = 500  # an operator's reason is free text; keep a mail readable


class TemplateError(ValueError):
    pass


def shipped_dir() -> Path:
    """conf/notify of the source tree, or /etc/mailwarden/notify when installed."""
    here = Path(__file__).resolve().parent.parent.parent / "conf" / "notify"
    return here if here.is_dir() else Path("/etc/mailwarden/notify")


class _Keep(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _clean(value: str) -> str:
    """One line, no control characters (a value never adds a header or a line)."""
    out = "".join(c if c.isprintable() else " " for c in value)
    return out[:_MAX_VALUE]


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def values(event: AuditEvent, n: NotifierSettings, rate: RateSettings) -> dict[str, str]:
    f = event.fields
    kind = f.get("kind", "") or ("rate" if f.get("by") == "policyd" else "manual")
    article = {"rate": n.rate_citation, "manual": n.manual_lock_citation}.get(
        kind, n.lock_citation)
    return {k: _clean(v) for k, v in {
        "account": event.account,
        "action": event.action,
        "kind": kind,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.when)),
        "by": f.get("by", "") or "-",
        "reason": f.get("reason", "") or "-",
        "count": f.get("count", "") or "-",
        "limit": str(limit_for(event.account, rate)),
        "window": format_duration(rate.window_s),
        "unit": rate.count_unit,
        "article": article,
        "lock_article": n.lock_citation,
        "unlock_article": n.unlock_citation or n.decision,
        "contact": n.contact,
        "decision": n.decision,
        "province": n.province,
        "event_id": event.id,
    }.items()}


def pick(directory: Path, event: AuditEvent, kind: str) -> Path:
    names = ([f"lock-{kind}.txt", "lock.txt"] if event.action == "lock" else
             [f"{event.action}.txt"])
    for name in names:
        if "/" not in name and (directory / name).is_file():
            return directory / name
    raise TemplateError(f"{directory}: none of {', '.join(names)}")


def render(path: Path, vals: dict[str, str]) -> Rendered:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"{path}: {e}") from None
    head, sep, body = text.partition("\n\n")
    if not sep:
        raise TemplateError(f"{path}: expected header lines, an empty line, the body")
    subject = ""
    for line in head.splitlines():
        name, colon, value = line.partition(":")
        if not colon or name.strip().lower() != "subject":
            raise TemplateError(f"{path}: only a Subject: header is allowed, not {line!r}")
        subject = value.strip()
    fmt = string.Formatter()
    try:
        out_subject = fmt.vformat(subject, (), _Keep(vals))
        out_body = fmt.vformat(body, (), _Keep(vals))
    except (ValueError, IndexError) as e:
        raise TemplateError(f"{path}: {e}") from None
    return Rendered(_clean(out_subject), out_body)


def check(directory: Path) -> None:
    """Config check / start: the shipped kinds render (raises TemplateError)."""
    for action, kind in (("lock", "rate"), ("lock", "manual"), ("unlock", "")):
        ev = AuditEvent("0-0", {"action": action, "account": "a@b", "kind": kind})
        render(pick(directory, ev, kind), _Keep())
