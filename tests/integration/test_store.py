"""store/: the Lua scripts against a real redis-server (private instance, unix socket).

Time is passed in (ARGV now_ms), so the window's edges are tested exactly and
without sleeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mailwarden.store.redis_store import RedisStore

pytestmark = pytest.mark.integration

T0 = 1_760_000_000.0
A = "alice@ninhbinh.gov.vn"


def run(redis_url: str, fn: Callable[[RedisStore], Awaitable[Any]]) -> Any:
    """Run `fn` with a store of its own key prefix (tests may share one server)."""

    async def go() -> Any:
        store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}", timeout_s=2.0)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def reserve(st: RedisStore, member: str, now: float, *, limit: int = 3, instance: str = "i1",
            enforce: bool = True, window_s: float = 600, ttl_s: float = 1800) -> Any:
    return st.reserve(A, instance, member, now=now, window_s=window_s, limit=limit,
                      reserve_ttl_s=ttl_s, enforce=enforce, lock_expire_s=0,
                      lock_reason="over 3 external recipients in 10m")


def test_limit_edge_locks_on_the_first_item_over(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        out = [await reserve(st, f"r:i1:x{i}@gmail.com", T0 + i) for i in range(4)]
        out.append(await reserve(st, "r:i1:bob@ninhbinh.example", T0 + 5))
        return [*out, await st.get_lock(A), await st.list_locks(), await st.audit(10)]

    *results, lock, locks, audit = run(redis_server.url, go)
    assert [(r.status, r.count) for r in results[:3]] == [("ok", 1), ("ok", 2), ("ok", 3)]
    assert results[3].status == "over" and results[3].count == 4
    assert results[3].lock is not None and results[3].lock.kind == "rate"
    assert results[4].status == "locked"  # nothing counted once locked
    assert lock is not None and lock.reason.startswith("over 3") and lock.by == "policyd"
    assert [lk.account for lk in locks] == [A]
    assert audit[0]["action"] == "lock" and audit[0]["count"] == "4"


def test_same_recipient_in_one_message_counts_once(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[str]:
        return [(await reserve(st, "r:i1:x@gmail.com", T0)).status for _ in range(5)]

    assert run(redis_server.url, go) == ["ok", "dup", "dup", "dup", "dup"]


def test_commit_then_window_slides_exactly(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        await reserve(st, "r:i1:x@gmail.com", T0)
        await reserve(st, "r:i1:y@gmail.com", T0)
        committed = await st.commit(A, "i1", now=T0 + 1, window_s=600, keep_s=1800,
                                    queue_id="4Q8Zl02Bv1z")
        inside = await st.status(A, now=T0 + 600, window_s=600)  # 599 s after commit
        outside = await st.status(A, now=T0 + 601, window_s=600)  # exactly 600 s after
        return [committed, inside.committed, outside.committed]

    assert run(redis_server.url, go) == [(2, 2), 2, 0]


def test_uncommitted_reservations_lapse_by_themselves(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        await reserve(st, "r:i1:a@gmail.com", T0, ttl_s=60)
        await reserve(st, "r:i1:b@gmail.com", T0, ttl_s=60)
        await reserve(st, "r:i1:c@gmail.com", T0, ttl_s=60)
        before = await st.status(A, now=T0 + 59, window_s=600)
        later = await reserve(st, "r:i3:d@gmail.com", T0 + 61, instance="i3", ttl_s=60)
        return [before.pending, later.status, later.count]

    # at T0+59 the three reservations still count; at T0+61 they have lapsed
    assert run(redis_server.url, go) == [3, "ok", 1]


def test_monitor_mode_counts_but_never_locks(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        rs = [await reserve(st, f"r:i1:{i}@gmail.com", T0, enforce=False) for i in range(5)]
        return [r.status for r in rs] + [await st.get_lock(A)]

    assert run(redis_server.url, go) == ["ok", "ok", "ok", "over", "over", None]


def test_release_by_queue_id_uncounts_a_refused_message(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        await reserve(st, "r:i1:x@gmail.com", T0)
        await reserve(st, "r:i1:y@gmail.com", T0)
        await st.commit(A, "i1", now=T0, window_s=600, keep_s=1800, queue_id="4QABC")
        released = await st.release_queue_id("4QABC")
        again = await st.release_queue_id("4QABC")
        return [released, again, (await st.status(A, now=T0, window_s=600)).committed]

    assert run(redis_server.url, go) == [2, 0, 0]


def test_unlock_lifts_lock_clears_window_and_is_audited(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        for i in range(4):
            await reserve(st, f"r:i1:{i}@gmail.com", T0)
        lifted = await st.unlock(A, reason="ticket 42 verified", by="ops1")
        after = await reserve(st, "r:i9:z@gmail.com", T0 + 1, instance="i9")
        return [lifted, after.status, after.count, await st.list_locks(),
                [e["action"] for e in await st.audit(10)],
                await st.unlock(A, reason="again", by="ops1")]

    lifted, status, count, locks, actions, again = run(redis_server.url, go)
    assert (lifted, status, count, locks, again) == (True, "ok", 1, [], False)
    assert actions == ["unlock", "lock"]


def test_manual_lock_is_enforced_like_a_rate_lock(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        new = await st.lock(A, reason="leaked password (Dieu 7.2.c)", by="ops1", now=T0)
        again = await st.lock(A, reason="leaked password, confirmed", by="ops2", now=T0 + 5)
        r = await reserve(st, "r:i1:x@gmail.com", T0 + 10)
        return [new, again, r.status, r.lock.kind if r.lock else None,
                (await st.get_lock(A)).reason]  # type: ignore[union-attr]

    assert run(redis_server.url, go) == [True, False, "locked", "manual",
                                         "leaked password, confirmed"]


def test_scripts_reload_after_script_flush(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        first = await reserve(st, "r:i1:x@gmail.com", T0)
        await st.client.script_flush()
        second = await reserve(st, "r:i1:y@gmail.com", T0)
        return [first.status, second.status, second.count]

    assert run(redis_server.url, go) == ["ok", "ok", 2]


def test_concurrent_reserves_are_atomic(redis_server: Any) -> None:
    """100 recipients at once against a limit of 20: exactly 20 pass (batched pipeline)."""

    async def go(st: RedisStore) -> list[str]:
        rs = await asyncio.gather(*(
            reserve(st, f"r:i{i}:{i}@gmail.com", T0, limit=20, instance=f"i{i}",
                    enforce=False) for i in range(100)))
        return [r.status for r in rs]

    statuses = run(redis_server.url, go)
    assert statuses.count("ok") == 20 and statuses.count("over") == 80


def test_accounts_do_not_share_windows(redis_server: Any) -> None:
    async def go(st: RedisStore) -> list[Any]:
        for i in range(4):
            await reserve(st, f"r:i1:{i}@gmail.com", T0)
        other = await st.reserve("bob@ninhbinh.gov.vn", "j1", "r:j1:x@gmail.com", now=T0,
                                 window_s=600, limit=3, reserve_ttl_s=60, enforce=True,
                                 lock_expire_s=0, lock_reason="x")
        return [other.status, other.count]

    assert run(redis_server.url, go) == ["ok", 1]
