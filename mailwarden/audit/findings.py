"""What the audit reports, and the facts every parser shares. Pure: no I/O."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from mailwarden.addresses import AddressClass
from mailwarden.rules.forwarding import EXTERNAL_AUTO, ForwardSettings

FORWARD = "forward"
NOT_INSPECTABLE = "not-inspectable"


class AuditError(Exception):
    """The audit cannot run (bad Postfix config directory, postconf missing)."""


@dataclass(frozen=True)
class AuditFinding:
    kind: str  # FORWARD | NOT_INSPECTABLE
    source: str  # "virtual_alias_maps", "alias_maps", ".forward", "sieve"
    location: str  # "hash:/etc/postfix/virtual", "/home/bob/.forward:2"
    mailbox: str = ""  # the local mailbox that forwards ("" when not inspectable)
    target: str = ""  # the private address it forwards to
    rule: str = EXTERNAL_AUTO
    detail: str = ""  # "redirect :copy", why a source is not inspectable, ...

    def line(self) -> str:
        if self.kind == NOT_INSPECTABLE:
            return f"not inspectable: {self.location} ({self.source}): {self.detail}"
        extra = f" {self.detail}" if self.detail else ""
        return (f"{self.rule}: {self.mailbox} -> {self.target}  "
                f"[{self.source} {self.location}{extra}]")


def is_private(address: str, s: ForwardSettings) -> bool:
    return s.classify(address) is AddressClass.PRIVATE


def is_local(address: str, s: ForwardSettings) -> bool:
    return s.classify(address) is AddressClass.LOCAL


def path_parts(path: str) -> list[str]:
    """The components of a POSIX path as pathlib's `parts` gives them ("/" first when
    absolute; empty and "." components dropped)."""
    parts = [p for p in path.split("/") if p and p != "."]
    return ["/", *parts] if path.startswith("/") else parts


def owner_from_path(path: str, pattern: str, s: ForwardSettings) -> str:
    """The mailbox a file belongs to: a local domain directory followed by the user
    (/var/vmail/ninhbinh.gov.vn/alice/...), else the part the glob's first wildcard
    matched (/home/*/.forward), with the first local domain appended."""
    parts = path_parts(path)
    for i, part in enumerate(parts[:-1]):
        if part.lower() in s.local_domains:
            return f"{parts[i + 1]}@{part}".lower()
    pparts = path_parts(pattern)
    for i, pp in enumerate(pparts):
        if any(c in pp for c in "*?[") and i < len(parts) and fnmatch.fnmatch(parts[i], pp):
            user = parts[i]
            head, star, tail = pp.partition("*")
            if star and not any(c in head + tail for c in "*?["):  # "*.sieve" -> the name
                user = user[len(head):len(user) - len(tail)]
            break
    else:
        user = parts[-2] if len(parts) >= 2 and parts[-2] != "/" else ""  # the parent's name
    domain = s.local_domains[0] if s.local_domains else "localhost"
    return user.lower() if "@" in user else f"{user}@{domain}".lower()
