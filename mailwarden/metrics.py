"""Prometheus metrics: every metric object and name lives here, and nowhere else.

The daemons call one function per event (`decision`, `policy_answer`, `milter_eom`,
`clamd_scan`, `dns_query`, `backend_error`, ...). Until `serve()` has been called in a
process, every one of them is a no-op that costs a global lookup: metrics off
(`policyd.metrics_listen` / `milter.metrics_listen` empty), the CLI and the tests
import nothing from prometheus_client.

Processes. The policy daemon is one process: a plain registry. The milter may run
its per-message work in a pool of worker processes (engine/): `serve(...,
multiprocess=True)` puts prometheus_client in its multiprocess mode deliberately,
with a fresh private directory set in PROMETHEUS_MULTIPROC_DIR *before*
prometheus_client is imported, so that whatever a worker observes (a clamd scan,
a DNS query) lands in a file of its own and the parent's HTTP listener sums every
process's files at scrape time. Decisions are counted where the verdict is applied
(the milter's parent, in `_apply`), so they are counted once whatever process
decided. Counts of a worker that died stay (its files stay until the daemon
stops); gauges are only set by the parent (mode "livesum"/"max").

Labels are bounded: rule ids from verdict.RULES (anything else becomes "other"),
actions, stages, backends. Never an address or a queue id.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mailwarden.verdict import RULES

PREFIX = "mailwarden_"
DAEMONS = ("policyd", "milter", "notifier")
ACTIONS = ("reject", "defer", "monitor", "accept", "accept-unchecked", "accept-unscanned",
           "log")
BACKENDS = ("redis", "clamd", "dns", "smtp")
# Seconds. Policy answers are sub-millisecond to a few ms; end of message and scans
# run up to the content budget (120 s by default).
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0)
SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 120.0)


class _Metrics:
    """The metric objects of one process (created by serve(), after the mode is set)."""

    def __init__(self, registry: Any, multiprocess: bool) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        # Gauge modes matter in multiprocess mode only (where the parent sets them).
        self.decisions = Counter(
            PREFIX + "decisions", "Decisions applied, by daemon, rule id, action and SMTP "
            "stage (monitor = would have refused).",
            ["daemon", "rule", "action", "stage"], registry=registry)
        self.requests = Counter(
            PREFIX + "requests", "Policy requests answered / messages seen at end of data.",
            ["daemon"], registry=registry)
        self.malformed = Counter(
            PREFIX + "policy_malformed_requests", "Policy requests refused as malformed "
            "(connection closed).", registry=registry)
        self.backend_errors = Counter(
            PREFIX + "backend_errors", "Failed calls to a backend (redis, clamd, dns, "
            "smtp).", ["daemon", "backend"], registry=registry)
        self.lock_events = Counter(
            PREFIX + "lock_events", "Locks and unlocks this daemon made or learned of "
            "(policyd: made by its own rate rule; notifier: every event of the audit "
            "stream it handled).", ["daemon", "action", "kind"], registry=registry)
        self.policy_answer = Histogram(
            PREFIX + "policy_answer_seconds", "Time to answer one policy request.",
            ["stage"], buckets=FAST_BUCKETS, registry=registry)
        self.milter_eom = Histogram(
            PREFIX + "milter_eom_seconds", "Time from end of data to the milter's verdict.",
            buckets=SLOW_BUCKETS, registry=registry)
        self.clamd_scan = Histogram(
            PREFIX + "clamd_scan_seconds", "Time of one clamd scan call, by outcome.",
            ["outcome"], buckets=SLOW_BUCKETS, registry=registry)
        self.dns_query = Histogram(
            PREFIX + "dns_query_seconds", "Time of one DNS lookup that went to a resolver "
            "(cache hits are not counted), by outcome.", ["outcome"],
            buckets=(*FAST_BUCKETS, 10.0), registry=registry)
        self.inflight = Gauge(
            PREFIX + "inflight_sessions", "Connections open from Postfix (policyd) or "
            "SMTP sessions in the milter.", ["daemon"], registry=registry,
            multiprocess_mode="livesum")
        self.locks = Gauge(
            PREFIX + "locks_current", "Locked accounts in this daemon's lock list.",
            registry=registry,
            multiprocess_mode="max")
        self.workers = Gauge(
            PREFIX + "milter_workers", "The milter's worker pool by state (busy, idle, "
            "configured).", ["state"], registry=registry,
            multiprocess_mode="max")
        self.worker_restarts = Counter(
            PREFIX + "milter_worker_restarts", "Worker processes replaced (died, over a "
            "limit, timed out).", ["reason"], registry=registry)
        self.notifications = Counter(
            PREFIX + "notifications", "Lock notifications, by event, recipient role and "
            "result (sent, failed = will retry, dropped = no address).",
            ["event", "role", "result"], registry=registry)
        self.notifier_backlog = Gauge(
            PREFIX + "notifier_backlog", "Lock events not yet notified (pending + not yet "
            "read by the consumer group).", registry=registry,
            multiprocess_mode="max")
        self.build = Gauge(
            PREFIX + "build_info", "Version, regulation profile and daemon; always 1.",
            ["version", "profile", "daemon"], registry=registry,
            multiprocess_mode="max")
        self.started = Gauge(
            PREFIX + "start_time_seconds", "When the daemon started (Unix time).",
            ["daemon"], registry=registry,
            multiprocess_mode="max")


_M: _Metrics | None = None
_MP_ENV = "PROMETHEUS_MULTIPROC_DIR"
_lock = threading.Lock()


def enabled() -> bool:
    return _M is not None


def _rule(rule: str) -> str:
    return rule if rule in RULES or rule == "none" else "other"


# -- events (no-ops until serve()) --------------------------------------------------
# Rules that mean "a backend failed": their decisions also count as backend errors.
RULE_BACKEND = {"ratelimit.backend_error": "redis", "av.unavailable": "clamd",
                "auth.dns_temperror": "dns"}


def decision(daemon: str, rule: str, action: str, stage: str) -> None:
    """One applied decision (one decision log line); a backend's failure verdict
    (RULE_BACKEND) counts as that backend's error too."""
    if _M is not None:
        _M.decisions.labels(daemon, _rule(rule), action if action in ACTIONS else "other",
                            stage.upper() or "-").inc()
        if rule in RULE_BACKEND:
            _M.backend_errors.labels(daemon, RULE_BACKEND[rule]).inc()


def request(daemon: str) -> None:
    if _M is not None:
        _M.requests.labels(daemon).inc()


def malformed() -> None:
    if _M is not None:
        _M.malformed.inc()


def backend_error(daemon: str, backend: str) -> None:
    if _M is not None:
        _M.backend_errors.labels(daemon, backend if backend in BACKENDS else "other").inc()


def lock_event(daemon: str, action: str, kind: str) -> None:
    if _M is not None:
        _M.lock_events.labels(daemon, action, kind or "manual").inc()


def policy_answer(stage: str, seconds: float) -> None:
    if _M is not None:
        _M.policy_answer.labels(stage.upper() or "-").observe(seconds)


def milter_eom(seconds: float) -> None:
    if _M is not None:
        _M.milter_eom.observe(seconds)


def clamd_scan(seconds: float, outcome: str) -> None:
    """One scan call (clean, infected, error); an error also counts as a clamd error."""
    if _M is not None:
        _M.clamd_scan.labels(outcome).observe(seconds)


def dns_query(seconds: float, outcome: str) -> None:
    if _M is not None:
        _M.dns_query.labels(outcome).observe(seconds)


def set_inflight(daemon: str, n: int) -> None:
    if _M is not None:
        _M.inflight.labels(daemon).set(n)


def add_inflight(daemon: str, delta: int) -> None:
    if _M is not None:
        _M.inflight.labels(daemon).inc(delta)


def set_locks(n: int) -> None:
    if _M is not None:
        _M.locks.set(n)


def set_workers(*, busy: int, idle: int, configured: int) -> None:
    if _M is not None:
        _M.workers.labels("busy").set(busy)
        _M.workers.labels("idle").set(idle)
        _M.workers.labels("configured").set(configured)


def worker_restart(reason: str) -> None:
    if _M is not None:
        _M.worker_restarts.labels(reason).inc()


def notification(event: str, role: str, result: str) -> None:
    if _M is not None:
        _M.notifications.labels(event, role, result).inc()


def set_notifier_backlog(n: int) -> None:
    if _M is not None:
        _M.notifier_backlog.set(n)


@contextlib.contextmanager
def timed(observe: Callable[[float], None]) -> Iterator[None]:
    """`with metrics.timed(metrics.milter_eom): ...` (observed also on an exception)."""
    start = time.monotonic()
    try:
        yield
    finally:
        observe(time.monotonic() - start)


# -- the listener --------------------------------------------------------------------
def _multiprocess_dir(base: str | None) -> str:
    d = tempfile.mkdtemp(prefix="mailwarden-metrics-", dir=base or None)
    atexit.register(shutil.rmtree, d, True)
    return d


def serve(daemon: str, listen: str, *, profile: str, version: str,
          multiprocess: bool = False, tmpdir: str | None = None,
          locks: Callable[[], float] | None = None,
          inflight: Callable[[], float] | None = None) -> tuple[str, int]:
    """Start the loopback HTTP listener (a daemon thread) for `listen` ("inet:HOST:PORT")
    and turn the event functions on. Returns (host, port) actually bound.

    multiprocess: prometheus_client's multiprocess mode with a fresh directory (see the
    module doc); must run before anything in the process imported prometheus_client,
    otherwise this process falls back to a plain registry (and says so: ValueError)."""
    global _M
    from mailwarden.addresses import parse_listen

    where = parse_listen(listen)
    if where.family != "inet":
        raise ValueError(f"{listen}: metrics listen on inet:HOST:PORT only")
    with _lock:
        if _M is not None:
            raise RuntimeError("metrics already served in this process")
        if multiprocess:
            if "prometheus_client" in sys.modules and not os.environ.get(_MP_ENV):
                raise ValueError("prometheus_client was imported before the multiprocess "
                                 "directory was set")
            os.environ[_MP_ENV] = _multiprocess_dir(tmpdir)
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=True)
        if multiprocess:
            from prometheus_client import multiprocess as mp

            # Scrapes read the files of every process; the parent's own metric objects
            # write there too, so they are not registered a second time.
            mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            m = _Metrics(None, True)
        else:
            m = _Metrics(registry, False)
        server, thread = start_http_server(where.port, addr=where.host, registry=registry)
        thread.name = "metrics-http"
        m.build.labels(version, profile, daemon).set(1)
        m.started.labels(daemon).set(time.time())
        # Read at scrape time (a plain registry only: multiprocess gauges are set).
        if locks is not None and not multiprocess:
            m.locks.set_function(locks)
        if inflight is not None and not multiprocess:
            m.inflight.labels(daemon).set_function(inflight)
        _M = m
        host, port = server.server_address[:2]
        return str(host), int(port)


def worker_init() -> None:
    """In a worker process of the milter: record into the multiprocess directory the
    parent set up (its HTTP listener sums it), if it did; otherwise stay off."""
    global _M
    if _M is None and os.environ.get(_MP_ENV) and os.path.isdir(os.environ[_MP_ENV]):
        _M = _Metrics(None, True)


def worker_exited(pid: int) -> None:
    """A worker process is gone: drop its live gauges (multiprocess mode only)."""
    if _M is not None and os.environ.get(_MP_ENV):
        from prometheus_client import multiprocess as mp

        with contextlib.suppress(OSError):
            mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
