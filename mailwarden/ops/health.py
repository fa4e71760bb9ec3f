"""`mailwarden health`: one Nagios-style line and exit status for the monitoring system.

Exit 0 OK, 1 WARNING, 2 CRITICAL (3 UNKNOWN is never used: a check that cannot run is
a failed check). Each check is one function returning a Result; the worst wins.

* redis     reachable and takes a write (an expiring key)
* clamd     answers PING and detects the EICAR test string (its signatures are loaded);
            the policy signatures too when antivirus.policy_signatures is not "off"
* policyd   its socket answers a policy request (protocol_state=CONNECT -> action=)
* milter    its socket answers the milter option negotiation (SMFIC_OPTNEG)
* notifier  lock events waiting for notification (pending + unread in the consumer
            group): health.backlog_warning / backlog_critical; no consumer group at all
            means no notifier ever ran: warning
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from mailwarden import logs
from mailwarden.addresses import parse_listen
from mailwarden.clients import sockets
from mailwarden.settings import Settings

OK, WARNING, CRITICAL = 0, 1, 2
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
CHECKS = ("redis", "clamd", "policyd", "milter", "notifier")


@dataclass(frozen=True)
class Result:
    check: str
    status: int
    text: str
    perf: str = ""  # Nagios perfdata, "label=value;warn;crit"


def check_redis(s: Settings) -> Result:
    from mailwarden.store.events import AuditQueue

    start = time.monotonic()
    try:
        q = AuditQueue.from_settings(s.redis, timeout_s=s.ops.timeout_s)
        try:
            ok = q.probe_write(uuid.uuid4().hex)
        finally:
            q.close()
    except Exception as e:
        return Result("redis", CRITICAL, f"redis {logs.describe_error(e)}")
    ms = (time.monotonic() - start) * 1000
    if not ok:
        return Result("redis", CRITICAL, "redis did not keep a write")
    return Result("redis", OK, "redis OK", f"redis_ms={ms:.1f}")


def check_clamd(s: Settings) -> Result:
    from mailwarden.clients import clamd

    c = s.content
    if not c.scan:
        return Result("clamd", OK, "clamd not used (antivirus.enabled = false)")
    t = s.ops.timeout_s
    try:
        if not clamd.ping(c.clamd_address, timeout_s=t):
            return Result("clamd", CRITICAL, f"clamd {c.clamd_address} does not answer PING")
    except Exception as e:
        return Result("clamd", CRITICAL, f"clamd {c.clamd_address}: {logs.describe_error(e)}")
    outcome = clamd.scan_stream(_eicar(), address=c.clamd_address, timeout_s=t)
    if not outcome.infected:
        return Result("clamd", CRITICAL, f"clamd {c.clamd_address} did not detect the EICAR "
                      f"test file ({outcome.status.value} {outcome.error}): no signatures")
    perf = f"clamd_scan_ms={outcome.elapsed_s * 1000:.1f}"
    if c.policy_signatures != "off":
        probe = _policy_probe()
        if probe is not None:
            ok, said = probe(c.clamd_address, t)
            if ok is False:
                status = CRITICAL if c.policy_signatures == "require" else WARNING
                return Result("clamd", status, f"clamd lacks the policy signatures ({said})",
                              perf)
    return Result("clamd", OK, "clamd OK", perf)


def _policy_probe() -> Callable[[str, float], tuple[bool | None, str]] | None:
    try:
        from mailwarden.engine.scanning import probe_policy_signatures
    except ImportError:
        return None

    def probe(address: str, timeout_s: float) -> tuple[bool | None, str]:
        return probe_policy_signatures(address, timeout_s=timeout_s)

    return probe


def _eicar() -> bytes:
    # Assembled at run time so that no file of the package holds the test string whole.
    return ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-"
            + "TEST-FILE!$H+H*").encode("ascii")


def check_policyd(s: Settings) -> Result:
    where = parse_listen(s.policyd.listen)
    request = b"request=smtpd_access_policy\nprotocol_state=CONNECT\nprotocol_name=SMTP\n\n"
    start = time.monotonic()
    try:
        with sockets.connect(where, s.ops.timeout_s) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError as e:
        return Result("policyd", CRITICAL, f"policyd {s.policyd.listen}: {logs.describe_error(e)}")
    if not reply.startswith(b"action="):
        return Result("policyd", CRITICAL, f"policyd {s.policyd.listen}: unexpected answer "
                      f"{reply[:60]!r}")
    ms = (time.monotonic() - start) * 1000
    return Result("policyd", OK, "policyd OK", f"policyd_ms={ms:.1f}")


def check_milter(s: Settings) -> Result:
    """SMFIC_OPTNEG (version 6, no actions, no protocol steps skipped) -> SMFIC_OPTNEG."""
    where = parse_listen(s.milter.listen)
    body = b"O" + struct.pack("!III", 6, 0x1FF, 0)
    start = time.monotonic()
    try:
        with sockets.connect(where, s.ops.timeout_s) as sock:
            sock.sendall(struct.pack("!I", len(body)) + body)
            head = _recv_exact(sock, 5)
            size, cmd = struct.unpack("!I", head[:4])[0], head[4:5]
            _recv_exact(sock, max(0, min(size - 1, 4096)))
            sock.sendall(struct.pack("!I", 1) + b"Q")  # SMFIC_QUIT
    except (OSError, EOFError) as e:
        return Result("milter", CRITICAL, f"milter {s.milter.listen}: {logs.describe_error(e)}")
    if cmd != b"O":
        return Result("milter", CRITICAL, f"milter {s.milter.listen}: answered {cmd!r} to "
                      "the option negotiation")
    ms = (time.monotonic() - start) * 1000
    return Result("milter", OK, "milter OK", f"milter_ms={ms:.1f}")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def check_notifier(s: Settings) -> Result:
    from mailwarden.store.events import AuditQueue

    o = s.ops
    try:
        q = AuditQueue.from_settings(s.redis, timeout_s=o.timeout_s)
        try:
            b = q.backlog()
        finally:
            q.close()
    except Exception as e:
        return Result("notifier", CRITICAL,
                      f"notifier backlog unknown: redis {logs.describe_error(e)}")
    perf = f"notify_backlog={b.total};{o.backlog_warning};{o.backlog_critical}"
    if not b.group:
        return Result("notifier", WARNING, "no notifier has joined the audit stream "
                      "(mailwarden notifier not running?)", perf)
    text = f"{b.total} lock events waiting for notification"
    if b.total >= o.backlog_critical:
        return Result("notifier", CRITICAL, text, perf)
    if b.total >= o.backlog_warning:
        return Result("notifier", WARNING, text, perf)
    return Result("notifier", OK, f"notifier OK ({b.total} waiting)", perf)


RUNNERS: dict[str, Callable[[Settings], Result]] = {
    "redis": check_redis, "clamd": check_clamd, "policyd": check_policyd,
    "milter": check_milter, "notifier": check_notifier,
}


def run(s: Settings, skip: tuple[str, ...] = ()) -> tuple[int, str]:
    """(exit status, the one line) for the checks not skipped."""
    results = [RUNNERS[name](s) for name in CHECKS if name not in skip]
    status = max((r.status for r in results), default=OK)
    bad = [r.text for r in results if r.status != OK]
    good = [r.check for r in results if r.status == OK]
    summary = "; ".join(bad) if bad else "all checks passed"
    if bad and good:
        summary += f"; OK: {', '.join(good)}"
    perf = " ".join(r.perf for r in results if r.perf)
    line = f"MAILWARDEN {NAMES[status]} - {summary}" + (f" | {perf}" if perf else "")
    return status, line.replace("\n", " ")
