"""One message through inspection, the rules, authentication and clamd, for BOTH the
milter and `mailwarden check FILE.eml` (same code, same verdict).

    engine = Engine.from_settings(settings)            # check: everything in-process
    engine = Engine.from_settings(settings, pool=True)  # milter: parsing in worker processes
    result = engine.evaluate(spool, envelope, queue_id=...)

core.py     analyse (the parsing step) + the raw-message scan + aggregation
workers.py  the pre-forked pool of worker processes (memory/CPU/time limits)
scanning.py clamd's concurrency bound, circuit breaker and policy-signature probe
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from mailwarden.engine.core import (
    Analysis,
    AuthStep,
    Envelope,
    Evaluation,
    Scanner,
    analyse,
    default_scanner,
    evaluate,
)
from mailwarden.engine.scanning import ScanGate
from mailwarden.engine.workers import WorkerFailure, WorkerLimits, WorkerPool, failure_analysis

if TYPE_CHECKING:
    from mailwarden.auth.engine import Authenticator
    from mailwarden.engine.scanning import Event
    from mailwarden.settings import Settings

__all__ = [
    "Analysis",
    "AuthStep",
    "Engine",
    "Envelope",
    "Evaluation",
    "ScanGate",
    "Scanner",
    "WorkerPool",
    "analyse",
    "evaluate",
]


class Engine:
    """What every message shares: settings, the clamd gate, authentication, the pool."""

    def __init__(self, settings: Settings, *, scanner: Scanner | None = None,
                 authenticator: Authenticator | None = None, pool: WorkerPool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_event: Event | None = None) -> None:
        self.settings = settings
        self.content = c = settings.content
        self.clock = clock
        self.gate = ScanGate(scanner or default_scanner(c.clamd_address),
                             max_scans=c.max_scans, breaker_timeouts=c.breaker_timeouts,
                             breaker_pause_s=c.breaker_pause_s, clock=clock,
                             on_event=on_event)
        self.auth = None if authenticator is None else AuthStep(
            authenticator, settings.ours, settings.auth.max_message_bytes)
        self.pool = pool

    @classmethod
    def from_settings(cls, settings: Settings, *, pool: bool = False,
                      on_event: Event | None = None) -> Engine:
        """Reads the DKIM keys and the public suffix list (auth/): errors are fatal at start.
        With `pool` and milter.workers > 0, starts the worker processes."""
        from mailwarden.auth.engine import Authenticator

        authenticator = Authenticator.from_settings(settings)
        workers = None
        m = settings.milter
        if pool and m.workers > 0:
            workers = WorkerPool(settings, m.workers, WorkerLimits(
                m.worker_memory, m.worker_cpu_s, m.worker_timeout_s),
                on_failure=m.on_worker_failure).start()
        return cls(settings, authenticator=authenticator, pool=workers, on_event=on_event)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def evaluate(self, message: BinaryIO, envelope: Envelope, *, queue_id: str = "",
                 cancelled: Callable[[], bool] = lambda: False) -> Evaluation:
        pool = self.pool
        if pool is None:
            return evaluate(message, self.content, scanner=self.gate, envelope=envelope,
                            authenticate=self.auth, clock=self.clock)

        def in_worker(fp: BinaryIO, env: Envelope | None, deadline: float) -> Analysis:
            got = pool.analyse(fp, env, deadline, authenticate=self.auth is not None,
                               queue_id=queue_id, cancelled=cancelled)
            if isinstance(got, WorkerFailure):
                return failure_analysis(got, self.content.attachments,
                                        self.settings.milter.on_worker_failure)
            return got

        return evaluate(message, self.content, scanner=self.gate, envelope=envelope,
                        analyser=in_worker, clock=self.clock)
