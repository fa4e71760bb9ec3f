"""PolicyService.refresh_locks against a real redis-server: what a daemon keeps, puts
back and drops when Redis's lock list and its own copy disagree (issue 13)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailwarden.clock import FakeClock
from mailwarden.config import load_config
from mailwarden.policyd.lockcache import LockCache
from mailwarden.policyd.service import PolicyService
from mailwarden.rules.ratelock import LockInfo
from mailwarden.store.redis_store import RedisStore

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"
T0 = 1_760_000_000.0


def service(redis_url: str, prefix: str, snapshot: Path, clock: FakeClock,
            expire_s: float = 0.0) -> PolicyService:
    cfg = load_config(None, {"redis.url": redis_url, "redis.key_prefix": prefix,
                             "lock.expire_after": expire_s})
    store = RedisStore(redis_url, prefix=prefix)
    cache = LockCache(str(snapshot), expire_s)
    cache.load_snapshot()
    return PolicyService(cfg, store, clock, cache)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_lock_deleted_behind_our_back_is_put_back_and_audited(
        tmp_path: Path, redis_server: Any) -> None:
    """Same epoch, the lock key gone without an unlock (a DEL by hand, a replica that
    missed it): Redis saying nothing lifts nothing."""
    prefix = f"t{uuid.uuid4().hex[:6]}"

    async def go() -> tuple[list[str], list[dict[str, str]], bool]:
        s = service(redis_server.url, prefix, tmp_path / "locks.json", FakeClock(T0))
        await s.store.lock(ALICE, reason="virus", by="ops", now=T0)
        await s.refresh_locks()
        await s.store.client.delete(s.store.keys.account(ALICE).lock)
        await s.store.client.srem(s.store.keys.lock_index, ALICE)
        await s.refresh_locks()
        locks = [lk.account for lk in await s.store.list_locks()]
        audit = await s.store.audit(10)
        held = s.locks.get(ALICE, T0) is not None
        await s.store.close()
        return locks, audit, held

    locks, audit, held = run(go())
    assert locks == [ALICE] and held
    assert audit[0]["action"] == "restore" and audit[0]["source"] == "memory"
    assert audit[0]["why"] == "missing from redis, no unlock in the audit stream"


def test_rate_lock_restored_with_what_is_left_of_its_expiry(
        tmp_path: Path, redis_server: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    clock = FakeClock(T0)

    async def go() -> tuple[int, bool, list[str]]:
        s = service(redis_server.url, prefix, tmp_path / "locks.json", clock, expire_s=3600)
        s.locks.add(LockInfo(ALICE, "over 3", T0 - 600, "rate", "policyd", 4))  # 50 min left
        s.locks.add(LockInfo(BOB, "over 3", T0 - 3590, "rate", "policyd", 4))  # 10 s left
        await s.refresh_locks()  # Redis is new: both missing
        ttl = await s.store.client.pttl(s.store.keys.account(ALICE).lock)
        bob_kept = s.locks.get(BOB, clock.now()) is not None
        in_redis = [lk.account for lk in await s.store.list_locks()]
        await s.store.close()
        return ttl, bob_kept, in_redis

    ttl, bob_kept, in_redis = run(go())
    assert 2990_000 < ttl <= 3000_000
    assert in_redis == [ALICE]  # bob's lock lapses in 10 s: kept here, not written back
    assert bob_kept


def test_after_a_loss_the_audit_stream_brings_back_a_lock_nobody_remembers(
        tmp_path: Path, redis_server: Any) -> None:
    """The epoch and the lock keys are gone but the audit stream survived: a daemon with
    no copy of its own restores from it; an account whose newest event is an unlock is
    left alone."""
    prefix = f"t{uuid.uuid4().hex[:6]}"

    async def go() -> tuple[list[str], dict[str, str]]:
        first = service(redis_server.url, prefix, tmp_path / "a.json", FakeClock(T0))
        await first.store.lock(ALICE, reason="takeover", by="ops", now=T0)
        await first.store.lock(BOB, reason="virus", by="ops", now=T0)
        await first.store.unlock(BOB, reason="cleaned", by="ops")
        k = first.store.keys
        await first.store.client.delete(k.epoch, k.account(ALICE).lock, k.lock_index)
        await first.store.close()
        fresh = service(redis_server.url, prefix, tmp_path / "b.json", FakeClock(T0 + 60))
        await fresh.refresh_locks()
        locks = [lk.account for lk in await fresh.store.list_locks()]
        newest = (await fresh.store.audit(1))[0]
        await fresh.store.close()
        return locks, newest

    locks, newest = run(go())
    assert locks == [ALICE]
    assert newest["action"] == "restore" and newest["source"] == "audit"
    assert newest["locked_by"] == "ops" and newest["reason"] == "takeover"


def test_snapshot_of_an_older_version_loads_and_gains_the_epoch(tmp_path: Path,
                                                                 redis_server: Any) -> None:
    snap = tmp_path / "locks.json"
    snap.write_text(json.dumps([{"account": ALICE, "reason": "virus", "since": T0,
                                 "kind": "manual", "by": "ops", "count": 0}]))
    prefix = f"t{uuid.uuid4().hex[:6]}"

    async def go() -> PolicyService:
        s = service(redis_server.url, prefix, snap, FakeClock(T0))
        await s.refresh_locks()
        await s.store.close()
        return s

    s = run(go())
    data = json.loads(snap.read_text())
    assert data["epoch"] and data["epoch"] == s.locks.epoch
    assert [lk["account"] for lk in data["locks"]] == [ALICE]


def test_events_applied_during_a_refresh_are_not_undone_by_it(
        tmp_path: Path, redis_server: Any) -> None:
    """A published lock or unlock that arrives while the refresh is reading Redis is newer
    than what the refresh read: it stays applied."""
    prefix = f"t{uuid.uuid4().hex[:6]}"

    async def go() -> tuple[bool, bool]:
        s = service(redis_server.url, prefix, tmp_path / "locks.json", FakeClock(T0))
        await s.store.lock(ALICE, reason="virus", by="ops", now=T0)
        await s.refresh_locks()
        read = s.store.list_locks

        async def list_then_events() -> list[LockInfo]:
            got = await read()
            s.locks.add(LockInfo(BOB, "takeover", T0, "manual", "ops"))  # published lock
            s.locks.remove(ALICE)  # published unlock
            return got

        s.store.list_locks = list_then_events  # type: ignore[method-assign]
        await s.refresh_locks()
        result = s.locks.get(BOB, T0) is not None, s.locks.get(ALICE, T0) is None
        await s.store.close()
        return result

    assert run(go()) == (True, True)
