"""The policy server in-process: real sockets, real Redis, fake clock.

Redis is a private redis-server (fixture `redis_server`); the server listens
on a unix socket in tmp_path. These tests check the protocol behaviour an
smtpd sees: answers, refusals, disconnects and the failure policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mailwarden.clock import FakeClock
from mailwarden.config import load_config
from mailwarden.policyd.lockcache import LockCache
from mailwarden.policyd.server import PolicyServer
from mailwarden.policyd.service import PolicyService
from mailwarden.store.redis_store import RedisStore

pytestmark = pytest.mark.integration


def request(**kw: str) -> bytes:
    attrs = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
             "protocol_name": "ESMTP", "client_address": "10.20.30.40", "client_name": "pc1",
             "instance": "a1.b2", "sender": "", "recipient": "", "sasl_username": "",
             "queue_id": ""}
    attrs.update(kw)
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def out(user: str, rcpt: str, **kw: str) -> bytes:
    return request(sasl_username=user, sender=user, recipient=rcpt, **kw)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, data: bytes) -> str:
        self.writer.write(data)
        await self.writer.drain()
        reply = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), 5)
        return reply.decode().removeprefix("action=").strip()


@contextlib.asynccontextmanager
async def policy_server(tmp_path: Path, redis_url: str, **over: Any
                        ) -> AsyncIterator[tuple[PolicyServer, Callable[[], Awaitable[Client]]]]:
    sock = tmp_path / f"p{uuid.uuid4().hex[:6]}.sock"
    cfg = load_config(None, {
        "policyd.listen": f"unix:{sock}", "redis.url": redis_url,
        "redis.key_prefix": f"c{uuid.uuid4().hex[:8]}", "ratelimit.limit": 3,
        "policyd.answer_timeout": 1.0, "redis.timeout": 0.5, **over})
    store = RedisStore(cfg["redis.url"], prefix=cfg["redis.key_prefix"],
                       timeout_s=cfg["redis.timeout"])
    service = PolicyService(cfg, store, FakeClock(), LockCache())
    server = PolicyServer(cfg, service)
    await service.refresh_locks()
    await server.start()

    clients: list[Client] = []

    async def connect() -> Client:
        clients.append(Client(*await asyncio.open_unix_connection(str(sock))))
        return clients[-1]

    try:
        yield server, connect
    finally:
        await server.shutdown()
        for c in clients:
            c.writer.close()
            with contextlib.suppress(OSError):
                await c.writer.wait_closed()


def arun(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"


def test_limit_lock_and_what_a_lock_means(tmp_path: Path, redis_server: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> list[str]:
        async with policy_server(tmp_path, redis_server.url) as (_, connect):
            c = await connect()
            answers = [await c.ask(out(ALICE, f"x{i}@gmail.com")) for i in range(4)]
            answers.append(await c.ask(out(ALICE, BOB)))  # internal, but locked
            answers.append(await c.ask(request(sender="x@gmail.com", recipient=ALICE,
                                               client_address="203.0.113.5")))  # to alice
            answers.append(await c.ask(out(BOB, "y@gmail.com")))  # another user
            answers.append(await c.ask(out(ALICE, "", protocol_state="END-OF-MESSAGE")))
            return answers

    with caplog.at_level(logging.INFO, logger="mailwarden.policyd"):
        a = arun(go())
    assert a[:3] == ["DUNNO"] * 3
    assert a[3].startswith("550 5.7.1 Vuot gioi han 3 nguoi nhan/10m")
    assert a[4].startswith("550 5.7.1 Hop thu bi tam khoa") and "Dieu 7.1" in a[4]
    assert a[5:] == ["DUNNO", "DUNNO", "DUNNO"]
    lines = [r.getMessage() for r in caplog.records]
    # One decision, one line: the refusal that locks says so (no separate "lock" line).
    over_line = ("NOQUEUE: reject: RCPT from pc1[10.20.30.40]: "
                 "rule=ratelimit.external_recipients count=4 limit=3 window=10m locked=yes "
                 "account=alice@ninhbinh.gov.vn; ")
    assert sum(line.startswith(over_line) for line in lines) == 1
    assert not any(": lock: " in line for line in lines)
    assert sum(": reject: RCPT" in line for line in lines) == 2


@pytest.mark.parametrize("garbage", [
    pytest.param(b"this is not a policy request\n\n", id="no-equals"),
    pytest.param(b"request=smtpd_access_policy\nsender=\xff\n\n", id="not-utf8"),
    pytest.param(b"request=smtpd_access_policy\nsender=" + b"a" * 20000, id="overlong-line"),
    pytest.param(b"protocol_state=RCPT\n\n", id="no-request"),
])
def test_malformed_request_closes_only_that_connection(tmp_path: Path, redis_server: Any,
                                                       garbage: bytes) -> None:
    async def go() -> tuple[bytes, str, int]:
        async with policy_server(tmp_path, redis_server.url) as (server, connect):
            bad = await connect()
            bad.writer.write(garbage)
            closed = await asyncio.wait_for(bad.reader.read(), 5)
            good = await connect()
            return closed, await good.ask(out(ALICE, "x@gmail.com")), \
                server.service.stats.malformed

    closed, answer, malformed = arun(go())
    assert closed == b"" and answer == "DUNNO" and malformed == 1


def test_one_connection_many_requests_pipelined(tmp_path: Path, redis_server: Any) -> None:
    async def go() -> list[str]:
        async with policy_server(tmp_path, redis_server.url,
                                 **{"ratelimit.limit": 100}) as (_, connect):
            c = await connect()
            c.writer.write(b"".join(out(ALICE, f"x{i}@gmail.com") for i in range(10)))
            await c.writer.drain()
            data = b""
            while data.count(b"\n\n") < 10:
                data += await asyncio.wait_for(c.reader.read(4096), 5)
            return data.decode().split("\n\n")[:-1]

    assert arun(go()) == ["action=DUNNO"] * 10


@pytest.mark.parametrize("policy,expected", [("accept", "DUNNO"), ("defer", "451 4.7.1 ")])
def test_redis_unreachable_failure_policy(tmp_path: Path, policy: str, expected: str) -> None:
    async def go() -> list[str]:
        async with policy_server(tmp_path, f"unix://{tmp_path}/nothing-here.sock",
                                 **{"policyd.on_redis_error": policy}) as (server, connect):
            c = await connect()
            answers = [await c.ask(out(ALICE, "x@gmail.com")),
                       await c.ask(request(sender="x@gmail.com", recipient=ALICE))]
            return [*answers, str(server.service.stats.redis_errors)]

    a = arun(go())
    assert a[0].startswith(expected)
    assert a[1] == "DUNNO"  # inbound mail never needs Redis
    assert a[2] == "1"


def test_known_locks_hold_while_redis_is_down(tmp_path: Path, redis_server: Any) -> None:
    async def go() -> list[str]:
        async with policy_server(tmp_path, redis_server.url) as (_, connect):
            c = await connect()
            for i in range(4):
                await c.ask(out(ALICE, f"x{i}@gmail.com"))
            redis_server.stop()
            try:
                return [await c.ask(out(ALICE, "y@gmail.com")),  # cache: still locked
                        await c.ask(out(ALICE, BOB)),
                        await c.ask(out(BOB, "y@gmail.com"))]  # fail-open for the rest
            finally:
                redis_server.start()

    a = arun(go())
    assert a[0].startswith("550 5.7.1 Hop thu bi tam khoa")
    assert a[1].startswith("550 5.7.1 Hop thu bi tam khoa")
    assert a[2] == "DUNNO"


def test_answer_within_budget_when_redis_hangs(tmp_path: Path) -> None:
    """A Redis that accepts but never answers: we still answer, by our own deadline."""
    hang = tmp_path / "hang.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(hang))
    listener.listen(64)

    async def go() -> tuple[str, int]:
        async with policy_server(tmp_path, f"unix://{hang}", **{
                "policyd.on_redis_error": "defer", "policyd.answer_timeout": 0.3,
                "redis.timeout": 5.0}) as (server, connect):
            c = await connect()
            return await c.ask(out(ALICE, "x@gmail.com")), server.service.stats.redis_errors

    try:
        answer, errors = arun(go())
    finally:
        listener.close()
    assert answer.startswith("451 4.7.1") and errors == 1


def test_locked_account_is_refused_at_every_rcpt_but_eom_is_not(tmp_path: Path,
                                                                redis_server: Any) -> None:
    async def go() -> list[str]:
        async with policy_server(tmp_path, redis_server.url) as (server, connect):
            await server.service.store.lock(ALICE, reason="virus on PC", by="ops", now=1.0)
            await server.service.refresh_locks()
            c = await connect()
            return [await c.ask(out(ALICE, BOB)), await c.ask(out(ALICE, "x@gmail.com")),
                    await c.ask(out(ALICE, "", protocol_state="END-OF-MESSAGE"))]

    a = arun(go())
    assert all(x.startswith("550 5.7.1 Hop thu bi tam khoa") and "virus on PC" in x
               for x in a[:2])
    assert "Dieu 7.2" in a[0] and a[2] == "DUNNO"


def test_idle_connections_are_closed_active_ones_are_not(tmp_path: Path,
                                                         redis_server: Any) -> None:
    async def go() -> tuple[str, bytes]:
        async with policy_server(tmp_path, redis_server.url,
                                 **{"policyd.idle_timeout": 0.3}) as (_, connect):
            active, idle = await connect(), await connect()
            closing = asyncio.ensure_future(asyncio.wait_for(idle.reader.read(), 5))
            answer = ""
            while not closing.done():  # keep one connection busy until the other is closed
                answer = await active.ask(out(ALICE, "x@ninhbinh.gov.vn"))
            answer = await active.ask(out(ALICE, "y@ninhbinh.gov.vn"))  # still open
            return answer, closing.result()

    last, closed = arun(go())
    assert last == "DUNNO" and closed == b""
