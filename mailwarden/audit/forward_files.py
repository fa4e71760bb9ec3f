"""A `.forward` file -> the forwards it makes to private addresses. Pure."""

from __future__ import annotations

from mailwarden.audit.aliases import Names, ReadInclude, expand_targets
from mailwarden.audit.findings import FORWARD, AuditFinding, is_private
from mailwarden.rules.forwarding import ForwardSettings


def forward_file_findings(path: str, text: str, owner: str, s: ForwardSettings,
                          read_include: ReadInclude) -> list[AuditFinding]:
    """`text` of the .forward at `path`, owned by `owner` (user@domain)."""
    names = Names(owner.split("@", 1)[1])
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for target, note in expand_targets(line, names, read_include):
            if is_private(target, s):
                out.append(AuditFinding(FORWARD, ".forward", f"{path}:{number}", owner,
                                        target.lower(), detail=note))
    return out
