"""Slow and stalled peers, in-process (real sockets, real Redis): which connection gives
its place at max_connections, and that unfinished requests give their memory back.

The same defect against the real daemon process, with 1,000 trickling connections:
tests/integration/test_policyd_edges.py.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import pytest

from mailwarden.policyd import server as server_mod
from tests.component.test_policy_server import ALICE, BOB, arun, out, policy_server

pytestmark = pytest.mark.integration


async def until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


def test_unfinished_requests_release_their_memory_when_closed(tmp_path: Path,
                                                              redis_server: Any) -> None:
    """Before: 200 connections of unfinished requests kept 160 MB (100 attributes of 8 KB
    each, as separate strings). Now each holds at most max_request_bytes, as one buffer,
    and nothing of a closed connection stays referenced."""
    n, line = 200, b"ccert_subject=" + b"v" * 4000 + b"\n"

    async def go() -> dict[str, int]:
        async with policy_server(tmp_path, redis_server.url) as (server, connect):
            clients = [await connect() for _ in range(n)]
            for c in clients:  # 15 attribute lines each, no empty line: ~60 KB unfinished
                c.writer.write(b"request=smtpd_access_policy\n" + line * 15)
            await until(lambda: sum(c.decoder.buffered for c in server.connections)
                        >= n * 15 * len(line))
            held = sum(c.decoder.buffered for c in server.connections)
            traced_open = tracemalloc.get_traced_memory()[0]
            refs = [weakref.ref(c) for c in server.connections]
            for c in clients:
                c.writer.close()
            await until(lambda: not server.connections and not server.partial)
            gc.collect()
            traced_closed = tracemalloc.get_traced_memory()[0]
            alive = sum(r() is not None for r in refs)
            return {"held": held, "open": traced_open, "closed": traced_closed,
                    "alive": alive}

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        r = arun(go())
    finally:
        tracemalloc.stop()
    print(f"unfinished requests: {r['held'] / 1e6:.1f} MB buffered; traced memory "
          f"{(r['open'] - base) / 1e6:.1f} MB open, {(r['closed'] - base) / 1e6:.1f} MB "
          f"after close")
    assert r["held"] >= n * 15 * len(line)
    assert r["alive"] == 0  # every reference to a closed connection is gone
    assert r["open"] - base > 10_000_000
    assert r["closed"] - base < 2_000_000


def test_at_max_connections_the_stalled_then_the_longest_idle_give_way(
        tmp_path: Path, redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: at max_connections the newcomer (Postfix) was reset."""
    monkeypatch.setattr(server_mod, "_STALE_PARTIAL_S", 0.05)

    async def go() -> list[str]:
        async with policy_server(tmp_path, redis_server.url,
                                 **{"policyd.max_connections": 2}) as (server, connect):
            idle = await connect()
            assert await idle.ask(out(ALICE, BOB)) == "DUNNO"  # Postfix's: reused, idle
            stalled = await connect()
            stalled.writer.write(out(ALICE, BOB)[:-1])  # never finished
            await until(lambda: len(server.partial) == 1)
            await asyncio.sleep(0.1)  # older than _STALE_PARTIAL_S
            newcomer = await connect()
            answers = [await newcomer.ask(out(ALICE, BOB))]
            answers.append(repr(await asyncio.wait_for(stalled.reader.read(), 5)))
            answers.append(await idle.ask(out(ALICE, BOB)))  # still there
            # No stalled connection left: the longest idle one gives way.
            third = await connect()
            answers.append(await third.ask(out(ALICE, BOB)))
            answers.append(repr(await asyncio.wait_for(newcomer.reader.read(), 5)))
            answers.append(await idle.ask(out(ALICE, BOB)))
            return answers

    assert arun(go()) == ["DUNNO", "b''", "DUNNO", "DUNNO", "b''", "DUNNO"]


def test_request_timeout_drops_a_trickling_request(tmp_path: Path,
                                                   redis_server: Any) -> None:
    """Every byte re-armed the idle timer: a request trickled forever held its place."""
    async def go() -> tuple[bytes, int, str]:
        async with policy_server(tmp_path, redis_server.url,
                                 **{"policyd.request_timeout": 0.3}) as (server, connect):
            slow = await connect()
            data = out(ALICE, BOB)
            closed = None
            for i in range(len(data) - 1):
                slow.writer.write(data[i:i + 1])
                try:
                    closed = await asyncio.wait_for(slow.reader.read(), 0.05)
                    break
                except TimeoutError:
                    continue
            good = await connect()
            return b"never closed" if closed is None else closed, \
                server.service.stats.malformed, \
                await good.ask(out(ALICE, BOB))

    closed, malformed, answer = arun(go())
    assert closed == b"" and malformed == 1 and answer == "DUNNO"
