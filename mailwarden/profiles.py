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
        unlock_article=str(doc.get("lock", {}).get("unlock_article", "")),
    )
