"""Configuration: ONE schema table, checked at start, with the profile merged in.

Every key of conf/mailwarden.toml is declared once in SCHEMA below (type,
default, documentation, check). The annotated sample config and docs/config.md
are generated from it (`mailwarden config sample`), and a test fails if the
shipped files drift. Unknown keys and wrong types are fatal at start, reported
with the file and the key. Keys whose default is None take their value from
the regulation profile ("profile" origin).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailwarden.addresses import parse_listen
from mailwarden.profiles import COUNT_UNITS, DEFAULT_PROFILE, Profile, ProfileError, load_profile
from mailwarden.units import format_duration, format_size, parse_duration, parse_size

DEFAULT_CONFIG_PATH = Path("/etc/mailwarden/mailwarden.toml")


class ConfigError(ValueError):
    """A config problem, already phrased as `file: key: what is wrong`."""


Check = Callable[[Any], None]


@dataclass(frozen=True)
class Key:
    name: str  # "section.key"
    kind: str  # str | int | bool | duration | size | list | table
    default: Any
    doc: str
    check: Check | None = None
    example: str = ""  # shown commented out in the sample when default is None/empty
    # The Profile attribute that supplies the value when the file does not set it
    # (or sets it empty): the one place profile numbers are mapped to keys.
    profile: str = ""


def _choices(*allowed: str) -> Check:
    def check(v: Any) -> None:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(repr(a) for a in allowed)}")

    return check


def _positive(v: Any) -> None:
    if v <= 0:
        raise ValueError("must be greater than 0")


def _listen(v: Any) -> None:
    parse_listen(v)


def _socket_mode(v: Any) -> None:
    """An octal file mode such as "0660" (it is parsed with int(v, 8) at start)."""
    if not (isinstance(v, str) and 3 <= len(v) <= 4 and all(c in "01234567" for c in v)):
        raise ValueError(f"{v!r}: expected an octal mode like \"0660\"")
    if int(v, 8) > 0o777:
        raise ValueError(f"{v!r}: only permission bits (at most 0777)")


def _networks(v: Any) -> None:
    for item in v:
        if not isinstance(item, str):
            raise ValueError("must be a list of strings")
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as e:
            raise ValueError(f"{item!r} is not a network: {e}") from None


def _strings(v: Any) -> None:
    if not all(isinstance(x, str) and x for x in v):
        raise ValueError("must be a list of non-empty strings")


def _host_ports(v: Any) -> None:
    _strings(v)
    for x in v:
        host, sep, port = x.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'{x!r}: must be "host:port"')


def _redis_url(v: Any) -> None:
    if not (v.startswith(("redis://", "rediss://", "unix://"))):
        raise ValueError("must be a redis://host:port/db, rediss://... or unix:///path URL")


def _auth_check(name: str) -> Check:
    """Validators that live with the auth code (imported lazily: dnspython, dkimpy)."""

    def check(v: Any) -> None:
        from mailwarden.auth import authres, dkim_sign, dns

        if name == "nameservers":
            dns.check_nameservers(v)
        elif name == "authserv_id" and v:
            authres.check_authserv_id(v)
        elif name == "dkim_keys":
            dkim_sign.check_key_tables(v)

    return check


def _metrics_listen(v: Any) -> None:
    """Empty (off) or inet:HOST:PORT on loopback: the metrics say who is locked."""
    if v == "":
        return
    where = parse_listen(v)
    if where.family != "inet":
        raise ValueError(f"{v!r}: metrics are served over HTTP: inet:127.0.0.1:PORT")
    try:
        loopback = ipaddress.ip_address(where.host).is_loopback
    except ValueError:
        loopback = where.host == "localhost"
    if not loopback:
        raise ValueError(f"{v!r}: a loopback address (scrape through a proxy or an SSH "
                         "tunnel, or run Prometheus on this host)")


def _addresses(v: Any) -> None:
    for item in v:
        if not isinstance(item, str) or "@" not in item or any(c in item for c in "<>, \r\n"):
            raise ValueError(f"{item!r}: expected a bare mail address like ops@example.org")


def _prefix(v: Any, most: int) -> None:
    if not 0 < v <= most:
        raise ValueError(f"must be a prefix length 1..{most}")


def _not_negative(v: Any) -> None:
    if v < 0:
        raise ValueError("must be 0 or more")


def _overrides(v: Any) -> None:
    for account, entry in v.items():
        if "@" not in account:
            raise ValueError(f"{account!r}: keys are mail addresses (SASL logins)")
        if not isinstance(entry, dict) or not entry:
            raise ValueError(f"{account!r}: must be a table like {{ limit = 2000 }}")
        for k, val in entry.items():
            if k == "exempt" and isinstance(val, bool):
                continue
            if k == "limit" and isinstance(val, int) and not isinstance(val, bool) and val > 0:
                continue
            raise ValueError(f"{account!r}: {k} = {val!r} (allowed: limit = N > 0, exempt = true)")


SCHEMA: tuple[Key, ...] = (
    # -- profile ------------------------------------------------------------
    Key("profile.name", "str", DEFAULT_PROFILE,
        "Regulation profile: a file conf/profiles/NAME.toml with the numbers and articles."),
    Key("profile.directory", "str", "",
        "Where profiles live; empty = the shipped ones (/etc/mailwarden/profiles).",
        example='"/etc/mailwarden/profiles"'),
    # -- domains ------------------------------------------------------------
    Key("domains.local", "list", None,
        "The province's own domains (internal); empty = the profile's local_domains.",
        _strings, example='["ninhbinh.gov.vn"]', profile="local_domains"),
    Key("domains.include_subdomains", "bool", True,
        "Count sub.ninhbinh.gov.vn as local too (agency subdomains)."),
    Key("domains.recipient_delimiter", "str", "+",
        "Postfix recipient_delimiter: user+tag@ is the same mailbox as user@; empty = off."),
    Key("domains.trusted_networks", "list", ["127.0.0.0/8", "::1/128"],
        "Our own hosts (webmail, mailbox servers, the MTA itself). Mail is ours when the "
        "client logged in (SASL), or is in this list, or Postfix agreed to relay it to a "
        "domain outside domains.local and domains.relay_domains (it only relays for clients "
        "it trusts). Ours: counted against the sender's limit, DKIM-signed, judged by the "
        "outbound forwarding rule. (Was policyd.trusted_networks.)", _networks),
    Key("domains.relay_domains", "list", [],
        "Other domains this Postfix accepts mail for from anyone (its relay_domains or "
        "backup-MX domains besides domains.local): mail to them does not make the client "
        "ours.", _strings, example='["partner.gov.vn"]'),
    # -- ratelimit ----------------------------------------------------------
    Key("ratelimit.enabled", "bool", None, "Enforce the outbound external-recipient limit; "
        "unset = the profile's choice.", profile="ratelimit_enabled"),
    Key("ratelimit.mode", "str", "enforce",
        "enforce = refuse and lock; monitor = log what would be refused, refuse nothing.",
        _choices("enforce", "monitor")),
    Key("ratelimit.limit", "int", None,
        "External recipients (or messages) allowed per window; unset = the profile's.",
        _positive, example="250", profile="ratelimit_limit"),
    Key("ratelimit.window", "duration", None,
        "Length of the sliding window; unset = the profile's.", _positive, example='"10m"',
        profile="ratelimit_window_s"),
    Key("ratelimit.count", "str", None,
        "What the limit counts: recipients (as Microsoft 365 does) or messages.",
        _choices(*COUNT_UNITS), example='"recipients"', profile="ratelimit_count"),
    Key("ratelimit.reservation_ttl", "duration", 1800.0,
        "How long a recipient reserved at RCPT waits for END-OF-MESSAGE before it lapses "
        "uncounted. Longer than the slowest upload Postfix allows.", _positive),
    Key("ratelimit.overrides", "table", {},
        'Per-account exceptions: "bulk@ninhbinh.gov.vn" = { limit = 2000 } or '
        "{ exempt = true }.", _overrides),
    # -- lock ---------------------------------------------------------------
    Key("lock.expire_after", "duration", 0.0,
        "Lift rate locks by themselves after this long; 0 = never (Dieu 7.3: an operator "
        "unlocks)."),
    Key("lock.contact", "str", None,
        "Whom a locked user should contact, in the refusal text; empty = the profile's.",
        example='"helpdesk@ninhbinh.gov.vn, 0229 3871 234"', profile="unlock_contact"),
    # -- accounts (logins and inactivity; docs/accounts.md) ----------------------
    Key("accounts.lock_refuses_login", "bool", None,
        "Every lock (rate, manual, failed-logins, inactive) also refuses the owner's logins "
        "through mailwarden authpolicy (Dieu 7.1); mail to the mailbox is still delivered. "
        "Unset = the profile's.", profile="lock_refuses_login"),
    Key("accounts.failed_login_limit", "int", None,
        "Consecutive failed logins that lock the account (162/2025 Dieu 7.2.a: 12); 0 = "
        "none. Unset = the profile's.", _not_negative, example="12",
        profile="failed_login_limit"),
    Key("accounts.failed_login_mode", "str", "enforce",
        "enforce = lock at the limit; monitor = log what would be locked, lock nothing.",
        _choices("enforce", "monitor")),
    Key("accounts.failed_login_count", "str", "distinct-passwords",
        "What one failure is: distinct-passwords = a wrong password repeated (a phone with "
        "an old password) counts once, by Dovecot's truncated, nonced hash of it; attempts "
        "= every failed attempt. Without a hash from Dovecot every attempt counts.",
        _choices("distinct-passwords", "attempts")),
    Key("accounts.failure_memory", "duration", 30 * 86400.0,
        "Consecutive failures are forgotten this long after the last one (a success "
        "forgets them at once).", _positive),
    Key("accounts.inactive_lock_months", "int", None,
        "Months without use after which an account is listed by `mailwarden inactive` (and "
        "locked with --lock); 0 = none. Unset = the profile's.", _not_negative,
        example="6", profile="inactive_lock_months"),
    Key("accounts.inactive_remove_months", "int", None,
        "Months without use after which the decision revokes or deletes the mailbox (listed, "
        "never done by mailwarden); 0 = none. Unset = the profile's.", _not_negative,
        example="12", profile="inactive_remove_months"),
    Key("accounts.inactive_activity", "str", None,
        "What counts as use: login (28/2020 Dieu 7.1) or login-or-send. Unset = the "
        "profile's.", _choices("login", "login-or-send"), example='"login-or-send"',
        profile="inactive_activity"),
    Key("accounts.inactive_auto_lock", "bool", False,
        "`mailwarden inactive --scheduled` (the monthly timer) locks what it lists; false = "
        "it only lists, an operator locks with --lock."),
    # -- authpolicy (Dovecot's auth policy server; docs/accounts.md) ---------------
    Key("authpolicy.listen", "str", "inet:127.0.0.1:10033",
        "Where the auth policy daemon listens for Dovecot (auth_policy_server_url), in "
        "Postfix notation: inet:HOST:PORT or unix:/PATH.", _listen),
    Key("authpolicy.socket_mode", "str", "0660", "File mode of a unix: listen socket.",
        _socket_mode),
    Key("authpolicy.api_key", "str", "",
        "Shared secret Dovecot sends in authpolicy.api_header (auth_policy_server_api_header)"
        "; empty = none (loopback or a unix socket only).", example='"change-me"'),
    Key("authpolicy.api_header", "str", "X-API-Key",
        "The request header that carries authpolicy.api_key."),
    Key("authpolicy.max_request_bytes", "size", 16 * 1024,
        "Largest request body accepted (Dovecot's are a few hundred bytes).", _positive),
    Key("authpolicy.request_timeout", "duration", 1.5,
        "Time to read a request and answer it, Redis included; Dovecot waits "
        "auth_policy_server_timeout_msecs (2s by default).", _positive),
    Key("authpolicy.max_connections", "int", 256,
        "Concurrent connections; more are refused at once.", _positive),
    Key("authpolicy.address_window", "duration", 3600.0,
        "Sliding window of the per-address counts below.", _positive),
    Key("authpolicy.address_free_failures", "int", 3,
        "Failed logins from one address in the window before its logins are delayed.",
        _not_negative),
    Key("authpolicy.address_max_delay", "duration", 15.0,
        "Longest delay Dovecot is told to impose on a login from a failing address (it "
        "doubles from 1s with each failure past address_free_failures).", _positive),
    Key("authpolicy.address_max_accounts", "int", 10,
        "Distinct accounts one address may fail against in the window; past it the address "
        "is refused before authentication, and its failures no longer count towards any "
        "account's lock.", _positive),
    Key("authpolicy.address_prefix_v4", "int", 32,
        "IPv4 addresses are counted per /N.", lambda v: _prefix(v, 32)),
    Key("authpolicy.address_prefix_v6", "int", 64,
        "IPv6 addresses are counted per /N (one host usually holds a whole /64).",
        lambda v: _prefix(v, 128)),
    Key("authpolicy.exempt_networks", "list", [],
        "Clients never delayed or refused for their address (a webmail that does not pass "
        "the user's address to Dovecot); their failures still count per account.",
        _networks, example='["10.0.0.30/32"]'),
    Key("authpolicy.shutdown_grace", "duration", 5.0,
        "On SIGTERM, how long requests in flight may take to finish.", _positive),
    # -- policyd ------------------------------------------------------------
    Key("policyd.listen", "str", "inet:127.0.0.1:10031",
        "Where the policy daemon listens, in Postfix notation: inet:HOST:PORT or unix:/PATH.",
        _listen),
    Key("policyd.socket_mode", "str", "0660", "File mode of a unix: listen socket.",
        _socket_mode),
    Key("policyd.on_redis_error", "str", "accept",
        "Redis unreachable: accept (DUNNO, logged loudly; locks still enforced from the "
        "local copy) or defer (451 4.7.1).", _choices("accept", "defer")),
    Key("policyd.answer_timeout", "duration", 2.0,
        "Answer within this long, whatever Redis does (Postfix waits 100s).", _positive),
    Key("policyd.idle_timeout", "duration", 330.0,
        "Close connections idle this long (Postfix's smtpd_policy_service_max_idle is 300s).",
        _positive),
    Key("policyd.max_connections", "int", 1000,
        "Concurrent connections. At the cap a newcomer takes the place of the connection "
        "stalled longest in an unfinished request, else of the longest idle one; it is "
        "refused only when every connection has a request in flight.", _positive),
    Key("policyd.max_line_bytes", "int", 8192,
        "Longest attribute line accepted; longer is a malformed request.", _positive),
    Key("policyd.max_attributes", "int", 100,
        "Most attributes in one request; more is a malformed request.", _positive),
    Key("policyd.max_request_bytes", "size", 64 * 1024,
        "Longest request accepted, finished or not; longer is a malformed request. Bounds "
        "the memory an unfinished request holds: max_connections times this.", _positive),
    Key("policyd.request_timeout", "duration", 10.0,
        "Time from a request's first byte to its empty line (Postfix writes a request at "
        "once); slower is a malformed request: logged, connection closed. Well under "
        "Postfix's smtpd_policy_service_timeout (100s).", _positive),
    Key("policyd.lock_snapshot", "str", "/var/lib/mailwarden/locks.json",
        "File keeping a durable copy of the lock list (and the Redis epoch): locks hold when "
        "the daemon restarts while Redis is down, and are put back when Redis loses its data "
        "(docs/policyd.md, \"Durable locks\"); empty = memory only."),
    Key("policyd.lock_refresh", "duration", 5.0,
        "How often the in-process copy of the lock list is refreshed from Redis.", _positive),
    Key("policyd.stats_interval", "duration", 600.0,
        "Period of the statistics log line; 0 = never."),
    Key("policyd.shutdown_grace", "duration", 10.0,
        "On SIGTERM, how long requests in flight may take to finish (the systemd unit's "
        "TimeoutStopSec is above it).", _positive),
    Key("policyd.metrics_listen", "str", "",
        "Prometheus metrics over HTTP (GET /metrics) at inet:127.0.0.1:PORT; empty = off "
        "(docs/operations.md).", _metrics_listen, example='"inet:127.0.0.1:9431"'),
    # -- milter -------------------------------------------------------------
    Key("milter.listen", "str", "inet:127.0.0.1:8899",
        "Where the milter listens, in Postfix notation (the string for smtpd_milters): "
        "inet:HOST:PORT or unix:/PATH.", _listen),
    Key("milter.socket_mode", "str", "0660", "File mode of a unix: listen socket.",
        _socket_mode),
    Key("milter.timeout", "duration", 240.0,
        "libmilter's I/O timeout with Postfix (Postfix's milter_content_timeout is 300s).",
        _positive),
    Key("milter.spool_memory", "size", 1024 * 1024,
        "Messages up to this size are held in memory, bigger ones in a temp file.", _positive),
    Key("milter.tmpdir", "str", "", "Where bigger messages are spooled; empty = $TMPDIR or "
        "/tmp (the unit's PrivateTmp).", example='"/var/spool/mailwarden"'),
    Key("milter.content_budget", "duration", 120.0,
        "Total time for inspecting and scanning one message; past it the message is "
        "deferred (451), never passed unchecked.", _positive),
    Key("milter.stats_interval", "duration", 600.0,
        "Period of the statistics log line; 0 = never."),
    Key("milter.workers", "int", 2,
        "Worker processes that parse messages (inspection, authentication), isolated from "
        "the daemon: one that dies or goes over its limits costs one message a 451 and is "
        "replaced. 0 = parse in the daemon's own process (no isolation; for debugging).",
        _not_negative),
    Key("milter.worker_memory", "size", 768 * 1024 * 1024,
        "Address-space cap (RLIMIT_AS) of each worker process.", _positive),
    Key("milter.worker_cpu", "duration", 30.0,
        "CPU time one message may use in a worker (RLIMIT_CPU, set per message).", _positive),
    Key("milter.worker_timeout", "duration", 60.0,
        "Wall time for one message's parsing in a worker, waiting for a free worker "
        "included; past it the worker is killed and replaced.", _positive),
    Key("milter.on_worker_failure", "str", "defer",
        "A worker that died, ran out of memory, CPU or time on a message: defer (451 4.7.1, "
        "our own resource ran out) or reject (550, as attachment.uninspectable).",
        _choices("defer", "reject")),
    Key("milter.shutdown_grace", "duration", 20.0,
        "On SIGTERM, how long messages in flight may take to finish before they are "
        "answered 451 (the systemd unit's TimeoutStopSec is above it).", _positive),
    Key("milter.release_on_refusal", "bool", True,
        "When the milter refuses a message of one of our senders at end of data, uncount "
        "it from the rate window (needs [redis]; see docs/policyd.md)."),
    Key("milter.metrics_listen", "str", "",
        "Prometheus metrics over HTTP (GET /metrics) at inet:127.0.0.1:PORT, summed over "
        "the worker processes; empty = off (docs/operations.md).", _metrics_listen,
        example='"inet:127.0.0.1:9432"'),
    # -- attachments --------------------------------------------------------
    Key("attachments.mode", "str", "enforce",
        "enforce = refuse; monitor = log what would be refused, accept.",
        _choices("enforce", "monitor")),
    Key("attachments.max_bytes", "size", None,
        "Cap on the decoded size of all attachments of a message; unset = the profile's.",
        _positive, example='"30MB"', profile="attachments_max_bytes"),
    Key("attachments.size_overhead", "size", 4 * 1024 * 1024,
        "Room for the text body and headers on top of the base64-encoded cap, for the "
        "MAIL FROM SIZE= check and conf/postfix's message_size_limit.", _positive),
    Key("attachments.executable_extensions", "list", None,
        "File name extensions refused as executables; unset = the built-in list "
        "(docs/inspection.md).", _strings, example='[".exe", ".com", ".dll", ".scr"]'),
    Key("attachments.extra_executable_extensions", "list", [".net"],
        "Added to the list above (28/2020 Dieu 2.7 names .exe, .com, .dll, .net).",
        _strings),
    Key("attachments.encrypted_documents", "str", "log",
        "Password-protected Office documents and PDFs (not archives): log and accept, "
        "or reject.", _choices("log", "reject")),
    Key("attachments.uninspectable", "str", "reject",
        "An archive too deep, too big, too slow or corrupt to inspect (zip bombs): reject "
        "(550), defer (451) or accept (logged).", _choices("reject", "defer", "accept")),
    Key("attachments.max_archive_depth", "int", 3, "Archive nesting levels opened.",
        _positive),
    Key("attachments.max_archive_entries", "int", 10_000,
        "Archive entries listed per message.", _positive),
    Key("attachments.max_expanded_bytes", "size", 200 * 1024 * 1024,
        "Uncompressed bytes (declared, and inflated while sniffing) per message.", _positive),
    Key("attachments.max_parts", "int", 1000, "MIME parts per message.", _positive),
    # -- antivirus ----------------------------------------------------------
    Key("antivirus.enabled", "bool", True, "Have clamd scan every message."),
    Key("antivirus.mode", "str", "enforce",
        "enforce = refuse infected mail; monitor = log, accept.", _choices("enforce", "monitor")),
    Key("antivirus.clamd", "str", "unix:/run/clamav/clamd.ctl",
        "clamd's socket: unix:/PATH or inet:HOST:PORT. clamd's StreamMaxLength must be "
        "above the raw message size (docs/milter.md).", _listen),
    Key("antivirus.timeout", "duration", 60.0, "Time for one message's scan, all parts.",
        _positive),
    Key("antivirus.refused_scan", "duration", 5.0,
        "When inspection refused a message only as uninspectable, clamd still gets this "
        "long to name a more specific reason (an executable, a virus); its timeout or error "
        "then changes nothing. 0 = do not ask clamd about refused mail.", _not_negative),
    Key("antivirus.max_scans", "int", 8,
        "clamd scans in flight at once; more wait (within antivirus.timeout).", _positive),
    Key("antivirus.breaker_timeouts", "int", 2,
        "Consecutive scan timeouts after which clamd is not called for antivirus."
        "breaker_pause: messages get on_clamd_error at once (logged).", _positive),
    Key("antivirus.breaker_pause", "duration", 30.0,
        "How long clamd is left alone after breaker_timeouts; then one trial scan.",
        _positive),
    Key("antivirus.policy_signatures", "str", "require",
        "Check at start (and in config check) that clamd has conf/clamav/mailwarden-policy."
        "ndb loaded: require = fatal when clamd answers without it, warn = log it, off.",
        _choices("require", "warn", "off")),
    Key("antivirus.on_clamd_error", "str", "defer",
        "clamd down, timing out or failing: defer (451 4.7.1, nothing unscanned passes) or "
        "accept (logged loudly).", _choices("defer", "accept")),
    # -- forwarding ---------------------------------------------------------
    Key("forwarding.mode", "str", "enforce",
        "Automatic forwarding to/from non-state mailboxes (Dieu 4.5): enforce = refuse on "
        "high-confidence signals; monitor = log only.", _choices("enforce", "monitor")),
    Key("forwarding.promote_medium", "bool", False,
        "Refuse on medium-confidence signals too (foreign SRS, Delivered-To ...)."),
    Key("forwarding.state_suffixes", "list", ["gov.vn"],
        "Domains issued by state agencies (label boundaries: hanoigov.vn is private).",
        _strings),
    Key("forwarding.state_allow", "list", [],
        "More state-issued domains, e.g. chinhphu.vn.", _strings, example='["chinhphu.vn"]'),
    Key("forwarding.srs_domains", "list", [],
        "Domains our SRS rewrites into; empty = domains.local.", _strings),
    Key("forwarding.mailbox_hosts", "list", [],
        "Our mailbox servers (Dovecot/Zimbra submission), for the structural signal: "
        "mail from outside re-sent to a private address by them is a forward.", _networks,
        example='["10.0.0.21/32"]'),
    Key("forwarding.final_hop_daemon_name", "str", "mailwarden-finalhop",
        "The {daemon_name} of the final-hop smtpd (conf/postfix/final-hop/): there only "
        "the forwarding rule runs, after address rewriting."),
    Key("forwarding.postfix_config_dir", "str", "/etc/postfix",
        "What `mailwarden forwarding audit` reads with postconf; empty = skip."),
    Key("forwarding.forward_files", "list", ["/home/*/.forward"],
        "`forwarding audit`: .forward files (globs).", _strings),
    Key("forwarding.sieve_scripts", "list", ["/home/*/sieve", "/home/*/.dovecot.sieve"],
        "`forwarding audit`: Sieve scripts or directories of them (globs).", _strings),
    # -- dns ----------------------------------------------------------------
    Key("dns.nameservers", "list", [],
        'Resolvers for SPF/DKIM/DMARC: "IP", "IP:PORT", "[IPv6]:PORT"; empty = '
        "/etc/resolv.conf.", _auth_check("nameservers"), example='["127.0.0.1"]'),
    Key("dns.timeout", "duration", 2.0,
        "One query to one nameserver; running out is a temperror (never a 5xx).", _positive),
    Key("dns.attempts", "int", 2, "Tries per nameserver before a temperror.", _positive),
    Key("dns.cache_size", "int", 10_000, "Answers cached by TTL (LRU); 0 = no cache.",
        _not_negative),
    Key("dns.max_ttl", "duration", 3600.0, "Longest time an answer is cached.", _positive),
    # -- auth ---------------------------------------------------------------
    Key("auth.enabled", "bool", True,
        "Check inbound mail (SPF, DKIM, DMARC), add Authentication-Results, refuse spoofing "
        "of our own domains (Dieu 10.2.d)."),
    Key("auth.authserv_id", "str", "",
        "Our authserv-id in Authentication-Results; empty = the host name.",
        _auth_check("authserv_id"), example='"mail.ninhbinh.gov.vn"'),
    Key("auth.mode", "str", "enforce", "enforce or monitor (log what would be refused).",
        _choices("enforce", "monitor")),
    Key("auth.spf_fail", "str", "record",
        "SPF fail of a foreign domain: record (forwarders break SPF) or reject.",
        _choices("record", "reject")),
    Key("auth.dmarc_reject", "bool", False,
        "Honour DMARC p=reject of foreign domains with a 550; false = logged only."),
    Key("auth.on_dns_error", "str", "defer",
        "A DNS temperror in a check that could refuse: defer (451 4.7.1) or accept (logged).",
        _choices("defer", "accept")),
    Key("auth.spf_budget", "duration", 20.0, "Total time for one SPF evaluation.", _positive),
    Key("auth.max_signatures", "int", 10, "DKIM signatures verified per message.", _positive),
    Key("auth.max_message_bytes", "size", 16 * 1024 * 1024,
        "DKIM signs and verifies whole messages in memory (~3x their size); bigger messages "
        "are sent unsigned, and checked on their header and envelope only (no DKIM pass).",
        _positive),
    Key("auth.budget", "duration", 25.0,
        "Time for all authentication of one message (SPF, DKIM, DMARC); running out is a "
        "451 (auth.timeout).", _positive),
    Key("auth.alignment", "str", "relaxed",
        "Who vouches for our domain: strict (the same domain) or relaxed (also its parent "
        "domains within our local domain).", _choices("relaxed", "strict")),
    Key("auth.subdomains_vouch_for_parent", "bool", False,
        "With relaxed alignment, let an SPF/DKIM pass of a subdomain vouch for its parent "
        "and siblings (one lax subdomain then lets anyone spoof the province)."),
    Key("auth.lookalike", "str", "reject",
        "A sender domain confusable with ours: reject (550) or mark (header + log).",
        _choices("reject", "mark")),
    Key("auth.unparsable_from", "str", "reject",
        "A From:/Sender: that is not exactly one address: reject (550) or record (log).",
        _choices("reject", "record")),
    Key("auth.public_suffix_file", "str", "",
        "Public suffix list for DMARC; empty = Debian's publicsuffix package if installed, "
        "else a small built-in list."),
    # -- dkim ---------------------------------------------------------------
    Key("dkim.keys", "list", [],
        "[[dkim.keys]] tables: domain, selector, key_file, optional algorithm "
        '("rsa-sha256" or "ed25519-sha256"); create keys with `mailwarden dkim keygen`.',
        _auth_check("dkim_keys"),
        example='[{ domain = "ninhbinh.gov.vn", selector = "mail2026", '
                'key_file = "/etc/mailwarden/dkim/ninhbinh.gov.vn.mail2026.key" }]'),
    # -- redis --------------------------------------------------------------
    Key("redis.url", "str", "redis://127.0.0.1:6379/0",
        "Redis holding counters and locks: redis://, rediss:// or unix:///path?db=0.",
        _redis_url),
    Key("redis.sentinels", "list", [],
        'Redis Sentinel addresses ["10.0.0.1:26379", ...]; when set, redis.url only gives '
        "the db and password and redis.sentinel_service names the master.", _host_ports),
    Key("redis.sentinel_service", "str", "mymaster",
        "Sentinel master name (the name in the sentinels' `sentinel monitor NAME ...`); "
        "`redis.service_name` is accepted as another name for it (docs/deployment.md)."),
    Key("redis.timeout", "duration", 0.5,
        "Socket timeout of one Redis call (connect and read).", _positive),
    Key("redis.key_prefix", "str", "mw", "Prefix of every key mailwarden writes."),
    Key("redis.batching", "bool", True,
        "Send script calls that arrive together from different connections in one "
        "pipeline (benchmarks/policyd.md); false = one round trip per call."),
    Key("redis.replica_wait", "duration", 0.2,
        "After a new lock, wait this long at most for every connected replica to have it "
        "(WAIT), so a failover keeps it; capped at 0.8 x redis.timeout; 0 = never wait.",
        _not_negative),
    # -- notifier -----------------------------------------------------------
    Key("notifier.smtp", "str", "inet:127.0.0.1:25",
        "The local MTA the lock notifications are handed to (`mailwarden notifier`), "
        "inet:HOST:PORT. The envelope sender is the null sender <>, which no lock can "
        "block and which never bounces back.", _listen),
    Key("notifier.from", "str", "",
        "The From: header of notifications; empty = postmaster@ the first local domain.",
        example='"postmaster@ninhbinh.gov.vn"'),
    Key("notifier.admins", "list", [],
        "Administrators who get every lock notification (and the daily report).",
        _addresses, example='["quantri@ninhbinh.gov.vn"]'),
    Key("notifier.notify_owner", "bool", True,
        "Also mail the locked account itself (at lock and at unlock)."),
    Key("notifier.templates", "str", "",
        "Directory with lock.txt and unlock.txt; empty = the shipped ones "
        "(/etc/mailwarden/notify).", example='"/etc/mailwarden/notify"'),
    Key("notifier.timeout", "duration", 30.0, "One SMTP conversation with notifier.smtp.",
        _positive),
    Key("notifier.retry_min", "duration", 10.0,
        "First wait after a failed send; doubled per failure up to notifier.retry_max. "
        "Events stay pending in the audit stream's consumer group until sent.", _positive),
    Key("notifier.retry_max", "duration", 600.0, "Longest wait between two tries.",
        _positive),
    Key("notifier.claim_after", "duration", 300.0,
        "An event another notifier took and has not confirmed for this long (it died) is "
        "taken over.", _positive),
    Key("notifier.consumer", "str", "",
        "This notifier's name in the consumer group; empty = the host name (several "
        "hosts: each its own)."),
    Key("notifier.metrics_listen", "str", "",
        "Prometheus metrics of the notifier at inet:127.0.0.1:PORT; empty = off.",
        _metrics_listen, example='"inet:127.0.0.1:9433"'),
    # -- health -------------------------------------------------------------
    Key("health.backlog_warning", "int", 5,
        "`mailwarden health`: lock events waiting for notification at which it warns.",
        _positive),
    Key("health.backlog_critical", "int", 50,
        "`mailwarden health`: ... at which it is critical.", _positive),
    Key("health.timeout", "duration", 5.0, "Each check's time limit.", _positive),
    # -- report -------------------------------------------------------------
    Key("report.log_files", "list", ["/var/log/mail.log"],
        "Mail logs `mailwarden report` reads decision lines from (plain or .gz); `--log` "
        "overrides (`-` = standard input, e.g. from journalctl).", _strings),
    Key("report.top", "int", 10, "Senders and recipients listed in the report's tops.",
        _positive),
    # -- logging ------------------------------------------------------------
    Key("logging.level", "str", "info", "debug, info, warning or error.",
        _choices("debug", "info", "warning", "error")),
    Key("logging.syslog", "bool", False,
        "Log to syslog (facility below) instead of stderr/journald."),
    Key("logging.syslog_facility", "str", "mail", "Syslog facility.",
        _choices("mail", "daemon", "local0", "local1", "local2", "local3", "local4",
                 "local5", "local6", "local7")),
    Key("logging.syslog_socket", "str", "/dev/log", "Syslog socket path."),
    Key("logging.log_accepts", "bool", False,
        "Also log one line per accepted request/message at info (else debug)."),
    # -- failure ------------------------------------------------------------
    Key("failure.on_internal_error", "str", "defer",
        "A bug (an unexpected exception) while deciding, in either daemon: defer (451 4.7.1 "
        "from the policy daemon, tempfail from the milter; rule internal.error) or accept "
        "(the mail goes through unchecked, logged at error as accept-unchecked).",
        _choices("defer", "accept")),
)

SCHEMA_BY_NAME = {k.name: k for k in SCHEMA}


def _coerce(key: Key, raw: Any) -> Any:
    """Check the TOML value's type and turn units into numbers."""
    kind = key.kind
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ValueError("must be true or false (a TOML boolean, not a string)")
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError("must be an integer")
        return raw
    if kind == "str":
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        return raw
    if kind == "duration":
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise ValueError('must be a duration like "10m" or "30s"')
        return parse_duration(raw)
    if kind == "size":
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise ValueError('must be a size like "30MB"')
        return parse_size(raw)
    if kind == "list":
        if not isinstance(raw, list):
            raise ValueError("must be a list")
        return list(raw)
    if kind == "table":
        if not isinstance(raw, dict):
            raise ValueError("must be a table")
        return dict(raw)
    raise AssertionError(f"schema kind {kind}")  # pragma: no cover


def _flatten(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """TOML document -> {"section.key": value}; table-valued keys stay whole."""
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {section}: expected a [{section}] table")
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    return flat


@dataclass(frozen=True)
class Config:
    values: dict[str, Any]
    origins: dict[str, str]  # key -> "default" | "profile" | config file path
    profile: Profile
    path: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def local_domains(self) -> tuple[str, ...]:
        return tuple(self.values["domains.local"])

    def citation(self, article: str) -> str:
        return self.profile.cite(article)


def _profile_value(key: Key, profile: Profile) -> Any:
    value = getattr(profile, key.profile)
    return list(value) if isinstance(value, tuple) else value


# Keys that moved: the old name still works (config check says where it went).
RENAMED = {"policyd.trusted_networks": "domains.trusted_networks",
           # Not a move: issue 12's name for the Sentinel master, kept as an alias.
           "redis.service_name": "redis.sentinel_service"}


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read, check and merge: schema defaults < profile < file < `overrides`."""
    where = str(path) if path else "<defaults>"
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except PermissionError:
            raise ConfigError(f"{where}: permission denied") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: not valid TOML: {e}") from None
    given = _flatten(doc, where)
    if overrides:
        given.update(overrides)

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    renamed_from: dict[str, str] = {}
    for old, new in RENAMED.items():
        if old in given:
            if new in given:
                raise ConfigError(f"{where}: {old}: renamed to {new}; set only {new}")
            given[new] = given.pop(old)
            renamed_from[new] = old
    for name, raw in given.items():
        key = SCHEMA_BY_NAME.get(name)
        if key is None:
            section = name.split(".")[0]
            known = sorted(k.name for k in SCHEMA if k.name.startswith(section + "."))
            hint = f" (known in [{section}]: {', '.join(known)})" if known else ""
            raise ConfigError(f"{where}: {name}: unknown key{hint}")
        try:
            value = _coerce(key, raw)
            if key.check is not None:
                key.check(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {name}: {e}") from None
        values[name] = value
        origins[name] = where if overrides is None or name not in overrides else "override"

    profile_dir = values.get("profile.directory") or None
    try:
        profile = load_profile(values.get("profile.name", DEFAULT_PROFILE),
                               Path(profile_dir) if profile_dir else None)
    except ProfileError as e:
        raise ConfigError(f"{where}: profile.name: {e}") from None

    for key in SCHEMA:
        if key.profile and values.get(key.name) in (None, "", []):
            values[key.name] = _profile_value(key, profile)
            origins[key.name] = f"profile {profile.name}"
        elif key.name not in values:
            values[key.name] = key.default
            origins[key.name] = "default" if key.default is not None else "built-in"
    for new, old in renamed_from.items():
        origins[new] += f" (as {old}, renamed)"
    values["domains.local"] = [d.lower().rstrip(".") for d in values["domains.local"]]
    return Config(values, origins, profile, where)


def render_value(key: Key, value: Any) -> str:
    """A value in TOML syntax, units kept readable."""
    if value is None:
        return "(built-in)"
    if key.kind == "duration":
        return f'"{format_duration(float(value))}"'
    if key.kind == "size":
        return f'"{format_size(int(value))}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    plain = Key("", "", "", "")
    if isinstance(value, list):
        return "[" + ", ".join(render_value(plain, v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; keys quoted (they may be addresses)
        inner = ", ".join(f'"{k}" = {render_value(plain, v)}' for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return str(value)


def sample_config() -> str:
    """The annotated conf/mailwarden.toml, generated from SCHEMA."""
    out = [
        "# mailwarden configuration. Generated from the schema in mailwarden/config.py",
        "# (`mailwarden config sample`); every key is shown with its default.",
        "# Commented-out keys take their value from the regulation profile, or are off",
        "# until set (the example shows the form).",
        "# Check a changed file with: mailwarden config check --config FILE",
    ]
    section = ""
    for key in SCHEMA:
        sec, name = key.name.split(".", 1)
        if sec != section:
            out += ["", f"[{sec}]"]
            section = sec
        out.append(f"# {key.doc}")
        if key.default is None or (key.default in ("", {}, []) and key.example):
            out.append(f"#{name} = {key.example}" if key.example else f"#{name} =")
        elif key.kind == "table":
            out.append(f"{name} = {render_value(key, key.default)}")
            if key.name == "ratelimit.overrides":
                out.append('#overrides = { "bulk@ninhbinh.gov.vn" = { limit = 2000 }, '
                           '"noreply@ninhbinh.gov.vn" = { exempt = true } }')
        else:
            out.append(f"{name} = {render_value(key, key.default)}")
    return "\n".join(out) + "\n"


def reference_markdown() -> str:
    """docs/config.md, generated from SCHEMA (`mailwarden config reference`)."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema in `mailwarden/config.py` by "
        "`mailwarden config reference`; a test fails if this file drifts.",
        "The file is TOML (`/etc/mailwarden/mailwarden.toml`, or `--config FILE`, or "
        "`$MAILWARDEN_CONFIG`). Unknown keys and wrong types stop the daemons at start "
        "with the file and the key. Durations: `\"10m\"`, `\"30s\"`, `\"250ms\"`; "
        "sizes: `\"30MB\"` (MB = 1024*1024). *profile* means the value comes from the "
        "regulation profile unless set here.",
    ]
    section = ""
    for key in SCHEMA:
        sec = key.name.split(".")[0]
        if sec != section:
            out += ["", f"## [{sec}]", "", "| key | type | default | meaning |",
                    "|---|---|---|---|"]
            section = sec
        default = "*profile*" if key.default is None else f"`{render_value(key, key.default)}`"
        out.append(f"| `{key.name}` | {key.kind} | {default} | {key.doc.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def describe(cfg: Config) -> str:
    """Effective settings with where each came from (`mailwarden config check`)."""
    lines = [f"# profile: {cfg.profile.name} ({cfg.profile.decision}, {cfg.profile.province})"]
    for key in SCHEMA:
        lines.append(f"{key.name} = {render_value(key, cfg.values[key.name])}"
                     f"    # {cfg.origins[key.name]}")
    return "\n".join(lines) + "\n"
