"""Every settings object, built once from the merged config (schema + profile).

`Settings.from_config(cfg)` is the only place that turns config keys into the
typed settings the rules, the engine and the daemons use. Defaults live in the
schema (config.py), regulation numbers in the profile (mapped to keys by the
schema's `profile` field), and citations come from each rule family's own
profile field (verdict.RULES names it). Nothing else reads `cfg[...]`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mailwarden.addresses import Ours
from mailwarden.config import Config
from mailwarden.inspect import DEFAULT_EXECUTABLE_EXTENSIONS, InspectLimits
from mailwarden.rules.antivirus import AntivirusSettings
from mailwarden.rules.attachments import AttachmentSettings
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.rules.forwarding import ForwardSettings
from mailwarden.rules.ratelock import RateSettings
from mailwarden.verdict import citation_field


def _domains(values: list[str]) -> tuple[str, ...]:
    return tuple(d.lower().strip().strip(".") for d in values)


def _networks(values: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in values)


def cite(cfg: Config, rule: str) -> str:
    """The full citation for a rule id ("QD 162/2025/QD-UBND Dieu 4.5"), from the
    profile field the rule registry names for it; "" when the profile has none."""
    article = getattr(cfg.profile, citation_field(rule))
    return cfg.profile.cite(article) if article else ""


def ours_from(cfg: Config) -> Ours:
    return Ours(
        local_domains=_domains(cfg["domains.local"]),
        include_subdomains=cfg["domains.include_subdomains"],
        recipient_delimiter=cfg["domains.recipient_delimiter"],
        trusted_networks=_networks(cfg["domains.trusted_networks"]),
        relay_domains=_domains(cfg["domains.relay_domains"]),
    )


def rate_from(cfg: Config, ours: Ours) -> RateSettings:
    overrides = cfg["ratelimit.overrides"]
    return RateSettings(
        ours=ours,
        enabled=cfg["ratelimit.enabled"],
        enforce=cfg["ratelimit.mode"] == "enforce",
        limit=cfg["ratelimit.limit"],
        window_s=cfg["ratelimit.window"],
        count_unit=cfg["ratelimit.count"],
        limit_overrides={a.lower(): o["limit"] for a, o in overrides.items() if "limit" in o},
        exempt=frozenset(a.lower() for a, o in overrides.items() if o.get("exempt")),
        rate_citation=cite(cfg, "ratelimit.external_recipients"),
        lock_citation=cite(cfg, "account.locked"),
        manual_lock_citation=cfg.profile.cite(cfg.profile.manual_lock_article),
        contact=cfg["lock.contact"],
    )


def inspect_from(cfg: Config) -> InspectLimits:
    exts = cfg["attachments.executable_extensions"]
    extensions = {e.lower() for e in (exts if exts is not None
                                      else DEFAULT_EXECUTABLE_EXTENSIONS)}
    extensions |= {e.lower() for e in cfg["attachments.extra_executable_extensions"]}
    return InspectLimits(
        executable_extensions=frozenset(extensions),
        max_archive_depth=cfg["attachments.max_archive_depth"],
        max_archive_entries=cfg["attachments.max_archive_entries"],
        max_expanded_bytes=cfg["attachments.max_expanded_bytes"],
        max_parts=cfg["attachments.max_parts"],
        time_budget_s=cfg["milter.content_budget"],
        spool_memory_bytes=cfg["milter.spool_memory"],
    )


def attachments_from(cfg: Config) -> AttachmentSettings:
    return AttachmentSettings(
        enforce=cfg["attachments.mode"] == "enforce",
        max_bytes=cfg["attachments.max_bytes"],
        size_overhead=cfg["attachments.size_overhead"],
        encrypted_documents=cfg["attachments.encrypted_documents"],
        uninspectable=cfg["attachments.uninspectable"],
        size_citation=cite(cfg, "attachment.size"),
        executable_citation=cite(cfg, "attachment.executable"),
        encrypted_citation=cite(cfg, "attachment.encrypted_archive"),
    )


def antivirus_from(cfg: Config) -> AntivirusSettings:
    return AntivirusSettings(
        enforce=cfg["antivirus.mode"] == "enforce",
        on_error_defer=cfg["antivirus.on_clamd_error"] == "defer",
        citation=cite(cfg, "av.infected"),
    )


def forwarding_from(cfg: Config, ours: Ours) -> ForwardSettings:
    return ForwardSettings(
        ours=ours,
        state_suffixes=_domains(cfg["forwarding.state_suffixes"]),
        state_allow=_domains(cfg["forwarding.state_allow"]),
        srs_domains=_domains(cfg["forwarding.srs_domains"]),
        mailbox_hosts=_networks(cfg["forwarding.mailbox_hosts"]),
        promote_medium=cfg["forwarding.promote_medium"],
        enforce=cfg["forwarding.mode"] == "enforce",
        citation=cite(cfg, "forward.external_auto"),
    )


def auth_rules_from(cfg: Config, ours: Ours) -> AuthRuleSettings:
    return AuthRuleSettings(
        local_domains=ours.local_domains,
        include_subdomains=ours.include_subdomains,
        citation=cite(cfg, "auth.local_spoof"),
        enforce=cfg["auth.mode"] == "enforce",
        dmarc_reject=cfg["auth.dmarc_reject"],
        spf_fail_reject=cfg["auth.spf_fail"] == "reject",
        dns_error_defer=cfg["auth.on_dns_error"] == "defer",
    )


@dataclass(frozen=True)
class ContentSettings:
    """What the engine needs for one message (milter and `mailwarden check`)."""

    limits: InspectLimits
    attachments: AttachmentSettings
    antivirus: AntivirusSettings
    scan: bool
    clamd_address: str
    scan_timeout_s: float
    budget_s: float
    forwarding: ForwardSettings


def content_from(cfg: Config, ours: Ours) -> ContentSettings:
    return ContentSettings(
        limits=inspect_from(cfg),
        attachments=attachments_from(cfg),
        antivirus=antivirus_from(cfg),
        scan=cfg["antivirus.enabled"],
        clamd_address=cfg["antivirus.clamd"],
        scan_timeout_s=cfg["antivirus.timeout"],
        budget_s=cfg["milter.content_budget"],
        forwarding=forwarding_from(cfg, ours),
    )


@dataclass(frozen=True)
class AuditSettings:
    """Where `mailwarden forwarding audit` looks for configured forwards."""

    postfix_config_dir: str  # "" = skip Postfix's maps
    forward_files: tuple[str, ...]  # globs
    sieve_scripts: tuple[str, ...]  # globs


def audit_from(cfg: Config) -> AuditSettings:
    return AuditSettings(
        postfix_config_dir=cfg["forwarding.postfix_config_dir"],
        forward_files=tuple(cfg["forwarding.forward_files"]),
        sieve_scripts=tuple(cfg["forwarding.sieve_scripts"]),
    )


@dataclass(frozen=True)
class Settings:
    """Everything the rules need, resolved once. Daemon plumbing (listen addresses,
    timeouts, Redis) stays with the daemon that owns it, read from the same Config."""

    ours: Ours
    rate: RateSettings
    content: ContentSettings  # inspection limits, attachments, antivirus, forwarding
    auth_rules: AuthRuleSettings
    audit: AuditSettings

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        ours = ours_from(cfg)
        return cls(
            ours=ours,
            rate=rate_from(cfg, ours),
            content=content_from(cfg, ours),
            auth_rules=auth_rules_from(cfg, ours),
            audit=audit_from(cfg),
        )
