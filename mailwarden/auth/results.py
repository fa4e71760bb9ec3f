"""What the authentication checks found: plain values, no I/O.

Shared by the checks (spf.py, verify.py, dmarc.py), the Authentication-Results
writer (authres.py) and the pure decision (rules/authentication.py).
Result names are RFC 8601's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Result(enum.Enum):
    PASS = "pass"  # noqa: S105 - an RFC 8601 result, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    POLICY = "policy"


@dataclass(frozen=True)
class SpfCheck:
    result: Result
    identity: str  # "mailfrom", or "helo" for the null sender (RFC 7208 2.4)
    domain: str  # the domain whose SPF record was evaluated
    mailfrom: str  # the envelope sender checked ("" for the null sender)
    helo: str
    reason: str = ""


@dataclass(frozen=True)
class DkimCheck:
    result: Result
    domain: str  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i=
    header_b: str = ""  # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""


@dataclass(frozen=True)
class DmarcCheck:
    result: Result  # pass | fail | none | temperror | permerror
    from_domain: str
    policy_domain: str = ""  # where the record was found (the From domain or its org domain)
    policy: str = ""  # the published policy that applies (p=, or sp= for a subdomain)
    disposition: str = "none"  # what to do after pct= sampling: none | quarantine | reject
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


@dataclass(frozen=True)
class SenderField:
    """One From:, Sender: or Resent-From: field as a reader sees it (auth/mailbox.py)."""

    name: str  # "From" | "Sender" | "Resent-From"
    domain: str  # the domain of the one address, as written; "" when not parsable
    display: str  # display name and comments (decoded), or the text around a bad address
    parsed: bool  # exactly one address, read alike by both parsers
    claimed: tuple[str, ...] = ()  # domains the field may be read as naming (lower case)


@dataclass(frozen=True)
class AuthResults:
    client_ip: str
    mail_from_domain: str  # "" for the null sender
    from_domains: tuple[str, ...]  # domains of the From: header addresses, in order
    spf: SpfCheck | None = None
    dkim: tuple[DkimCheck, ...] = ()
    dmarc: DmarcCheck | None = None
    senders: tuple[SenderField, ...] = ()  # From:, Sender:, Resent-From:, in order
    duplicates: tuple[str, ...] = ()  # single-instance fields (RFC 5322 3.6) found twice
    headers_complete: bool = True  # False: the header block was over the reading cap
    dkim_skipped: str = ""  # why signatures were not verified (message over the size cap)
    timed_out: str = ""  # the step that ran out of auth.budget ("" = finished in time)

    def summary(self) -> str:
        """ "spf=pass dkim=pass dmarc=none": a compact form for log lines."""
        parts = []
        if self.spf is not None:
            parts.append(f"spf={self.spf.result.value}")
        if self.dkim:
            parts.append("dkim=" + ",".join(
                f"{k.result.value}:{k.domain}" if k.domain else k.result.value
                for k in self.dkim))
        else:
            parts.append("dkim=none")
        if self.dmarc is not None:
            parts.append(f"dmarc={self.dmarc.result.value}")
        return " ".join(parts)


@dataclass(frozen=True)
class HeaderField:
    """A header to add. `value` is folded for the wire (CRLF + whitespace)."""

    name: str
    value: str

    @property
    def milter_value(self) -> str:
        """The value for pymilter's addheader/insheader: Postfix wants LF folding."""
        return self.value.replace("\r\n", "\n")

    def as_bytes(self) -> bytes:
        """The complete field with its CRLF, to prepend to a raw message."""
        return f"{self.name}: {self.value}\r\n".encode("ascii")
