"""Outbound rate lock (Dieu 7.2.b) and account locks (Dieu 7.1-7.3).

Who is sending, whether a recipient counts, and the replies for a locked
account and for the request that goes over the limit. The counting itself is
atomic in Redis (store/scripts/reserve.lua); this module only decides what to
ask and what the answer means.
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from mailwarden.addresses import in_domains, mailbox_key, split_address
from mailwarden.units import format_duration
from mailwarden.verdict import Action, Verdict, reject, reply_safe

RATE_LIMIT = "ratelimit.external_recipients"
ACCOUNT_LOCKED = "account.locked"
BACKEND_ERROR = "ratelimit.backend_error"
RULE_IDS = (RATE_LIMIT, ACCOUNT_LOCKED, BACKEND_ERROR)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateSettings:
    """Everything the rate rule needs, resolved once from config + profile."""

    enabled: bool
    enforce: bool  # False = monitor mode
    limit: int
    window_s: float
    count_unit: str  # "recipients" | "messages"
    local_domains: tuple[str, ...]
    include_subdomains: bool
    recipient_delimiter: str
    trusted_networks: tuple[Network, ...]
    limit_overrides: Mapping[str, int] = field(default_factory=dict)
    exempt: frozenset[str] = frozenset()
    rate_citation: str = ""  # "QD 162/2025/QD-UBND Dieu 7.2.b"
    lock_citation: str = ""
    manual_lock_citation: str = ""
    contact: str = ""


class Scope(enum.Enum):
    INBOUND = "inbound"  # not a send by one of our accounts: never counted
    INTERNAL = "internal"  # our account to a local recipient: lock check only
    EXTERNAL = "external"  # our account to the outside: counted
    EXEMPT = "exempt"  # our account, exempt from counting: lock check only


@dataclass(frozen=True)
class Classified:
    scope: Scope
    account: str = ""  # normalised sending account
    member: str = ""  # what the window counts for this request


@dataclass(frozen=True)
class LockInfo:
    account: str
    reason: str
    since: float  # epoch seconds
    kind: str  # "rate" | "manual"
    by: str = ""
    count: int = 0


def _trusted(client_address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(client_address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def sending_account(attrs: Mapping[str, str], s: RateSettings) -> str:
    """The account responsible for this send, or "" when it is not ours.

    The SASL login when present; otherwise the envelope sender, but only when
    its domain is local and the client is one of our trusted hosts (webmail,
    mailbox servers). Anything else is mail arriving from outside.
    """
    login = attrs.get("sasl_username", "")
    if login:
        if "@" not in login and s.local_domains:
            login = f"{login}@{s.local_domains[0]}"
        return mailbox_key(login, s.recipient_delimiter)
    sender = attrs.get("sender", "")
    if not sender:
        return ""
    _, domain = split_address(sender)
    if in_domains(domain, s.local_domains, s.include_subdomains) and _trusted(
        attrs.get("client_address", ""), s.trusted_networks
    ):
        return mailbox_key(sender, s.recipient_delimiter)
    return ""


def classify(attrs: Mapping[str, str], s: RateSettings) -> Classified:
    """What a RCPT-stage request means for the rate rule."""
    account = sending_account(attrs, s)
    if not account:
        return Classified(Scope.INBOUND)
    if account in s.exempt or not s.enabled:
        return Classified(Scope.EXEMPT, account)
    recipient = attrs.get("recipient", "")
    _, domain = split_address(recipient)
    if not domain or in_domains(domain, s.local_domains, s.include_subdomains):
        return Classified(Scope.INTERNAL, account)
    instance = attrs.get("instance", "")
    if s.count_unit == "messages":
        member = f"m:{instance}"
    else:
        member = f"r:{instance}:{mailbox_key(recipient, s.recipient_delimiter)}"
    return Classified(Scope.EXTERNAL, account, member)


def limit_for(account: str, s: RateSettings) -> int:
    return s.limit_overrides.get(account, s.limit)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def over_limit(account: str, count: int, s: RateSettings) -> Verdict:
    """The request that takes the account over its limit (Dieu 7.2.b)."""
    limit = limit_for(account, s)
    unit = "thu" if s.count_unit == "messages" else "nguoi nhan"
    unit_en = "messages" if s.count_unit == "messages" else "recipients"
    window = format_duration(s.window_s)
    domains = "/".join(s.local_domains)
    text = (
        f"Vuot gioi han {limit} {unit}/{window} ngoai {domains}, hop thu bi tam khoa "
        f"({s.rate_citation}). Over the limit of {limit} external {unit_en} per {window}: "
        f"account locked; contact {reply_safe(s.contact, 120)}"
    )
    v = reject(RATE_LIMIT, text, s.rate_citation, count=str(count), limit=str(limit),
               window=window, locked="no" if not s.enforce else "yes")
    return v if s.enforce else replace(v, monitor=True)


def locked(lock: LockInfo, s: RateSettings) -> Verdict:
    """Every send by a locked account is refused (Dieu 7.1); mail to it is not."""
    citation = s.lock_citation if lock.kind == "rate" else s.manual_lock_citation
    text = (
        f"Hop thu bi tam khoa tu {_when(lock.since)}: {reply_safe(lock.reason, 120)} ({citation}). "
        f"Mailbox locked since {_when(lock.since)}; contact {reply_safe(s.contact, 120)}"
    )
    return reject(ACCOUNT_LOCKED, text, citation, kind=lock.kind, since=_when(lock.since))


def accepted(rule: str = RATE_LIMIT, **detail: str) -> Verdict:
    return Verdict(Action.ACCEPT, rule, 250, "2.0.0", "ok", detail=dict(detail))
