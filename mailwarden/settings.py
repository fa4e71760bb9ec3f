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
from mailwarden.rules.accounts import AccountSettings
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
        strict_alignment=cfg["auth.alignment"] == "strict",
        subdomains_vouch_for_parent=cfg["auth.subdomains_vouch_for_parent"],
        lookalike_reject=cfg["auth.lookalike"] == "reject",
        unparsable_reject=cfg["auth.unparsable_from"] == "reject",
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
    max_scans: int = 8  # clamd scans in flight at once (engine/scanning.py)
    breaker_timeouts: int = 2  # consecutive timeouts that open the circuit breaker
    breaker_pause_s: float = 30.0
    policy_signatures: str = "require"  # "require" | "warn" | "off"
    refused_scan_s: float = 5.0  # clamd's short look at mail refused as uninspectable


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
        max_scans=cfg["antivirus.max_scans"],
        breaker_timeouts=cfg["antivirus.breaker_timeouts"],
        breaker_pause_s=cfg["antivirus.breaker_pause"],
        policy_signatures=cfg["antivirus.policy_signatures"],
        refused_scan_s=cfg["antivirus.refused_scan"],
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
class RedisSettings:
    url: str
    prefix: str
    timeout_s: float
    sentinels: tuple[str, ...]
    sentinel_service: str
    batching: bool
    replica_wait_s: float = 0.0  # WAIT for replicas after a new lock (redis.replica_wait)


@dataclass(frozen=True)
class PolicydSettings:
    listen: str  # Postfix notation, checked at load
    socket_mode: int
    on_redis_error_defer: bool
    answer_timeout_s: float
    idle_timeout_s: float
    request_timeout_s: float
    max_connections: int
    max_line_bytes: int
    max_attributes: int
    max_request_bytes: int
    lock_snapshot: str
    lock_refresh_s: float
    stats_interval_s: float
    shutdown_grace_s: float
    reservation_ttl_s: float
    lock_expire_s: float
    metrics_listen: str = ""  # inet:127.0.0.1:PORT, "" = off (metrics.py)


@dataclass(frozen=True)
class MilterSettings:
    listen: str
    socket_mode: int
    timeout_s: float
    spool_memory: int
    tmpdir: str | None
    stats_interval_s: float
    release_on_refusal: bool
    final_hop_daemon_name: str
    workers: int = 2  # worker processes (engine/workers.py); 0 = in-process
    worker_memory: int = 768 * 1024 * 1024  # RLIMIT_AS per worker
    worker_cpu_s: float = 30.0  # RLIMIT_CPU per message
    worker_timeout_s: float = 60.0  # wall time per message in a worker
    on_worker_failure: str = "defer"  # "defer" | "reject"
    shutdown_grace_s: float = 20.0
    metrics_listen: str = ""  # inet:127.0.0.1:PORT, "" = off (metrics.py)


@dataclass(frozen=True)
class NotifierSettings:
    """Lock notifications (notify/): where they go, who gets them, what they cite."""

    smtp: str  # inet:HOST:PORT of the local MTA
    sender_header: str  # From: (the envelope sender is always <>)
    admins: tuple[str, ...]
    notify_owner: bool
    templates: str  # directory with lock.txt, unlock.txt
    timeout_s: float
    retry_min_s: float
    retry_max_s: float
    claim_after_s: float
    consumer: str
    metrics_listen: str
    decision: str  # "QD 162/2025/QD-UBND"
    province: str
    contact: str  # lock.contact (the profile's unlock_contact unless set)
    rate_citation: str
    lock_citation: str
    manual_lock_citation: str
    unlock_citation: str


@dataclass(frozen=True)
class OpsSettings:
    """`mailwarden health` and `mailwarden report`."""

    backlog_warning: int
    backlog_critical: int
    timeout_s: float
    log_files: tuple[str, ...]
    top: int


def notifier_from(cfg: Config, ours: Ours) -> NotifierSettings:
    import socket

    p = cfg.profile
    return NotifierSettings(
        smtp=cfg["notifier.smtp"],
        sender_header=cfg["notifier.from"] or f"postmaster@{ours.local_domains[0]}",
        admins=tuple(cfg["notifier.admins"]),
        notify_owner=cfg["notifier.notify_owner"],
        templates=cfg["notifier.templates"],
        timeout_s=cfg["notifier.timeout"],
        retry_min_s=cfg["notifier.retry_min"],
        retry_max_s=max(cfg["notifier.retry_max"], cfg["notifier.retry_min"]),
        claim_after_s=cfg["notifier.claim_after"],
        consumer=cfg["notifier.consumer"] or socket.gethostname(),
        metrics_listen=cfg["notifier.metrics_listen"],
        decision=p.decision,
        province=p.province,
        contact=cfg["lock.contact"],
        rate_citation=cite(cfg, "ratelimit.external_recipients"),
        lock_citation=cite(cfg, "account.locked"),
        manual_lock_citation=p.cite(p.manual_lock_article),
        unlock_citation=p.cite(p.unlock_article) if p.unlock_article else "",
    )


def ops_from(cfg: Config) -> OpsSettings:
    return OpsSettings(
        backlog_warning=cfg["health.backlog_warning"],
        backlog_critical=max(cfg["health.backlog_critical"], cfg["health.backlog_warning"]),
        timeout_s=cfg["health.timeout"],
        log_files=tuple(cfg["report.log_files"]),
        top=cfg["report.top"],
    )


@dataclass(frozen=True)
class LoggingSettings:
    level: str
    syslog: bool
    facility: str
    socket: str
    log_accepts: bool


@dataclass(frozen=True)
class DnsSettings:
    nameservers: tuple[str, ...]
    timeout_s: float
    attempts: int
    cache_size: int
    max_ttl_s: float


@dataclass(frozen=True)
class AuthRunSettings:
    """Authentication plumbing (the rule's own settings are AuthRuleSettings)."""

    enabled: bool
    authserv_id: str  # "" = the host name
    spf_budget_s: float
    max_signatures: int
    max_message_bytes: int
    budget_s: float  # all authentication of one message (auth.budget)
    public_suffix_file: str
    dkim_keys: tuple[dict[str, str], ...]
    dns: DnsSettings


@dataclass(frozen=True)
class Settings:
    """Everything mailwarden runs with, resolved once from the merged config."""

    profile_name: str
    ours: Ours
    rate: RateSettings
    content: ContentSettings  # inspection limits, attachments, antivirus, forwarding
    auth_rules: AuthRuleSettings
    audit: AuditSettings
    auth: AuthRunSettings
    policyd: PolicydSettings
    milter: MilterSettings
    redis: RedisSettings
    logging: LoggingSettings
    on_internal_error: str  # "defer" | "accept", both daemons (failure.py)
    notifier: NotifierSettings
    ops: OpsSettings

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        ours = ours_from(cfg)
        return cls(
            profile_name=cfg.profile.name,
            ours=ours,
            rate=rate_from(cfg, ours),
            content=content_from(cfg, ours),
            auth_rules=auth_rules_from(cfg, ours),
            audit=audit_from(cfg),
            auth=AuthRunSettings(
                enabled=cfg["auth.enabled"],
                authserv_id=cfg["auth.authserv_id"],
                spf_budget_s=cfg["auth.spf_budget"],
                max_signatures=cfg["auth.max_signatures"],
                max_message_bytes=cfg["auth.max_message_bytes"],
                budget_s=cfg["auth.budget"],
                public_suffix_file=cfg["auth.public_suffix_file"],
                dkim_keys=tuple(cfg["dkim.keys"]),
                dns=DnsSettings(
                    nameservers=tuple(cfg["dns.nameservers"]),
                    timeout_s=cfg["dns.timeout"],
                    attempts=cfg["dns.attempts"],
                    cache_size=cfg["dns.cache_size"],
                    max_ttl_s=cfg["dns.max_ttl"],
                ),
            ),
            policyd=PolicydSettings(
                listen=cfg["policyd.listen"],
                socket_mode=int(cfg["policyd.socket_mode"], 8),
                on_redis_error_defer=cfg["policyd.on_redis_error"] == "defer",
                answer_timeout_s=cfg["policyd.answer_timeout"],
                idle_timeout_s=cfg["policyd.idle_timeout"],
                request_timeout_s=cfg["policyd.request_timeout"],
                max_connections=cfg["policyd.max_connections"],
                max_line_bytes=cfg["policyd.max_line_bytes"],
                max_attributes=cfg["policyd.max_attributes"],
                max_request_bytes=cfg["policyd.max_request_bytes"],
                lock_snapshot=cfg["policyd.lock_snapshot"],
                lock_refresh_s=cfg["policyd.lock_refresh"],
                stats_interval_s=cfg["policyd.stats_interval"],
                shutdown_grace_s=cfg["policyd.shutdown_grace"],
                reservation_ttl_s=cfg["ratelimit.reservation_ttl"],
                lock_expire_s=cfg["lock.expire_after"],
                metrics_listen=cfg["policyd.metrics_listen"],
            ),
            milter=MilterSettings(
                listen=cfg["milter.listen"],
                socket_mode=int(cfg["milter.socket_mode"], 8),
                timeout_s=cfg["milter.timeout"],
                spool_memory=cfg["milter.spool_memory"],
                tmpdir=cfg["milter.tmpdir"] or None,
                stats_interval_s=cfg["milter.stats_interval"],
                release_on_refusal=cfg["milter.release_on_refusal"],
                final_hop_daemon_name=cfg["forwarding.final_hop_daemon_name"],
                workers=cfg["milter.workers"],
                worker_memory=cfg["milter.worker_memory"],
                worker_cpu_s=cfg["milter.worker_cpu"],
                worker_timeout_s=cfg["milter.worker_timeout"],
                on_worker_failure=cfg["milter.on_worker_failure"],
                shutdown_grace_s=cfg["milter.shutdown_grace"],
                metrics_listen=cfg["milter.metrics_listen"],
            ),
            redis=RedisSettings(
                url=cfg["redis.url"],
                prefix=cfg["redis.key_prefix"],
                timeout_s=cfg["redis.timeout"],
                sentinels=tuple(cfg["redis.sentinels"]),
                sentinel_service=cfg["redis.sentinel_service"],
                batching=cfg["redis.batching"],
                replica_wait_s=cfg["redis.replica_wait"],
            ),
            logging=LoggingSettings(
                level=cfg["logging.level"],
                syslog=cfg["logging.syslog"],
                facility=cfg["logging.syslog_facility"],
                socket=cfg["logging.syslog_socket"],
                log_accepts=cfg["logging.log_accepts"],
            ),
            on_internal_error=cfg["failure.on_internal_error"],
            notifier=notifier_from(cfg, ours),
            ops=ops_from(cfg),
        )


# -- accounts and the auth policy daemon (issue 11; docs/accounts.md) -------------------
@dataclass(frozen=True)
class AuthpolicySettings:
    """The auth policy daemon's plumbing (the rules' own settings are AccountSettings)."""

    listen: str  # Postfix notation, checked at load
    socket_mode: int
    api_key: str  # "" = no shared secret
    api_header: str
    max_request_bytes: int
    request_timeout_s: float
    max_connections: int
    shutdown_grace_s: float


def accounts_from(cfg: Config, ours: Ours) -> AccountSettings:
    return AccountSettings(
        ours=ours,
        lock_refuses_login=cfg["accounts.lock_refuses_login"],
        failed_login_limit=cfg["accounts.failed_login_limit"],
        enforce=cfg["accounts.failed_login_mode"] == "enforce",
        distinct_passwords=cfg["accounts.failed_login_count"] == "distinct-passwords",
        failure_memory_s=cfg["accounts.failure_memory"],
        address_window_s=cfg["authpolicy.address_window"],
        address_free_failures=cfg["authpolicy.address_free_failures"],
        address_max_delay_s=cfg["authpolicy.address_max_delay"],
        address_max_accounts=cfg["authpolicy.address_max_accounts"],
        prefix_v4=cfg["authpolicy.address_prefix_v4"],
        prefix_v6=cfg["authpolicy.address_prefix_v6"],
        exempt_networks=_networks(cfg["authpolicy.exempt_networks"]),
        inactive_lock_months=cfg["accounts.inactive_lock_months"],
        inactive_remove_months=cfg["accounts.inactive_remove_months"],
        inactive_activity=cfg["accounts.inactive_activity"],
        inactive_auto_lock=cfg["accounts.inactive_auto_lock"],
        login_lock_citation=cite(cfg, "account.login_locked"),
        failed_login_citation=cite(cfg, "account.failed_logins"),
        inactive_citation=cite(cfg, "account.inactive"),
        inactive_remove_citation=cfg.profile.cite(cfg.profile.inactive_remove_article)
        if cfg.profile.inactive_remove_article else "",
        contact=cfg["lock.contact"],
    )


def authpolicy_from(cfg: Config) -> AuthpolicySettings:
    return AuthpolicySettings(
        listen=cfg["authpolicy.listen"],
        socket_mode=int(cfg["authpolicy.socket_mode"], 8),
        api_key=cfg["authpolicy.api_key"],
        api_header=cfg["authpolicy.api_header"],
        max_request_bytes=cfg["authpolicy.max_request_bytes"],
        request_timeout_s=cfg["authpolicy.request_timeout"],
        max_connections=cfg["authpolicy.max_connections"],
        shutdown_grace_s=cfg["authpolicy.shutdown_grace"],
    )
