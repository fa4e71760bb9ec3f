"""Outbound rate lock (Dieu 7.2.b) and account locks (Dieu 7.1-7.3).

Who is sending, whether a recipient counts, and the replies for a locked
account and for the request that goes over the limit. The counting itself is
atomic in Redis (store/scripts/reserve.lua); this module only decides what to
ask and what the answer means.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailwarden.addresses import Ours, mailbox_key, split_address
from mailwarden.units import format_duration
from mailwarden.verdict import Verdict, accept, monitored, reject, reply_safe, rule_id
from mailwarden.verdict import defer as defer_verdict

RATE_LIMIT = rule_id("ratelimit.external_recipients")
ACCOUNT_LOCKED = rule_id("account.locked")
BACKEND_ERROR = rule_id("ratelimit.backend_error")
RULE_IDS = (RATE_LIMIT, ACCOUNT_LOCKED, BACKEND_ERROR)


@dataclass(frozen=True)
class RateSettings:
    """Everything the rate rule needs, resolved once from config + profile."""

    ours: Ours  # our domains, trusted hosts, recipient delimiter
    enabled: bool
    enforce: bool  # False = monitor mode
    limit: int
    window_s: float
    count_unit: str  # "recipients" | "messages"
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


def sending_account(attrs: Mapping[str, str], s: RateSettings, *,
                    end_of_message: bool = False) -> str:
    """The account responsible for this send, or "" when it is not ours.

    The SASL login when present; otherwise the envelope sender in a local domain,
    when the mail is ours by the one definition (addresses.Ours): a trusted
    client, or a recipient outside that Postfix agreed to relay. At
    END-OF-MESSAGE the recipient is often absent (several recipients): a local
    sender is then named so that whatever it reserved at RCPT gets committed.
    """
    o = s.ours
    login = attrs.get("sasl_username", "")
    if login:
        if "@" not in login and o.local_domains:
            login = f"{login}@{o.local_domains[0]}"
        return mailbox_key(login, o.recipient_delimiter)
    sender = attrs.get("sender", "")
    if not sender:
        return ""
    _, domain = split_address(sender)
    if not o.is_local_domain(domain):
        return ""
    recipient = attrs.get("recipient", "")
    if end_of_message or o.sent_by_us(authenticated=False,
                                      client_addr=attrs.get("client_address", ""),
                                      recipients=(recipient,) if recipient else ()):
        return mailbox_key(sender, o.recipient_delimiter)
    return ""


def classify(attrs: Mapping[str, str], s: RateSettings) -> Classified:
    """What a RCPT-stage request means for the rate rule."""
    account = sending_account(attrs, s)
    if not account:
        return Classified(Scope.INBOUND)
    if account in s.exempt or not s.enabled:
        return Classified(Scope.EXEMPT, account)
    recipient = attrs.get("recipient", "")
    # Counted unless provably delivered inside: "gmail.com!bob", "bob%gmail.com@here"
    # and the like go out (swap_bangpath, allow_percent_hack).
    if not s.ours.is_external_recipient(recipient):
        return Classified(Scope.INTERNAL, account)
    instance = attrs.get("instance", "")
    if s.count_unit == "messages":
        member = f"m:{instance}"
    else:
        member = f"r:{instance}:{mailbox_key(recipient, s.ours.recipient_delimiter)}"
    return Classified(Scope.EXTERNAL, account, member)


def limit_for(account: str, s: RateSettings) -> int:
    return s.limit_overrides.get(account, s.limit)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def over_limit(account: str, count: int, s: RateSettings, *, locked: bool = True) -> Verdict:
    """The request that takes the account over its limit (Dieu 7.2.b); one decision
    line says whether it locked the account (monitor mode and a lost race do not)."""
    limit = limit_for(account, s)
    unit = "thu" if s.count_unit == "messages" else "nguoi nhan"
    unit_en = "messages" if s.count_unit == "messages" else "recipients"
    window = format_duration(s.window_s)
    domains = "/".join(s.ours.local_domains)
    text = (
        f"Vuot gioi han {limit} {unit}/{window} ngoai {domains}, hop thu bi tam khoa "
        f"({s.rate_citation}). Over the limit of {limit} external {unit_en} per {window}: "
        f"account locked; contact {reply_safe(s.contact, 120)}"
    )
    v = reject(RATE_LIMIT, text, s.rate_citation, count=str(count), limit=str(limit),
               window=window, locked="yes" if s.enforce and locked else "no",
               account=account)
    return monitored(v, s.enforce)


def locked(lock: LockInfo, s: RateSettings) -> Verdict:
    """Every send by a locked account is refused (Dieu 7.1); mail to it is not."""
    citation = s.lock_citation if lock.kind == "rate" else s.manual_lock_citation
    text = (
        f"Hop thu bi tam khoa tu {_when(lock.since)}: {reply_safe(lock.reason, 120)} ({citation}). "
        f"Mailbox locked since {_when(lock.since)}; contact {reply_safe(s.contact, 120)}"
    )
    return reject(ACCOUNT_LOCKED, text, citation, kind=lock.kind, since=_when(lock.since))


def accepted(rule: str = RATE_LIMIT, **detail: str) -> Verdict:
    return accept(rule, "ok", detail=detail)


def backend_error(why: str, *, defer: bool) -> Verdict:
    """Redis did not answer: 451 (on_redis_error = defer, at RCPT) or let it through,
    logged as accept-unchecked (locks are still enforced from the in-process copy)."""
    if defer:
        return defer_verdict(BACKEND_ERROR,
                             "Tam thoi khong kiem tra duoc gioi han gui thu, vui long thu lai "
                             "sau. Sending limit check temporarily unavailable, try again "
                             "later", error=why)
    return accept(BACKEND_ERROR, "ok", error=why, policy="accept")


@dataclass(frozen=True)
class RateInputs:
    """One RCPT request after the store answered: what the rule decides on."""

    account: str
    lock: LockInfo | None = None  # the account's lock, known before or made just now
    over: bool = False  # this request took the account over its limit
    count: int = 0  # the window's count after this request
    locked_now: bool = False  # going over made the lock (False: monitor, or lost a race)


def decide(inputs: RateInputs, s: RateSettings) -> list[Verdict]:
    """Every reason to refuse this send ([] = let it through)."""
    if inputs.over:
        return [over_limit(inputs.account, inputs.count, s, locked=inputs.locked_now)]
    if inputs.lock is not None:
        return [locked(inputs.lock, s)]
    return []
