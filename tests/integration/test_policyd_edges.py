"""The policy daemon's edges against the REAL daemon process (issue 9).

`mailwarden policyd` runs as a child process on a free loopback port with a
private redis-server: slow clients cannot crowd Postfix out, and locks and
unlocks made anywhere reach every running daemon through Redis pub/sub, with
the periodic refresh set to an hour so that nothing else could deliver them.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import Daemon, write_config
from harness.procs import free_port, wait_until
from harness.redis import RedisInstance
from tests.component.test_policy_server import ALICE, BOB, out

pytestmark = pytest.mark.integration

HOUR = 3600.0


class Policyd:
    def __init__(self, daemon: Daemon, port: int, config: Path) -> None:
        self.daemon, self.port, self.config = daemon, port, config

    def ask(self, data: bytes, timeout_s: float = 10.0) -> str:
        """One request on a new connection; the action, or what went wrong."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as s:
            s.sendall(data)
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return f"closed after {reply!r}"
                reply += chunk
        return reply.decode().removeprefix("action=").strip()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailwarden", "--config",
                               str(self.config), *args],
                              capture_output=True, text=True, timeout=60, check=True)

    def until(self, data: bytes, want: Callable[[str], bool], timeout_s: float = 5.0
              ) -> tuple[str, float]:
        """Ask (a new request each time) until the answer is as wanted or time is up."""
        t0 = time.monotonic()
        while True:
            answer = self.ask(data)
            if want(answer) or time.monotonic() - t0 > timeout_s:
                return answer, time.monotonic() - t0
            time.sleep(0.02)


@pytest.fixture
def policyd_factory(tmp_path: Path, redis_server: RedisInstance
                    ) -> Iterator[Callable[..., Policyd]]:
    started: list[Daemon] = []

    def make(name: str = "policyd", **over: Any) -> Policyd:
        port = free_port()
        config = write_config(tmp_path / f"{name}.toml", {
            "policyd.listen": f"inet:127.0.0.1:{port}", "redis.url": redis_server.url,
            "policyd.stats_interval": 0.0, "policyd.lock_refresh": HOUR,
            "logging.level": "info", **over})
        d = Daemon("policyd", config, f"inet:127.0.0.1:{port}", tmp_path / f"{name}.log")
        started.append(d.start())
        # Listening implies subscribed (serve() subscribes first); say so if not.
        wait_until(lambda: "lock channel subscribed" in d.log_text(), 10,
                   f"{name} subscribed to the lock channel", d.alive, d.log)
        return Policyd(d, port, config)

    try:
        yield make
    finally:
        for d in reversed(started):
            d.stop()


# -- slow clients -------------------------------------------------------------------------
PREFIX = out(ALICE, "x@gmail.com")[:-1]  # a whole request but its empty line


async def _trickler(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """An attacker's connection: one byte a second, never finishing; when closed by the
    daemon, back after a second (keeping the pressure on)."""
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(1.0)
            continue
        opened[0] += 1
        try:
            for i in range(len(PREFIX)):
                writer.write(PREFIX[i:i + 1])
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if stop.is_set() or writer.is_closing():
                    break
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not stop.is_set():
            await asyncio.sleep(1.0)


def test_well_formed_request_answered_while_1000_slow_connections_trickle(
        policyd_factory: Callable[..., Policyd]) -> None:
    """Before: 1,000 one-byte-a-second connections filled max_connections and every new
    connection (Postfix's) was reset. Now a newcomer takes a stalled connection's place."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    answer_timeout = 2.0
    p = policyd_factory(**{"policyd.max_connections": 500, "ratelimit.limit": 1000,
                           "policyd.answer_timeout": answer_timeout})

    async def attack_and_ask() -> list[tuple[str, float]]:
        stop, opened = asyncio.Event(), [0]
        tasks = [asyncio.create_task(_trickler(p.port, stop, opened)) for _ in range(1000)]
        try:
            while opened[0] < 1000:  # every attacker connection has been opened once
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # they are over a second old: stalled
            results = []
            for i in range(5):
                t0 = time.monotonic()
                answer = await asyncio.to_thread(p.ask, out(ALICE, f"y{i}@gmail.com"), 20.0)
                results.append((answer, time.monotonic() - t0))
            return results
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(attack_and_ask())
    print("answers under 1,000 slow connections:", results)
    assert [a for a, _ in results] == ["DUNNO"] * 5
    assert max(t for _, t in results) < answer_timeout + 3.0  # generous: 2 busy cores
    assert "max_connections (500) reached: closed the " in p.daemon.log_text()


def test_request_not_finished_within_request_timeout_is_dropped(
        policyd_factory: Callable[..., Policyd]) -> None:
    """The idle timer re-armed at every byte: a trickling request was never dropped."""
    p = policyd_factory(**{"policyd.request_timeout": 1.0})
    with socket.create_connection(("127.0.0.1", p.port), timeout=15) as s:
        closed_after = None
        t0 = time.monotonic()
        for i in range(len(PREFIX)):
            try:
                s.sendall(PREFIX[i:i + 1])
            except OSError:
                closed_after = i
                break
            time.sleep(0.1)
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed_after = i
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed_after = i
                break
            finally:
                s.setblocking(True)
        elapsed = time.monotonic() - t0
    assert closed_after is not None and elapsed < 10  # well before the whole request
    assert "malformed request from" in p.daemon.log_text()
    assert "slow: request not finished 1s after its first byte" in p.daemon.log_text()
    assert p.ask(out(ALICE, BOB)) == "DUNNO"  # and the daemon serves the next one


# -- locks and unlocks over pub/sub -------------------------------------------------------
def locked(answer: str) -> bool:
    return answer.startswith("550 5.7.1 Hop thu bi tam khoa")


def test_cli_lock_and_unlock_reach_the_running_daemon_at_once(
        policyd_factory: Callable[..., Policyd]) -> None:
    """Before: an unlock arrived at the next refresh (4.5 s with the default 5 s; here the
    refresh is an hour, so only the published event can deliver it)."""
    p = policyd_factory()
    assert p.ask(out(ALICE, BOB)) == "DUNNO"
    p.cli("lock", ALICE, "--reason", "virus on PC", "--by", "ops")
    answer, took_lock = p.until(out(ALICE, BOB), locked)
    assert locked(answer) and "virus on PC" in answer
    p.cli("unlock", ALICE, "--reason", "cleaned", "--by", "ops")
    answer, took_unlock = p.until(out(ALICE, BOB), lambda a: a == "DUNNO")
    print(f"lock seen after {took_lock:.3f}s, unlock after {took_unlock:.3f}s")
    assert answer == "DUNNO"


def test_rate_lock_on_one_daemon_is_enforced_by_another_before_its_refresh(
        policyd_factory: Callable[..., Policyd]) -> None:
    a = policyd_factory("a", **{"ratelimit.limit": 2})
    b = policyd_factory("b", **{"ratelimit.limit": 2})
    assert b.ask(out(ALICE, BOB)) == "DUNNO"
    answers = [a.ask(out(ALICE, f"x{i}@gmail.com")) for i in range(3)]
    assert answers[:2] == ["DUNNO", "DUNNO"] and answers[2].startswith("550 5.7.1 ")
    # An internal recipient: b decides from its own lock list alone (no Redis call), so
    # only the published lock can make it refuse.
    answer, took = b.until(out(ALICE, BOB), locked)
    assert locked(answer), answer
    a.cli("unlock", ALICE, "--reason", "verified", "--by", "ops")
    for d in (a, b):
        answer, _ = d.until(out(ALICE, BOB), lambda x: x == "DUNNO")
        assert answer == "DUNNO"
    print(f"rate lock on a seen by b after {took:.3f}s")


def test_daemon_resubscribes_after_redis_restart_and_refreshes(
        policyd_factory: Callable[..., Policyd], redis_server: RedisInstance) -> None:
    """Events published while the daemon was not subscribed are lost: after Redis comes
    back, the daemon resubscribes and refreshes its whole lock list."""
    p = policyd_factory()
    log_before = p.daemon.log_text().count("lock channel subscribed")
    redis_server.stop()
    redis_server.start()
    wait_until(lambda: p.daemon.log_text().count("lock channel subscribed") > log_before,
               30, "resubscribed after the Redis restart", p.daemon.alive, p.daemon.log)
    p.cli("lock", ALICE, "--reason", "after restart", "--by", "ops")
    answer, _ = p.until(out(ALICE, BOB), locked)
    assert locked(answer)
