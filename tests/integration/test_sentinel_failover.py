"""Redis Sentinel failover under load (issue 12), process level.

A Sentinel set on loopback (master, replica, three sentinels), two `mailwarden policyd`
daemons configured with `redis.sentinels`, and sixteen policy connections asking RCPT
questions of fresh senders as fast as the daemons answer. Locks are made (a rate lock
and an operator lock), then the master is SIGKILLed. The test measures how long until
each daemon counts again and what it answered meanwhile (`on_redis_error = "defer"`:
451), then checks that no lock made before the failover is lost, that counting and the
limit work on the promoted replica, and that a lock made after the failover reaches both
daemons over the lock channel (resubscribed to the new master; `lock_refresh` is an hour
here, so nothing else could carry it). The figures are printed (`pytest -s`) and quoted
in docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.daemons import Daemon, write_config
from harness.policyclient import PolicyClient, rcpt_request
from harness.sentinel import SentinelSet
from tests.conftest import require

pytestmark = pytest.mark.integration

LIMIT = 5
WORKERS = 8  # per daemon
INTERNAL = "colleague@ninhbinh.gov.vn"


@dataclass
class Answer:
    daemon: int
    sent: float
    done: float
    action: str


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    require("redis-server")
    with SentinelSet(tmp_path / "sentinel") as ss:
        yield ss


def kind(action: str) -> str:
    if action == "DUNNO":
        return "DUNNO (counted)"
    return action.split(" ")[0] + (" (backend error)" if "backend" in action.lower()
                                   or action.startswith("451") else "")


def test_failover_under_load(tmp_path: Path, sentinel_set: SentinelSet) -> None:
    ss = sentinel_set
    daemons: list[Daemon] = []
    listens: list[str] = []
    cfg = tmp_path / "cli.toml"
    for i in range(2):
        listen = f"unix:{tmp_path}/policyd{i}.sock"
        cfg = write_config(tmp_path / f"policyd{i}.toml", {
            "policyd.listen": listen, "policyd.lock_refresh": 3600.0,
            "policyd.stats_interval": 0.0, "policyd.on_redis_error": "defer",
            "ratelimit.limit": LIMIT, "redis.url": "redis://127.0.0.1:6379/0",
            "redis.sentinels": ss.addresses, "redis.sentinel_service": ss.service,
            "logging.level": "info"})
        listens.append(listen)
        daemons.append(Daemon("policyd", cfg, listen, tmp_path / f"policyd{i}.log"))
    try:
        for d in daemons:
            d.start()
        _run(ss, daemons, listens, cfg)
    finally:
        for d in daemons:
            d.stop()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60)


def _run(ss: SentinelSet, daemons: list[Daemon], listens: list[str], cfg: Path) -> None:
    answers: list[Answer] = []
    seq = iter(range(10**9))
    stop = asyncio.Event()
    old_port = ss.current_master().port
    marks: dict[str, float] = {}

    async def worker(d: int) -> None:
        client = PolicyClient(listens[d], timeout_s=20.0)
        try:
            while not stop.is_set():
                n = next(seq)
                t0 = time.monotonic()
                try:
                    action = await client.ask(rcpt_request(
                        f"u{n}@ninhbinh.gov.vn", f"r{n}@gmail.com", f"load-{n}"))
                except (OSError, ConnectionError, TimeoutError) as e:
                    action = f"connection error {type(e).__name__}"
                answers.append(Answer(d, t0, time.monotonic(), action))
        finally:
            await client.close()

    async def lock_by_rate(d: int, account: str) -> str:
        client = PolicyClient(listens[d])
        try:
            last = ""
            for i in range(LIMIT + 1):
                last = await client.ask(rcpt_request(account, f"x{i}@gmail.com", f"{account}-{i}"))
            return last
        finally:
            await client.close()

    async def ask_once(d: int, account: str, rcpt: str) -> str:
        client = PolicyClient(listens[d])
        try:
            return await client.ask(rcpt_request(account, rcpt, f"probe-{time.monotonic()}"))
        finally:
            await client.close()

    async def resumed(d: int) -> bool:
        """This daemon has answered DUNNO to a load request sent after the kill."""
        return any(a.daemon == d and a.sent > marks["kill"] and a.action == "DUNNO"
                   for a in answers)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(worker(d)) for d in range(2) for _ in range(WORKERS)]
        await asyncio.sleep(1.0)
        # Locks made before the failover, under load: two rate locks (one through each
        # daemon) and an operator lock.
        for d in range(2):
            refusal = await lock_by_rate(d, f"rate{d}@ninhbinh.gov.vn")
            assert refusal.startswith("550 5.7.1"), refusal
        out = await loop.run_in_executor(None, lambda: cli(
            cfg, "lock", "ops@ninhbinh.gov.vn", "--reason", "leaked password", "--by", "t"))
        assert out.returncode == 0, out.stderr
        marks["locks_made"] = time.monotonic()
        await asyncio.sleep(0.5)
        await loop.run_in_executor(None, ss.kill_master)
        marks["kill"] = time.monotonic()  # SIGKILLed and reaped
        failover = loop.run_in_executor(None, lambda: ss.wait_failover(old_port))
        deadline = time.monotonic() + 30
        while not all([await resumed(0), await resumed(1)]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        _, marks["promoted_after"] = await failover
        await asyncio.sleep(1.0)  # steady state again
        stop.set()
        await asyncio.gather(*tasks)

        # Counting works on the new master: LIMIT pass, the next one is refused and locks,
        # alternating between the two daemons.
        fresh = "after@ninhbinh.gov.vn"
        for i in range(LIMIT):
            assert await ask_once(i % 2, fresh, f"a{i}@gmail.com") == "DUNNO"
        assert (await ask_once(LIMIT % 2, fresh, "last@gmail.com")).startswith("550 5.7.1")

        # No lock made before the failover is lost: in Redis (the new master) and in
        # both daemons' lists (an internal recipient is decided from that list alone).
        out = await loop.run_in_executor(None, lambda: cli(cfg, "locks"))
        for account in ("rate0@ninhbinh.gov.vn", "rate1@ninhbinh.gov.vn",
                        "ops@ninhbinh.gov.vn", fresh):
            assert account in out.stdout, (account, out.stdout, out.stderr)
            for d in range(2):
                assert (await ask_once(d, account, INTERNAL)).startswith("550 5.7.1"), \
                    (account, d)

        # The lock channel follows the new master: a lock made now reaches both daemons.
        for daemon in daemons:
            deadline = time.monotonic() + 20
            while daemon.log_text().count("lock channel subscribed") < 2 and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert daemon.log_text().count("lock channel subscribed") >= 2, \
                daemon.log_text()[-2000:]
        out = await loop.run_in_executor(None, lambda: cli(
            cfg, "lock", "late@ninhbinh.gov.vn", "--reason", "after failover", "--by", "t"))
        assert out.returncode == 0, out.stderr
        t0 = time.monotonic()
        for d in range(2):
            while not (await ask_once(d, "late@ninhbinh.gov.vn", INTERNAL)).startswith("550") \
                    and time.monotonic() - t0 < 2.0:
                await asyncio.sleep(0.01)
            assert (await ask_once(d, "late@ninhbinh.gov.vn", INTERNAL)).startswith("550")
        marks["late_lock_seen"] = time.monotonic() - t0

    asyncio.run(scenario())
    report(answers, marks, daemons)


def report(answers: list[Answer], marks: dict[str, float], daemons: list[Daemon]) -> None:
    kill = marks["kill"]
    before = [a for a in answers if a.done < kill]
    span = max(a.done for a in before) - min(a.sent for a in before)
    lines = [f"load before the kill: {len(before)} answers in {span:.1f}s "
             f"({len(before) / span:.0f}/s, 2 daemons x {WORKERS} connections)",
             f"sentinels named the new master {marks['promoted_after']:.2f}s after the kill"]
    for d in range(2):
        mine = sorted((a for a in answers if a.daemon == d and a.sent >= kill),
                      key=lambda a: a.sent)
        last_error = max((a.sent for a in mine if a.action != "DUNNO"), default=kill)
        first_ok = next(a for a in mine if a.action == "DUNNO" and a.sent >= last_error)
        meanwhile = [a for a in mine if a.sent < first_ok.sent]
        tally = Counter(re.sub(r"^(\d{3} \d\.\d\.\d).*", r"\1", a.action) for a in meanwhile)
        slowest = max((a.done - a.sent for a in meanwhile), default=0.0)
        lines.append(
            f"policyd{d}: counting resumed {first_ok.sent - kill:.2f}s after the kill; "
            f"answered meanwhile: {dict(tally)}; slowest answer {slowest * 1000:.0f} ms")
        assert all(a.action.startswith("451 4.7.1") or a.action == "DUNNO"
                   for a in meanwhile), tally
    lines.append("locks made before the failover and lost: 0 of 3")
    lines.append(f"a lock made after the failover reached both daemons in "
                 f"{marks['late_lock_seen'] * 1000:.0f} ms")
    print("\nSentinel failover figures:\n  " + "\n  ".join(lines))
