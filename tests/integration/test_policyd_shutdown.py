"""SIGTERM to the real policy daemon under load (issue 13).

Redis is frozen (SIGSTOP) just before the SIGTERM, so that every load connection has a
request in flight at that moment, deterministically; it is thawed a moment later.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.daemons import Daemon, write_config
from harness.procs import wait_until
from harness.redis import RedisInstance
from tests.component.test_policy_server import out

pytestmark = pytest.mark.integration

CLIENTS = 20


@dataclass
class Client:
    """One Postfix-like connection sending requests one after another."""

    path: str
    answered: int = 0
    unanswered_before_term: int = 0  # sent before the SIGTERM, connection closed unanswered
    errors: list[str] = field(default_factory=list)

    def run(self, n: int, stop: threading.Event, term_at: list[float]) -> None:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(self.path)
        except OSError as e:
            self.errors.append(f"connect: {e}")
            return
        with s:
            i = 0
            while not stop.is_set():
                i += 1
                sent_at = time.monotonic()
                try:
                    s.sendall(out(f"u{n}-{i}@ninhbinh.gov.vn", f"x{i}@gmail.com"))
                    reply = b""
                    while not reply.endswith(b"\n\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            raise ConnectionError("closed")
                        reply += chunk
                except OSError as e:
                    if not term_at or sent_at < term_at[0]:
                        self.unanswered_before_term += 1
                        self.errors.append(f"request {i}: {e}")
                    return
                self.answered += 1


@pytest.fixture
def daemon_on(tmp_path: Path, redis_server: RedisInstance) -> Iterator[tuple[Daemon, Path]]:
    sock = tmp_path / "policyd.sock"
    config = write_config(tmp_path / "mailwarden.toml", {
        "policyd.listen": f"unix:{sock}", "redis.url": redis_server.url,
        "redis.timeout": 10.0, "policyd.answer_timeout": 15.0,
        "policyd.shutdown_grace": 20.0, "policyd.stats_interval": 0.0,
        "ratelimit.limit": 100000})
    d = Daemon("policyd", config, f"unix:{sock}", tmp_path / "policyd.log").start()
    try:
        yield d, sock
    finally:
        d.stop()


def load(sock: Path, stop: threading.Event, term_at: list[float]
         ) -> tuple[list[Client], list[threading.Thread]]:
    clients = [Client(str(sock)) for _ in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, args=(n, stop, term_at), daemon=True)
               for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    return clients, threads


def test_sigterm_under_load_answers_every_request_in_flight(
        daemon_on: tuple[Daemon, Path], redis_server: RedisInstance) -> None:
    d, sock = daemon_on
    stop, term_at = threading.Event(), []
    clients, threads = load(sock, stop, term_at)
    wait_until(lambda: sum(c.answered for c in clients) > 500, 60, "load running")
    os.kill(redis_server.pid, signal.SIGSTOP)  # every connection's next request hangs
    try:
        time.sleep(0.5)
        term_at.append(time.monotonic())
        os.kill(d.pid, signal.SIGTERM)
        # The socket goes at once, while the requests in flight are still waiting.
        wait_until(lambda: not sock.exists(), 10, "socket removed")
        assert d.alive(), "exited before answering the requests in flight"
        with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    assert d.proc is not None
    code = d.proc.wait(30)
    stop.set()
    for t in threads:
        t.join(30)
    assert code == 0, d.log_text()[-2000:]
    assert sum(c.unanswered_before_term for c in clients) == 0, [c.errors for c in clients]
    log = d.log_text()
    final = [line for line in log.splitlines() if "stopped; statistics:" in line]
    assert len(final) == 1, log[-2000:]
    answered = int(re.search(r"shutdown_answered=(\d+)", final[0]).group(1))  # type: ignore[union-attr]
    assert answered >= CLIENTS and "shutdown_unanswered=0" in final[0], final[0]
    print(f"{sum(c.answered for c in clients)} answered in all; {answered} after SIGTERM")


def test_sigterm_grace_over_closes_what_is_left_and_says_so(
        tmp_path: Path, redis_server: RedisInstance) -> None:
    """Redis stays frozen past policyd.shutdown_grace: the daemon does not wait for ever;
    it closes the connections (Postfix retries the request elsewhere or applies its
    default_action) and its final line counts them. (Calls still waiting on Redis are
    abandoned at exit within redis.timeout.)"""
    sock = tmp_path / "policyd.sock"
    config = write_config(tmp_path / "mailwarden.toml", {
        "policyd.listen": f"unix:{sock}", "redis.url": redis_server.url,
        "redis.timeout": 5.0, "policyd.answer_timeout": 60.0,
        "policyd.shutdown_grace": 1.0, "policyd.stats_interval": 0.0})
    d = Daemon("policyd", config, f"unix:{sock}", tmp_path / "policyd.log").start()
    stop, term_at = threading.Event(), []
    try:
        clients, threads = load(sock, stop, term_at)
        wait_until(lambda: sum(c.answered for c in clients) > 100, 60, "load running")
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            os.kill(d.pid, signal.SIGTERM)
            assert d.proc is not None
            code = d.proc.wait(30)
            took = time.monotonic() - t0
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        stop.set()
        for t in threads:
            t.join(30)
        assert code == 0 and took < 1.0 + 5.0 + 5.0, (code, took)
        final = [ln for ln in d.log_text().splitlines() if "stopped; statistics:" in ln]
        assert len(final) == 1 and re.search(r"shutdown_unanswered=[1-9]", final[0]), final
        assert not sock.exists()
    finally:
        d.stop()


def test_systemd_stop_timeout_covers_shutdown_grace() -> None:
    """TimeoutStopSec is the default policyd.shutdown_grace plus redis.timeout plus a
    margin of at most 10 s: systemd never SIGKILLs a daemon still answering requests,
    nor waits long for one that is stuck."""
    from mailwarden.config import SCHEMA_BY_NAME
    from mailwarden.units import parse_duration

    unit = (Path(__file__).resolve().parents[2] / "systemd" /
            "mailwarden-policyd.service").read_text()
    stop = parse_duration(re.search(r"^TimeoutStopSec=(\S+)", unit, re.M).group(1))  # type: ignore[union-attr]
    grace = SCHEMA_BY_NAME["policyd.shutdown_grace"].default
    redis_timeout = SCHEMA_BY_NAME["redis.timeout"].default
    assert grace + redis_timeout < stop <= grace + redis_timeout + 10
    assert "StateDirectory=mailwarden" in unit
    assert SCHEMA_BY_NAME["policyd.lock_snapshot"].default.startswith("/var/lib/mailwarden/")
