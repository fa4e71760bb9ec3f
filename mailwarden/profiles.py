"""Regulation profiles: the numbers of one decision and the articles to cite.

A profile is a TOML file in conf/profiles/ (see ninhbinh-162-2025.toml). It only
sets defaults; conf/mailwarden.toml may override any number. Code never holds
the regulation's numbers itself: they come from here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailwarden.units import parse_duration, parse_size

DEFAULT_PROFILE = "ninhbinh-162-2025"
COUNT_UNITS = ("recipients", "messages")
# What counts as using a mailbox for the inactivity rule: a login only (28/2020 Dieu 7.1
# "khong dang nhap"), or a login or a send (Ha Nam "gui, nhan"; Tien Giang "su dung").
INACTIVE_ACTIVITY = ("login", "login-or-send")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    decision: str  # "QD 162/2025/QD-UBND"
    province: str
    local_domains: tuple[str, ...]
    unlock_contact: str
    ratelimit_enabled: bool
    ratelimit_limit: int
    ratelimit_window_s: float
    ratelimit_count: str  # "recipients" | "messages"
    ratelimit_article: str
    lock_article: str
    manual_lock_article: str
    attachments_max_bytes: int
    size_article: str
    executable_article: str
    encrypted_article: str
    antivirus_article: str
    forwarding_article: str
    auth_article: str
    unlock_article: str = ""  # the unlock procedure ("Dieu 7.3"), for lock notifications

    # [accounts] (optional in a profile: absent = the decision says nothing about it)
    lock_refuses_login: bool = False  # a lock also refuses the owner's logins (Dieu 7.1)
    login_lock_article: str = ""
    failed_login_limit: int = 0  # consecutive failed logins that lock; 0 = none
    failed_login_article: str = ""
    inactive_lock_months: int = 0  # months without use before a lock; 0 = none
    inactive_remove_months: int = 0  # months before revocation/deletion; 0 = none
    inactive_activity: str = "login-or-send"
    inactive_article: str = ""
    inactive_remove_article: str = ""

    def cite(self, article: str) -> str:
        """Full citation for replies and logs: "QD 162/2025/QD-UBND Dieu 7.2.b"."""
        return f"{self.decision} {article}" if article else self.decision


def shipped_profiles_dir() -> Path:
    """conf/profiles of the source tree, or /etc/mailwarden/profiles when installed."""
    here = Path(__file__).resolve().parent.parent / "conf" / "profiles"
    return here if here.is_dir() else Path("/etc/mailwarden/profiles")


def _get(doc: dict[str, Any], path: str, kind: type, where: str) -> Any:
    section, key = path.split(".")
    try:
        value = doc[section][key]
    except (KeyError, TypeError):
        raise ProfileError(f"{where}: missing [{section}] {key}") from None
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ProfileError(f"{where}: [{section}] {key} must be {kind.__name__}")
    return value


def _opt(doc: dict[str, Any], path: str, kind: type, where: str, default: Any) -> Any:
    section, key = path.split(".")
    if key not in (doc.get(section) or {}):
        return default
    value = _get(doc, path, kind, where)
    if kind is int and value < 0:
        raise ProfileError(f"{where}: [{section}] {key} must be 0 or more")
    return value


def _accounts(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """The optional [accounts] section: login refusal, failed logins, inactivity."""
    activity = _opt(doc, "accounts.inactive_activity", str, where, "login-or-send")
    if activity not in INACTIVE_ACTIVITY:
        raise ProfileError(f"{where}: [accounts] inactive_activity must be one of "
                           f"{INACTIVE_ACTIVITY}")
    return {
        "lock_refuses_login": _opt(doc, "accounts.lock_refuses_login", bool, where, False),
        "login_lock_article": _opt(doc, "accounts.login_lock_article", str, where, ""),
        "failed_login_limit": _opt(doc, "accounts.failed_login_limit", int, where, 0),
        "failed_login_article": _opt(doc, "accounts.failed_login_article", str, where, ""),
        "inactive_lock_months": _opt(doc, "accounts.inactive_lock_months", int, where, 0),
        "inactive_remove_months": _opt(doc, "accounts.inactive_remove_months", int, where, 0),
        "inactive_activity": activity,
        "inactive_article": _opt(doc, "accounts.inactive_article", str, where, ""),
        "inactive_remove_article": _opt(doc, "accounts.inactive_remove_article", str, where,
                                        ""),
    }


def load_profile(name: str, directory: Path | None = None) -> Profile:
    directory = directory or shipped_profiles_dir()
    path = directory / f"{name}.toml"
    where = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []
        raise ProfileError(f"{where}: no such profile (known: {', '.join(known)})") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: {e}") from None
    try:
        window = parse_duration(_get(doc, "ratelimit.window", str, where))
        max_bytes = parse_size(_get(doc, "attachments.max_bytes", str, where))
    except ValueError as e:
        raise ProfileError(f"{where}: {e}") from None
    count = _get(doc, "ratelimit.count", str, where)
    if count not in COUNT_UNITS:
        raise ProfileError(f"{where}: [ratelimit] count must be one of {COUNT_UNITS}")
    domains = _get(doc, "profile.local_domains", list, where)
    if not domains or not all(isinstance(d, str) and d for d in domains):
        raise ProfileError(f"{where}: [profile] local_domains must be a non-empty list of names")
    return Profile(
        name=name,
        decision=_get(doc, "profile.decision", str, where),
        province=_get(doc, "profile.province", str, where),
        local_domains=tuple(d.lower() for d in domains),
        unlock_contact=_get(doc, "profile.unlock_contact", str, where),
        ratelimit_enabled=_get(doc, "ratelimit.enabled", bool, where),
        ratelimit_limit=_get(doc, "ratelimit.limit", int, where),
        ratelimit_window_s=window,
        ratelimit_count=count,
        ratelimit_article=_get(doc, "ratelimit.article", str, where),
        lock_article=_get(doc, "lock.article", str, where),
        manual_lock_article=_get(doc, "lock.manual_article", str, where),
        attachments_max_bytes=max_bytes,
        size_article=_get(doc, "attachments.size_article", str, where),
        executable_article=_get(doc, "attachments.executable_article", str, where),
        encrypted_article=_get(doc, "attachments.encrypted_article", str, where),
        antivirus_article=_get(doc, "antivirus.article", str, where),
        forwarding_article=_get(doc, "forwarding.article", str, where),
        auth_article=_get(doc, "auth.article", str, where),
        **_accounts(doc, where),
        unlock_article=str(doc.get("lock", {}).get("unlock_article", "")),
    )
