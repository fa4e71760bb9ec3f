"""Locks outlive Redis's data (issue 13): real policy daemons, a real redis-server run
without persistence, so that a restart empties it.

The daemons' periodic refresh is set to an hour: what puts a lock back is the
reconciliation that follows the lock channel's resubscription after the restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.procs import wait_until
from harness.redis import RedisInstance
from tests.component.test_policy_server import ALICE, BOB, out
from tests.integration.test_policyd_edges import Policyd, locked, policyd_factory

pytestmark = pytest.mark.integration

__all__ = ["policyd_factory"]  # the fixture, imported for this module's tests


def cli_json(config: Path, *args: str) -> object:
    r = subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(config), *args,
                        "--json"], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(r.stdout)


def locked_accounts(config: Path) -> list[str]:
    return [lk["account"] for lk in cli_json(config, "locks")]  # type: ignore[union-attr,index]


def audit(config: Path) -> list[dict[str, str]]:
    return cli_json(config, "audit", "-n", "100")  # type: ignore[return-value]


def restart(p: Policyd) -> Policyd:
    """Stop and start the same daemon (the fixture stops it at the end)."""
    p.daemon.stop()
    p.daemon.start()
    return p


def restart_redis_empty(redis_server: RedisInstance, *daemons: Policyd) -> None:
    """Stop and start redis-server without persistence (its data is gone), then wait until
    every daemon has resubscribed (and so reconciled its lock list)."""
    before = [p.daemon.log_text().count("lock channel subscribed") for p in daemons]
    redis_server.stop()
    redis_server.start()
    for p, n in zip(daemons, before, strict=True):
        wait_until(lambda p=p, n=n: p.daemon.log_text().count("lock channel subscribed") > n,  # type: ignore[misc]
                   30, "resubscribed after the Redis restart", p.daemon.alive, p.daemon.log)


def test_lock_survives_redis_restart_without_its_data_on_every_daemon(
        policyd_factory: Callable[..., Policyd], redis_server: RedisInstance) -> None:
    a, b = policyd_factory("a"), policyd_factory("b")
    a.cli("lock", ALICE, "--reason", "leaked password", "--by", "ops")
    for p in (a, b):
        answer, _ = p.until(out(ALICE, BOB), locked)
        assert locked(answer), answer
    redis_server.stop()
    redis_server.start()  # empty: no appendonly, no RDB
    # At once, before any reconciliation: both refuse from their own copies.
    for p in (a, b):
        assert locked(p.ask(out(ALICE, "x@gmail.com"))), "unlocked by an empty Redis"
    wait_until(lambda: ALICE in locked_accounts(a.config), 30, "the lock restored in Redis")
    restored = [e for e in audit(a.config) if e["action"] == "restore"]
    assert len(restored) == 1, restored  # two daemons raced; one restore, one audit entry
    assert restored[0]["account"] == ALICE and restored[0]["locked_by"] == "ops"
    assert restored[0]["reason"] == "leaked password"
    assert restored[0]["source"] in ("memory", "snapshot")
    for p in (a, b):
        wait_until(lambda p=p: "redis lost its data" in p.daemon.log_text(), 30,  # type: ignore[misc]
                   "the loss noticed", p.daemon.alive, p.daemon.log)
        assert locked(p.ask(out(ALICE, BOB))) and locked(p.ask(out(ALICE, "x@gmail.com")))
    assert sum("lock restored" in p.daemon.log_text() for p in (a, b)) == 1
    # The `locks` command shows it with its original reason; a restarted daemon keeps it.
    lk = cli_json(a.config, "locks")[0]  # type: ignore[index]
    assert lk["reason"] == "leaked password" and lk["kind"] == "manual"
    b = restart(b)
    assert locked(b.ask(out(ALICE, BOB)))

    # Only an explicit unlock lifts it, and a second loss does not bring it back.
    a.cli("unlock", ALICE, "--reason", "password changed", "--by", "ops")
    for p in (a, b):
        answer, _ = p.until(out(ALICE, BOB), lambda x: x == "DUNNO")
        assert answer == "DUNNO"
    restart_redis_empty(redis_server, a, b)
    assert a.ask(out(ALICE, "x@gmail.com")) == "DUNNO"
    assert b.ask(out(ALICE, "x@gmail.com")) == "DUNNO"
    assert locked_accounts(a.config) == []


def test_unlock_made_while_a_daemon_was_down_is_not_undone_by_its_snapshot(
        policyd_factory: Callable[..., Policyd]) -> None:
    """The daemon's snapshot still holds the lock; Redis has the same epoch and no lock;
    the audit's newest event for the account is the unlock: the lock is dropped."""
    a = policyd_factory("a")
    a.cli("lock", ALICE, "--reason", "virus on PC", "--by", "ops")
    a.until(out(ALICE, BOB), locked)
    a.daemon.stop()
    assert ALICE in a.daemon.config.with_suffix(".locks.json").read_text()
    a.cli("unlock", ALICE, "--reason", "cleaned", "--by", "ops")
    a = restart(a)
    answer, _ = a.until(out(ALICE, BOB), lambda x: x == "DUNNO")
    assert answer == "DUNNO"
    assert locked_accounts(a.config) == []
    assert not [e for e in audit(a.config) if e["action"] == "restore"]


def test_daemon_restarted_while_redis_is_down_keeps_its_locks(
        policyd_factory: Callable[..., Policyd], redis_server: RedisInstance) -> None:
    """The shipped default keeps a snapshot on disk: a daemon restarted during a Redis
    outage refuses the locked account at once, then puts the lock back when Redis returns
    empty."""
    a = policyd_factory("a")
    a.cli("lock", ALICE, "--reason", "takeover", "--by", "ops")
    a.until(out(ALICE, BOB), locked)
    redis_server.stop()
    a = restart(a)
    assert locked(a.ask(out(ALICE, "x@gmail.com")))
    redis_server.start()
    wait_until(lambda: ALICE in locked_accounts(a.config), 30, "the lock restored")
    restored = [e for e in audit(a.config) if e["action"] == "restore"]
    assert [e["source"] for e in restored] == ["snapshot"], restored


def test_new_lock_waits_for_the_replica_bounded(tmp_path: Path) -> None:
    """redis.replica_wait: after a lock, WAIT until the replica has it; a replica that
    does not answer (frozen) costs at most the bound, and the lock stands."""
    import asyncio
    import os
    import signal
    import time

    from mailwarden.store.redis_store import RedisStore

    master = RedisInstance(tmp_path / "master", tcp=True).start()
    replica = RedisInstance(tmp_path / "replica", tcp=True, extra_args=(
        "--replicaof", "127.0.0.1", str(master.port))).start()
    try:
        async def role_up(store: RedisStore) -> bool:
            return bool((await store.client.execute_command("ROLE"))[2])

        async def go() -> tuple[tuple[int, int], tuple[int, int], float, bool]:
            store = RedisStore(master.url, replica_wait_s=0.3, timeout_s=1.0)
            t0 = time.monotonic()
            while not await role_up(store) and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.05)
            await store.lock(ALICE, reason="virus", by="ops", now=time.time())
            acked = await store.wait_replicas()
            os.kill(replica.pid, signal.SIGSTOP)
            try:
                await store.lock(BOB, reason="virus", by="ops", now=time.time())
                t1 = time.monotonic()
                frozen = await store.wait_replicas()
                took = time.monotonic() - t1
            finally:
                os.kill(replica.pid, signal.SIGCONT)
            held = await store.get_lock(BOB) is not None
            await store.close()
            return acked, frozen, took, held

        acked, frozen, took, held = asyncio.run(go())
        assert acked == (1, 1)
        assert frozen == (0, 1) and took < 5.0 and held
    finally:
        replica.stop()
        master.stop()
