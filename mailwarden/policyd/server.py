"""asyncio server for the policy protocol: sockets, limits, time budget, shutdown.

One `PolicyConnection` per Postfix connection, reused for many requests.
Requests on one connection are answered in order; every answer is given
within `policyd.answer_timeout`, whatever Redis does, so Postfix never times
out on us and applies its own default_action without a mailwarden log line.

Slow or stalled peers cannot crowd Postfix out (docs/policyd.md, "Slow
clients"): a request must end within `policyd.request_timeout` of its first
byte; an unfinished request holds at most `policyd.max_request_bytes`, freed
when its connection goes; and at `policyd.max_connections` a newcomer takes
the place of the connection stalled longest in an unfinished request, else
of the longest idle one (Postfix reconnects an idle connection we closed at
its next request), and is refused only when every connection is mid-request.

Locks and unlocks made anywhere (the CLI, another daemon's rate lock) arrive
over Redis pub/sub and are applied to the in-process lock list at once; the
periodic refresh (`policyd.lock_refresh`) stays as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import cast

from redis.exceptions import RedisError

from mailwarden import logs, metrics
from mailwarden.addresses import ListenAddress, parse_listen
from mailwarden.config import Config
from mailwarden.policyd.codec import Decoder, ProtocolError, encode_action
from mailwarden.policyd.service import PolicyService
from mailwarden.store.redis_store import LockEvent

log = logging.getLogger("mailwarden.policyd")

_MAX_QUEUED = 32  # requests pipelined on one connection before we call it abuse
# Postfix writes a whole request at once: one still unfinished after this long is a
# stalled peer, the first to give its place to a newcomer at max_connections.
_STALE_PARTIAL_S = 1.0
_EVICT_LOG_EVERY_S = 10.0  # one warning line per this long while evicting, with a count


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
        self.decoder = Decoder(server.max_line, server.max_attrs, server.max_request)
        self.queue: deque[dict[str, str]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.idle: asyncio.TimerHandle | None = None
        self.last_active = 0.0
        self.deadline: asyncio.TimerHandle | None = None  # request_timeout of a partial request

    @property
    def busy(self) -> bool:
        """A request is queued or being answered (never evicted then)."""
        return bool(self.queue) or (self.worker is not None and not self.worker.done())

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        if len(self.server.connections) >= self.server.max_connections \
                and not self.server.make_room(self):
            log.warning("too many connections (%d, all with a request in flight), "
                        "closing the new one from %s", len(self.server.connections), self.peer)
            self.transport.abort()
            self.transport = None
            return
        self.server.connections.add(self)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.partial.pop(self, None)
        # Drop everything an unfinished request holds, now, not when the object goes.
        self.decoder.reset()
        for timer in (self.idle, self.deadline):
            if timer:
                timer.cancel()
        self.idle = self.deadline = None
        if self.worker and not self.worker.done() and self.server.closing:
            return  # let the request in flight finish during shutdown
        self.queue.clear()
        self.transport = None
        if self.worker:
            self.worker.cancel()
            self.worker = None

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            requests = self.decoder.feed(data)
        except ProtocolError as e:
            self._malformed(str(e))
            return
        if self.decoder.partial:
            if self.deadline is None:  # the first byte of a request: its clock starts
                self.server.partial[self] = self.last_active
                self.deadline = asyncio.get_running_loop().call_later(
                    self.server.request_timeout, self._too_slow)
        elif self.deadline is not None:  # the common case (one segment) never gets here
            self.deadline.cancel()
            self.deadline = None
            self.server.partial.pop(self, None)
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
        if left > 0 or self.busy:
            self.idle = loop.call_later(left if left > 0 else self.server.idle_timeout,
                                        self._idle_check)
            return
        self.idle = None
        if self.transport:
            self.transport.close()

    def _too_slow(self) -> None:
        self.deadline = None
        self._malformed(f"slow: request not finished {self.server.request_timeout:g}s after "
                        f"its first byte ({self.decoder.buffered} bytes)")

    def _malformed(self, why: str) -> None:
        self.server.service.stats.malformed += 1
        metrics.malformed()
        log.warning("malformed request from %s: %s; disconnecting", self.peer, logs.escape(why))
        self.queue.clear()
        if self.transport:
            self.transport.abort()

    def evict(self) -> None:
        """Give our place to a newcomer (PolicyServer.make_room): gone at once."""
        self.server.connections.discard(self)
        self.server.partial.pop(self, None)
        self.decoder.reset()
        if self.transport:
            self.transport.abort()

    async def _work(self) -> None:
        while self.queue:
            attrs = self.queue.popleft()
            action = await self.server.answer(attrs)
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(encode_action(action))
            self.server.answered_in_shutdown += self.server.closing
        if self.server.closing and self.transport and not self.decoder.partial:
            self.transport.close()  # shutting down: answered; the next request goes elsewhere


class PolicyServer:
    def __init__(self, cfg: Config, service: PolicyService) -> None:
        self.settings = service.settings
        self.p = p = self.settings.policyd
        self.service = service
        self.listen: ListenAddress = parse_listen(p.listen)
        self.max_line = p.max_line_bytes
        self.max_attrs = p.max_attributes
        self.max_connections = p.max_connections
        self.max_request = p.max_request_bytes
        self.idle_timeout = p.idle_timeout_s
        self.request_timeout = p.request_timeout_s
        self.answer_timeout = p.answer_timeout_s
        self.on_internal_error = self.settings.on_internal_error
        self.connections: set[PolicyConnection] = set()
        # Connections with an unfinished request -> when it started, oldest first.
        self.partial: dict[PolicyConnection, float] = {}
        self.evicted = 0
        self._evict_logged = (-_EVICT_LOG_EVERY_S, 0)  # (when, evicted count then)
        self._channel_down = False
        self.subscribed = asyncio.Event()  # set at the first lock channel subscription
        self.inflight = 0
        self.closing = False
        self.answered_in_shutdown = 0
        self._socket_inode = 0  # of our unix socket: removed at exit only if still ours
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def make_room(self, newcomer: PolicyConnection) -> bool:
        """At max_connections: close the connection that least deserves its place, so that
        a slow or idle crowd cannot lock Postfix out. In order: the oldest unfinished
        request older than _STALE_PARTIAL_S, the longest idle connection, the oldest
        unfinished request. False when every connection has a request in flight."""
        now = asyncio.get_running_loop().time()
        victim = next(iter(self.partial), None)
        if victim is None or now - self.partial[victim] < _STALE_PARTIAL_S:
            idle = [c for c in self.connections if not c.busy and not c.decoder.partial]
            victim = min(idle, key=lambda c: c.last_active) if idle else victim
        if victim is None:
            return False
        kind = "stalled" if victim in self.partial else "longest idle"
        victim.evict()
        self.evicted += 1
        when, count = self._evict_logged
        if now - when >= _EVICT_LOG_EVERY_S:
            self._evict_logged = (now, self.evicted)
            log.warning("max_connections (%d) reached: closed the %s connection from %s to "
                        "let %s in (%d such closures in the last %gs)", self.max_connections,
                        kind, victim.peer, newcomer.peer, self.evicted - count,
                        min(now - when, _EVICT_LOG_EVERY_S))
        return True

    async def answer(self, attrs: Mapping[str, str]) -> str:
        self.inflight += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.answer_timeout):
                return await self.service.handle(attrs)
        except TimeoutError as e:
            return self.service.backend_failure(
                attrs, attrs.get("protocol_state", "").upper(),
                TimeoutError(f"no answer within {self.answer_timeout:g}s") if not str(e) else e)
        except Exception as e:
            # A bug must not take the daemon down or leave Postfix waiting: the one
            # internal-error policy of both daemons (failure.on_internal_error).
            return self.service.internal_failure(
                attrs, attrs.get("protocol_state", "").upper(), e, self.on_internal_error)
        finally:
            self.inflight -= 1
            metrics.request("policyd")
            metrics.policy_answer(attrs.get("protocol_state", ""), time.monotonic() - started)

    def apply_lock_event(self, event: LockEvent) -> None:
        """A lock or unlock published by any mailwarden (CLI, this or another daemon)."""
        if event.lock is not None:
            self.service.locks.add(event.lock)
        else:
            self.service.locks.remove(event.account)
        self.service.locks.save()
        log.info("lock list: %s %s (by %s, published)", logs.escape(event.action),
                 logs.quote(event.account), logs.quote(event.by))

    async def _lock_events(self) -> None:
        """Follow the lock channel for the daemon's life; resubscribe after a Redis outage.
        Every (re)subscription is followed by a full refresh: events published while we
        were not subscribed are lost."""
        delay = 0.1
        while True:
            try:
                await self.service.store.watch_locks(self.apply_lock_event, self._subscribed)
            except Exception as e:  # Redis trouble, or a bug: this task must not end
                if not self._channel_down:
                    why = f"{type(e).__name__}: {e}" if isinstance(
                        e, RedisError | OSError | TimeoutError) else type(e).__name__
                    log.warning("lock channel lost (%s); locks still refresh every %gs; "
                                "resubscribing", logs.escape(why), self.p.lock_refresh_s)
                self._channel_down = True
            await asyncio.sleep(delay)
            delay = 0.1 if not self._channel_down else min(delay * 2, 5.0)

    async def _subscribed(self) -> None:
        self._channel_down = False
        await self.service.refresh_locks()
        self.subscribed.set()
        log.info("lock channel subscribed; lock list refreshed (%d locks)",
                 len(self.service.locks.locks))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.listen.family == "unix":
            path = self.listen.path
            with contextlib.suppress(FileNotFoundError):
                if os.path.exists(path) and not os.path.isdir(path):
                    os.unlink(path)  # stale socket of a previous run
            self._server = await loop.create_unix_server(
                lambda: PolicyConnection(self), path, backlog=512)
            os.chmod(path, self.p.socket_mode)
            self._socket_inode = os.stat(path).st_ino
        else:
            self._server = await loop.create_server(
                lambda: PolicyConnection(self), self.listen.host, self.listen.port,
                backlog=512, reuse_address=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain and close."""
        # Follow the lock channel before listening: once we answer, a lock made anywhere
        # reaches us at once. With Redis down, go on (the refresher keeps trying).
        self._tasks.append(asyncio.create_task(self._lock_events()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(1.0, 2 * self.settings.redis.timeout_s)):
                await self.subscribed.wait()
        if not self.subscribed.is_set():
            await self.service.refresh_locks()
        await self.start()
        started = time.monotonic()
        self._tasks.append(asyncio.create_task(
            self.service.lock_refresher(self.p.lock_refresh_s)))
        interval = self.p.stats_interval_s
        if interval > 0:
            self._tasks.append(asyncio.create_task(self._stats(interval, started)))
        log.info("listening on %s (profile %s, limit %d per %gs, mode %s, on_redis_error %s, "
                 "on_internal_error %s)", self.listen, self.settings.profile_name,
                 self.service.s.limit, self.service.s.window_s,
                 "enforce" if self.service.s.enforce else "monitor",
                 "defer" if self.p.on_redis_error_defer else "accept", self.on_internal_error)
        sd_notify("READY=1")
        await stop.wait()
        sd_notify("STOPPING=1")
        await self.shutdown()
        log.info("%s", self.service.stats.line(time.monotonic() - started, final=True))

    async def _stats(self, interval: float, started: float) -> None:
        while True:
            await asyncio.sleep(interval)
            log.info("%s", self.service.stats.line(time.monotonic() - started))

    async def shutdown(self) -> None:
        """SIGTERM: stop accepting and remove the socket at once (Postfix's next connect
        fails fast and it retries or applies its default_action: 451 as shipped), close
        idle connections, answer every request in flight or already received within
        `policyd.shutdown_grace` (each connection is closed after its answer), then close
        whatever is left."""
        self.closing = True
        log.info("%s", logs.note("stopping: no new connections; requests in flight get "
                                 "their answers", connections=len(self.connections),
                                 in_flight=self.inflight, grace_s=self.p.shutdown_grace_s))
        if self._server:
            self._server.close()
        self._remove_socket()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)  # the channel closes
        for conn in list(self.connections):
            if conn.transport and not conn.busy and not conn.decoder.partial:
                conn.transport.close()
        deadline = time.monotonic() + self.p.shutdown_grace_s
        while self.inflight or any(c.busy for c in self.connections):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        unanswered = sum(len(c.queue) + (c.worker is not None and not c.worker.done())
                         for c in self.connections)
        self.service.stats.extra["shutdown_answered"] = self.answered_in_shutdown
        self.service.stats.extra["shutdown_unanswered"] = unanswered
        if unanswered:
            log.warning("%s", logs.note("shutdown grace over; closing connections with "
                                        "requests unanswered (Postfix retries them)",
                                        unanswered=unanswered))
        for conn in list(self.connections):
            if conn.transport:
                conn.transport.close()
        await self.service.store.close()

    def _remove_socket(self) -> None:
        if self.listen.family != "unix" or not self._socket_inode:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.listen.path).st_ino == self._socket_inode:  # not a successor's
                os.unlink(self.listen.path)


def run(cfg: Config) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from mailwarden.clock import SystemClock
    from mailwarden.policyd.lockcache import LockCache
    from mailwarden.settings import Settings
    from mailwarden.store.redis_store import RedisStore

    try:
        import uvloop  # optional: measured in benchmarks/policyd.md

        uvloop.install()
    except ImportError:
        pass
    settings = Settings.from_config(cfg)
    p = settings.policyd
    _raise_fd_limit(p.max_connections + 128)  # + Redis, listener, logs

    async def main() -> None:
        store = RedisStore.from_settings(settings.redis)
        cache = LockCache(p.lock_snapshot, p.lock_expire_s)
        cache.check_writable()
        if n := cache.load_snapshot():
            log.info("loaded %d locks from snapshot %s", n, p.lock_snapshot)
        service = PolicyService(cfg, store, SystemClock(), cache)
        server = PolicyServer(cfg, service)
        if p.metrics_listen:
            from mailwarden import __version__

            metrics.serve("policyd", p.metrics_listen, profile=settings.profile_name,
                          version=__version__, locks=lambda: len(service.locks.locks),
                          inflight=lambda: len(server.connections))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop)

    asyncio.run(main())
    return 0


def _raise_fd_limit(wanted: int) -> None:
    """max_connections is only reachable with as many file descriptors: raise the soft
    limit toward the hard one (systemd's default soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if new < wanted:
        log.warning("open files limited to %d (hard limit): policyd.max_connections cannot be "
                    "reached; raise LimitNOFILE", hard)
