"""clamd as a shared resource of the milter's threads: bounded, and left alone when it hangs.

* At most `antivirus.max_scans` scans are in flight; more wait, inside their own deadline.
* A circuit breaker: after `antivirus.breaker_timeouts` consecutive scan timeouts, clamd is
  not called for `antivirus.breaker_pause`; scans fail at once (ScanStatus.ERROR, "clamd
  circuit open"), so on_clamd_error answers (451 by default) instead of every session
  waiting out antivirus.timeout on a frozen clamd. After the pause ONE trial scan goes
  through (half-open); its success closes the breaker, another timeout re-opens it.
* The policy-signature probe: a tiny crafted PE file sent with INSTREAM must come back as
  `MailWarden.Executable.*` (conf/clamav/mailwarden-policy.ndb loaded).

Thread-safe; the clock is injectable (tests never sleep).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from mailwarden.clients import clamd
from mailwarden.engine.core import Scanner
from mailwarden.rules.antivirus import EXECUTABLE_PREFIX

Event = Callable[[str, dict[str, str | int | float]], None]


def _is_timeout(outcome: clamd.ScanOutcome) -> bool:
    return outcome.status is clamd.ScanStatus.ERROR and outcome.error.startswith("timeout")


class ScanGate:
    """Wraps a Scanner: the concurrency bound and the circuit breaker."""

    def __init__(self, scanner: Scanner, *, max_scans: int, breaker_timeouts: int,
                 breaker_pause_s: float, clock: Callable[[], float] = time.monotonic,
                 on_event: Event | None = None) -> None:
        self.scanner = scanner
        self.slots = threading.BoundedSemaphore(max_scans)
        self.breaker_timeouts = breaker_timeouts
        self.breaker_pause_s = breaker_pause_s
        self.clock = clock
        self.on_event = on_event or (lambda text, values: None)
        self._lock = threading.Lock()
        self._timeouts = 0  # consecutive
        self._open_until: float | None = None  # None = closed
        self._trial = False  # half-open: one scan is trying clamd
        self.stats = {"scans": 0, "scan_timeouts": 0, "breaker_opened": 0,
                      "breaker_refused": 0}

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def __call__(self, fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        start = self.clock()
        with self._lock:
            trial = False
            if self._open_until is not None:
                if start < self._open_until or self._trial:
                    self.stats["breaker_refused"] += 1
                    return clamd.ScanOutcome(
                        clamd.ScanStatus.ERROR, part=label,
                        error=f"clamd circuit open after {self._timeouts:d} timeouts")
                self._trial = trial = True
        try:
            if not self.slots.acquire(timeout=max(0.0, timeout_s)):
                return clamd.ScanOutcome(clamd.ScanStatus.ERROR, part=label,
                                         error="no clamd scan slot free in time")
            try:
                left = timeout_s - (self.clock() - start)
                if left <= 0:
                    return clamd.ScanOutcome(clamd.ScanStatus.ERROR, part=label,
                                             error=f"timeout after {timeout_s:g}s (queue)")
                outcome = self.scanner(fp, left, label)
            finally:
                self.slots.release()
        except BaseException:
            with self._lock:
                if trial:
                    self._trial = False
            raise
        self._record(outcome, trial)
        return outcome

    def without_breaker(self, fp: BinaryIO, timeout_s: float,
                        label: str) -> clamd.ScanOutcome:
        """A scan whose outcome does not count for the breaker (the engine's short look at
        an already refused message: its timeout says nothing about clamd's health). Still
        bounded by the slots, and not made while the breaker is open."""
        if self.is_open:
            return clamd.ScanOutcome(clamd.ScanStatus.ERROR, part=label,
                                     error="clamd circuit open")
        if not self.slots.acquire(timeout=max(0.0, timeout_s)):
            return clamd.ScanOutcome(clamd.ScanStatus.ERROR, part=label,
                                     error="no clamd scan slot free in time")
        try:
            return self.scanner(fp, timeout_s, label)
        finally:
            self.slots.release()

    def _record(self, outcome: clamd.ScanOutcome, trial: bool) -> None:
        event: tuple[str, dict[str, str | int | float]] | None = None
        with self._lock:
            self.stats["scans"] += 1
            if trial:
                self._trial = False
            if _is_timeout(outcome):
                self.stats["scan_timeouts"] += 1
                self._timeouts += 1
                if trial or (self._open_until is None
                             and self._timeouts >= self.breaker_timeouts):
                    self._open_until = self.clock() + self.breaker_pause_s
                    self.stats["breaker_opened"] += 1
                    event = ("clamd circuit breaker open: not calling clamd", {
                        "timeouts": self._timeouts, "pause": f"{self.breaker_pause_s:g}s"})
            elif outcome.status is not clamd.ScanStatus.ERROR or trial:
                # clamd answered (clean, infected, or an error reply of its own): it lives.
                was_open = self._open_until is not None
                self._timeouts = 0
                self._open_until = None
                if was_open:
                    event = ("clamd circuit breaker closed: clamd answers again", {})
        if event is not None:
            self.on_event(*event)


# -- the policy-signature probe -------------------------------------------------------------

def probe_pe() -> bytes:
    """The smallest file ClamAV takes for a PE (target type 1): MZ header, e_lfanew, "PE\\0\\0",
    a COFF header and a PE32 optional-header magic. Not runnable; made here, never stored."""
    pe = bytearray(1024)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe[0x80:0x84] = b"PE\0\0"
    pe[0x84:0x86] = (0x14C).to_bytes(2, "little")  # i386
    pe[0x86:0x88] = (1).to_bytes(2, "little")  # one section
    pe[0x94:0x96] = (0xE0).to_bytes(2, "little")  # optional header size
    pe[0x96:0x98] = (0x0102).to_bytes(2, "little")  # executable, 32-bit
    pe[0x98:0x9A] = (0x10B).to_bytes(2, "little")  # PE32
    return bytes(pe)


def probe_policy_signatures(address: str, timeout_s: float = 10.0) -> tuple[bool | None, str]:
    """(True, signature) when clamd flags the probe PE with our policy signature;
    (False, what it said) when it answers without it; (None, error) when unreachable."""
    outcome = clamd.scan_stream(probe_pe(), address=address, timeout_s=timeout_s)
    if outcome.infected and outcome.signature.startswith(EXECUTABLE_PREFIX):
        return True, outcome.signature
    if outcome.status is clamd.ScanStatus.ERROR:
        return None, outcome.error
    return False, outcome.signature or "OK (not flagged)"
