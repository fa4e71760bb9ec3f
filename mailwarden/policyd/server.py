"""asyncio server for the policy protocol: sockets, limits, time budget, shutdown.

One `PolicyConnection` per Postfix connection, reused for many requests.
Requests on one connection are answered in order; every answer is given
within `policyd.answer_timeout`, whatever Redis does, so Postfix never times
out on us and applies its own default_action without a mailwarden log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import cast

from mailwarden import logs
from mailwarden.addresses import ListenAddress, parse_listen
from mailwarden.config import Config
from mailwarden.policyd.codec import Decoder, ProtocolError, encode_action
from mailwarden.policyd.service import DUNNO, PolicyService

log = logging.getLogger("mailwarden.policyd")

_MAX_QUEUED = 32  # requests pipelined on one connection before we call it abuse


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op without NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), addr)


class PolicyConnection(asyncio.Protocol):
    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.decoder = Decoder(server.max_line, server.max_attrs)
        self.queue: deque[dict[str, str]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.idle: asyncio.TimerHandle | None = None
        self.last_active = 0.0

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        if len(self.server.connections) >= self.server.max_connections:
            log.warning("too many connections (%d), closing one from %s",
                        len(self.server.connections), self.peer)
            self.transport.abort()
            return
        self.server.connections.add(self)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.idle:
            self.idle.cancel()
            self.idle = None
        if self.worker and not self.worker.done() and self.server.closing:
            return  # let the request in flight finish during shutdown
        if self.worker:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            requests = self.decoder.feed(data)
        except ProtocolError as e:
            self._malformed(str(e))
            return
        self.queue.extend(requests)
        if len(self.queue) > _MAX_QUEUED:
            self._malformed(f"more than {_MAX_QUEUED} requests pipelined")
            return
        if self.queue and (self.worker is None or self.worker.done()):
            self.worker = asyncio.get_running_loop().create_task(self._work())

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- internals -----------------------------------------------------------
    def _touch(self) -> None:
        # Remember when; one timer per connection re-arms itself (cancelling and
        # re-creating a timer on every read cost ~1 us a request: benchmarks/policyd.md).
        loop = asyncio.get_running_loop()
        self.last_active = loop.time()
        if self.idle is None:
            self.idle = loop.call_later(self.server.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        loop = asyncio.get_running_loop()
        left = self.last_active + self.server.idle_timeout - loop.time()
        busy = bool(self.queue) or (self.worker is not None and not self.worker.done())
        if left > 0 or busy:
            self.idle = loop.call_later(left if left > 0 else self.server.idle_timeout,
                                        self._idle_check)
            return
        self.idle = None
        if self.transport:
            self.transport.close()

    def _malformed(self, why: str) -> None:
        self.server.service.stats.malformed += 1
        log.warning("malformed request from %s: %s; disconnecting", self.peer, logs.escape(why))
        self.queue.clear()
        if self.transport:
            self.transport.abort()

    async def _work(self) -> None:
        while self.queue:
            attrs = self.queue.popleft()
            action = await self.server.answer(attrs)
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(encode_action(action))


class PolicyServer:
    def __init__(self, cfg: Config, service: PolicyService) -> None:
        self.cfg = cfg
        self.service = service
        self.listen: ListenAddress = parse_listen(cfg["policyd.listen"])
        self.max_line = cfg["policyd.max_line_bytes"]
        self.max_attrs = cfg["policyd.max_attributes"]
        self.max_connections = cfg["policyd.max_connections"]
        self.idle_timeout = cfg["policyd.idle_timeout"]
        self.answer_timeout = cfg["policyd.answer_timeout"]
        self.connections: set[PolicyConnection] = set()
        self.inflight = 0
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def answer(self, attrs: Mapping[str, str]) -> str:
        self.inflight += 1
        try:
            async with asyncio.timeout(self.answer_timeout):
                return await self.service.handle(attrs)
        except TimeoutError as e:
            return self.service.backend_failure(
                attrs, attrs.get("protocol_state", "").upper(),
                TimeoutError(f"no answer within {self.answer_timeout:g}s") if not str(e) else e)
        except Exception:
            # A bug must not take the daemon down or leave Postfix waiting.
            log.exception("internal error answering a request; answering DUNNO")
            return DUNNO
        finally:
            self.inflight -= 1

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.listen.family == "unix":
            path = self.listen.path
            with contextlib.suppress(FileNotFoundError):
                if os.path.exists(path) and not os.path.isdir(path):
                    os.unlink(path)  # stale socket of a previous run
            self._server = await loop.create_unix_server(
                lambda: PolicyConnection(self), path, backlog=512)
            os.chmod(path, int(self.cfg["policyd.socket_mode"], 8))
        else:
            self._server = await loop.create_server(
                lambda: PolicyConnection(self), self.listen.host, self.listen.port,
                backlog=512, reuse_address=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain and close."""
        await self.service.refresh_locks()
        await self.start()
        started = time.monotonic()
        self._tasks.append(asyncio.create_task(
            self.service.lock_refresher(self.cfg["policyd.lock_refresh"])))
        interval = self.cfg["policyd.stats_interval"]
        if interval > 0:
            self._tasks.append(asyncio.create_task(self._stats(interval, started)))
        log.info("listening on %s (profile %s, limit %d per %gs, mode %s, on_redis_error %s)",
                 self.listen, self.cfg.profile.name, self.service.s.limit,
                 self.service.s.window_s, self.cfg["ratelimit.mode"],
                 self.cfg["policyd.on_redis_error"])
        sd_notify("READY=1")
        await stop.wait()
        sd_notify("STOPPING=1")
        await self.shutdown()
        log.info("%s", self.service.stats.line(time.monotonic() - started))

    async def _stats(self, interval: float, started: float) -> None:
        while True:
            await asyncio.sleep(interval)
            log.info("%s", self.service.stats.line(time.monotonic() - started))

    async def shutdown(self) -> None:
        self.closing = True
        if self._server:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        deadline = time.monotonic() + self.cfg["policyd.shutdown_grace"]
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn.transport:
                conn.transport.close()
        if self.listen.family == "unix":
            with contextlib.suppress(OSError):
                os.unlink(self.listen.path)
        await self.service.store.close()


def run(cfg: Config) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from mailwarden.clock import SystemClock
    from mailwarden.policyd.lockcache import LockCache
    from mailwarden.store.redis_store import RedisStore

    try:
        import uvloop  # optional: measured in benchmarks/policyd.md

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        store = RedisStore(cfg["redis.url"], prefix=cfg["redis.key_prefix"],
                           timeout_s=cfg["redis.timeout"], sentinels=cfg["redis.sentinels"],
                           sentinel_service=cfg["redis.sentinel_service"],
                           batching=cfg["redis.batching"])
        cache = LockCache(cfg["policyd.lock_snapshot"], cfg["lock.expire_after"])
        if n := cache.load_snapshot():
            log.info("loaded %d locks from snapshot %s", n, cfg["policyd.lock_snapshot"])
        service = PolicyService(cfg, store, SystemClock(), cache)
        server = PolicyServer(cfg, service)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop)

    asyncio.run(main())
    return 0
