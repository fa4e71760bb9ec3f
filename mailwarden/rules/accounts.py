"""Accounts: a locked mailbox cannot log in (Dieu 7.1), consecutive failed logins lock
it (Dieu 7.2.a), and mailboxes unused for the profile's months are found.

Pure decisions over what the store answered. The counting is atomic in Redis
(store/scripts/login_failed.lua); this module decides what to ask, what the
answer means and what Dovecot is told: refuse (with why), delay N seconds, or
let the login go on. The abuse guard (per-address delays and the cap on
accounts one address can drive towards a lock) is explained in docs/accounts.md.
"""

from __future__ import annotations

import calendar
import ipaddress
import time
from dataclasses import dataclass

from mailwarden.addresses import Network, Ours, in_networks, mailbox_key
from mailwarden.rules.ratelock import LockInfo
from mailwarden.verdict import Verdict, accept, monitored, reject, reply_safe, rule_id
from mailwarden.verdict import defer as defer_verdict

LOGIN_LOCKED = rule_id("account.login_locked")
FAILED_LOGINS = rule_id("account.failed_logins")
LOGIN_THROTTLED = rule_id("account.login_throttled")
INACTIVE = rule_id("account.inactive")
RULE_IDS = (LOGIN_LOCKED, FAILED_LOGINS, LOGIN_THROTTLED, INACTIVE)

LOCK_KIND_FAILED = "failed-logins"
LOCK_KIND_INACTIVE = "inactive"
_MAX_LOGIN = 254  # RFC 5321 path limit; longer is not an account of ours


@dataclass(frozen=True)
class AccountSettings:
    """Everything the account rules need, resolved once from config + profile."""

    ours: Ours
    lock_refuses_login: bool
    failed_login_limit: int  # 0 = no failed-login lock
    enforce: bool  # False = failed-login monitor mode
    distinct_passwords: bool  # a repeated wrong password counts once
    failure_memory_s: float
    address_window_s: float
    address_free_failures: int
    address_max_delay_s: float
    address_max_accounts: int
    prefix_v4: int
    prefix_v6: int
    exempt_networks: tuple[Network, ...] = ()
    inactive_lock_months: int = 0
    inactive_remove_months: int = 0
    inactive_activity: str = "login-or-send"  # "login" | "login-or-send"
    inactive_auto_lock: bool = False
    login_lock_citation: str = ""
    failed_login_citation: str = ""
    inactive_citation: str = ""
    inactive_remove_citation: str = ""
    contact: str = ""


def login_account(login: str, s: AccountSettings) -> str:
    """The account a login names, normalised like a sender ("" = not one of ours:
    its failures are not counted, though its address is still throttled)."""
    login = login.strip()
    if not login or len(login) > _MAX_LOGIN or any(ord(c) < 0x21 or c == "\x7f" for c in login):
        return ""
    if "@" not in login:
        if not s.ours.local_domains:
            return ""
        login = f"{login}@{s.ours.local_domains[0]}"
    account = mailbox_key(login, s.ours.recipient_delimiter)
    return account if s.ours.is_local_address(account) else ""


def address_key(remote: str, s: AccountSettings) -> str:
    """The client address as counted: its /prefix_v4 or /prefix_v6 network ("" when
    Dovecot sent none or something that is not an address)."""
    try:
        ip = ipaddress.ip_address(remote.strip().strip("[]"))
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = s.prefix_v4 if ip.version == 4 else s.prefix_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def address_exempt(remote: str, s: AccountSettings) -> bool:
    return bool(s.exempt_networks) and in_networks(remote.strip().strip("[]"),
                                                   s.exempt_networks)


def delay_for(failures: int, s: AccountSettings) -> int:
    """Seconds Dovecot delays a login from an address with `failures` recent failures:
    none before address_free_failures failures, then 1, 2, 4, ... up to
    address_max_delay."""
    if failures <= 0 or failures < s.address_free_failures:
        return 0
    return int(min(s.address_max_delay_s, 2 ** min(failures - s.address_free_failures, 30)))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


# -- before authentication: Dovecot's ?command=allow ---------------------------------
@dataclass(frozen=True)
class AllowInputs:
    """One `allow` request after the store answered."""

    account: str  # "" = not one of ours
    address: str  # address_key(), "" = unknown
    lock: LockInfo | None = None
    address_failures: int = 0  # failures from the address in the window
    address_accounts: int = 0  # distinct accounts it failed against in the window
    exempt: bool = False  # the address is in authpolicy.exempt_networks
    first_check: bool = True  # False: Dovecot's check after a successful authentication


def login_locked(lock: LockInfo, s: AccountSettings) -> Verdict:
    """Dieu 7.1: a locked mailbox is not usable by its owner (it still receives)."""
    text = (f"Hop thu bi tam khoa tu {_when(lock.since)} ({lock.kind}: "
            f"{reply_safe(lock.reason, 100)}), khong the dang nhap ({s.login_lock_citation}). "
            f"Mailbox locked: login refused, mail is still delivered; contact "
            f"{reply_safe(s.contact, 120)}")
    return reject(LOGIN_LOCKED, text, s.login_lock_citation, kind=lock.kind,
                  since=_when(lock.since), account=lock.account)


def address_refused(inputs: AllowInputs, s: AccountSettings) -> Verdict:
    text = ("Qua nhieu lan dang nhap sai tu dia chi nay, vui long thu lai sau. Too many "
            "failed logins from your address; try again later")
    return reject(LOGIN_THROTTLED, text, address=inputs.address,
                  accounts=str(inputs.address_accounts),
                  failures=str(inputs.address_failures))


def delayed(inputs: AllowInputs, seconds: int) -> Verdict:
    return defer_verdict(LOGIN_THROTTLED, "delayed", address=inputs.address,
                         delay=str(seconds), failures=str(inputs.address_failures))


def decide_allow(inputs: AllowInputs, s: AccountSettings) -> list[Verdict]:
    """Refuse a locked account's login (with why), refuse an address over the account
    cap, or delay a failing address; [] = let the login go on."""
    if inputs.lock is not None and s.lock_refuses_login:
        return [login_locked(inputs.lock, s)]
    if inputs.exempt or not inputs.address or not inputs.first_check:
        return []
    if inputs.address_accounts >= s.address_max_accounts:
        return [address_refused(inputs, s)]
    seconds = delay_for(inputs.address_failures, s)
    return [delayed(inputs, seconds)] if seconds else []


def dovecot_answer(verdicts: list[Verdict]) -> dict[str, int | str]:
    """The auth policy reply: {"status": -1, "msg": why} refuses, {"status": N} delays N
    seconds, {"status": 0} lets the login go on."""
    for v in verdicts:
        if v.monitor:
            continue
        if v.rule == LOGIN_THROTTLED and "delay" in v.detail:
            return {"status": int(v.detail["delay"]), "msg": ""}
        if v.enforced:
            return {"status": -1, "msg": reply_safe(v.text, 400)}
    return {"status": 0, "msg": ""}


# -- after authentication: Dovecot's ?command=report ---------------------------------
@dataclass(frozen=True)
class FailureInputs:
    """One failed login after login_failed.lua counted it."""

    account: str
    status: str  # counted | repeat | capped | locked | locked_now | off
    count: int  # consecutive failures counted so far (at the lock: the count that locked)
    address: str = ""


def lock_reason(count: int) -> str:
    return f"{count} consecutive failed logins"


def decide_failure(inputs: FailureInputs, s: AccountSettings) -> list[Verdict]:
    """The failure that reaches the limit locks the account (Dieu 7.2.a); in monitor
    mode it is logged as what would have happened."""
    limit = s.failed_login_limit
    if limit <= 0 or inputs.status not in ("counted", "locked_now") or inputs.count < limit:
        return []
    text = (f"Dang nhap sai mat khau {inputs.count} lan lien tiep, hop thu bi tam khoa "
            f"({s.failed_login_citation}). {inputs.count} consecutive failed logins: mailbox "
            f"locked; contact {reply_safe(s.contact, 120)}")
    v = reject(FAILED_LOGINS, text, s.failed_login_citation, count=str(inputs.count),
               limit=str(limit), locked="yes" if inputs.status == "locked_now" else "no",
               account=inputs.account, address=inputs.address)
    return [monitored(v, s.enforce)]


def counted(inputs: FailureInputs) -> Verdict:
    """A failure that locked nothing, for the log."""
    return accept(FAILED_LOGINS, "counted", count=str(inputs.count), status=inputs.status,
                  address=inputs.address)


# -- inactivity: `mailwarden inactive` ------------------------------------------------
def months_before(epoch: float, months: int) -> float:
    """The same calendar day and time `months` months earlier (clamped to the month's
    last day: 3 months before 31 May is 28/29 February)."""
    t = time.gmtime(epoch)
    total = t.tm_year * 12 + (t.tm_mon - 1) - months
    year, month = divmod(total, 12)
    day = min(t.tm_mday, calendar.monthrange(year, month + 1)[1])
    return float(calendar.timegm((year, month + 1, day, t.tm_hour, t.tm_min, t.tm_sec)))


@dataclass(frozen=True)
class InactiveInputs:
    account: str
    last_login: float | None  # epoch seconds, None = never seen
    last_send: float | None
    tracking_since: float  # when mailwarden started recording (for "never seen")
    now: float
    lock: LockInfo | None = None
    days: int | None = None  # `--days N` instead of the profile's months


def last_use(inputs: InactiveInputs, s: AccountSettings) -> float | None:
    uses = [inputs.last_login]
    if s.inactive_activity == "login-or-send":
        uses.append(inputs.last_send)
    seen = [u for u in uses if u is not None]
    return max(seen) if seen else None


def lock_threshold(inputs: InactiveInputs, s: AccountSettings) -> float | None:
    """Last use before this is inactive (None = the profile sets no period)."""
    if inputs.days is not None:
        return inputs.now - inputs.days * 86400.0
    if s.inactive_lock_months <= 0:
        return None
    return months_before(inputs.now, s.inactive_lock_months)


def decide_inactive(inputs: InactiveInputs, s: AccountSettings) -> list[Verdict]:
    """Past the threshold: one account.inactive verdict with the dates (an account never
    seen counts from when recording started); [] = in use, or no period set."""
    threshold = lock_threshold(inputs, s)
    if threshold is None:
        return []
    used = last_use(inputs, s)
    since = used if used is not None else inputs.tracking_since
    if since > threshold:
        return []
    remove = ""
    if s.inactive_remove_months > 0 and since <= months_before(inputs.now,
                                                               s.inactive_remove_months):
        remove = "yes"
    days = int((inputs.now - since) // 86400)
    text = (f"Khong su dung hop thu tu {_when(since)} ({days} ngay), tam khoa "
            f"({s.inactive_citation}). Mailbox unused since {_when(since)}: locked; contact "
            f"{reply_safe(s.contact, 120)}")
    detail = {"account": inputs.account, "idle_days": str(days),
              "last_login": _when(inputs.last_login) if inputs.last_login else "never",
              "last_send": _when(inputs.last_send) if inputs.last_send else "never",
              "locked": inputs.lock.kind if inputs.lock else "no"}
    if remove:
        detail["remove"] = f"due ({s.inactive_remove_citation})"
    return [reject(INACTIVE, text, s.inactive_citation, detail=detail)]
