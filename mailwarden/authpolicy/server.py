"""HTTP side of the auth policy daemon (aiohttp): listen, limits, time budget, errors.

Dovecot POSTs a small JSON object to the root path with `?command=allow` or
`?command=report` and waits `auth_policy_server_timeout_msecs` (2 s by
default) for `{"status": N, "msg": "..."}`. Bounds, as in the policy daemon:
a body over `authpolicy.max_request_bytes` is refused (413) before it is read
whole; reading and answering one request, Redis included, must end within
`authpolicy.request_timeout`; more than `authpolicy.max_connections`
requests in flight are answered 503 at once. A request we cannot answer
(Redis down or slow, a bug) gets an HTTP error, so Dovecot applies its own
documented choice, `auth_policy_reject_on_fail` (docs/accounts.md): the
daemon never guesses an allow or a refusal for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from mailwarden import logs
from mailwarden.addresses import parse_listen
from mailwarden.authpolicy.service import Attempt, AuthPolicyService
from mailwarden.config import Config
from mailwarden.settings import AuthpolicySettings

log = logging.getLogger("mailwarden.authpolicy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, why: str) -> web.Response:
    return web.json_response({"status": 0, "msg": "", "error": why}, status=status)


class AuthPolicyServer:
    def __init__(self, service: AuthPolicyService, p: AuthpolicySettings) -> None:
        self.service = service
        self.p = p
        self.listen = parse_listen(p.listen)
        self.inflight = 0
        self.runner: web.AppRunner | None = None
        self._socket_inode = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.p.max_request_bytes,
                              middlewares=[self._guard])
        app.router.add_post("/", self.handle)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Requests in flight, shared secret, body size: checked before the body is read."""
        if self.inflight >= self.p.max_connections:
            return _error(503, "busy")
        if self.p.api_key:
            given = request.headers.get(self.p.api_header, "")
            if not hmac.compare_digest(given.encode(), self.p.api_key.encode()):
                log.warning("%s", logs.note("request without the right API key refused",
                                            peer=request.remote or "unix"))
                return _error(401, "api key")
        if (request.content_length or 0) > self.p.max_request_bytes:
            return _error(413, "too large")
        self.inflight += 1
        try:
            return await handler(request)
        finally:
            self.inflight -= 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        command = request.query.get("command", "")
        if command not in ("allow", "report"):
            return _error(404, "unknown command")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.p.request_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                body = await request.read()
        except TimeoutError:
            log.warning("%s", logs.note("request body not sent within request_timeout, "
                                        "refused", command=command,
                                        peer=request.remote or "unix"))
            return _error(408, "slow request")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too large")
        try:
            async with asyncio.timeout_at(deadline):
                attempt = Attempt.parse(json.loads(body))
                if command == "allow":
                    answer = await self.service.allow(attempt)
                else:
                    answer = await self.service.report(attempt)
        except (ValueError, UnicodeDecodeError) as e:  # BadRequest, JSON errors
            log.warning("%s", logs.note("malformed auth policy request", command=command,
                                        error=str(e)[:200]))
            return _error(400, "malformed")
        except (RedisError, OSError, TimeoutError) as e:
            self.service.stats.errors += 1
            log.error("%s", logs.note("cannot answer: Dovecot applies auth_policy_reject_on_"
                                      "fail", command=command,
                                      error=f"{type(e).__name__}: {e}"[:300]))
            return _error(503, "backend")
        except Exception as e:
            self.service.stats.errors += 1
            where = e.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            place = (f"{where.tb_frame.f_code.co_filename}:{where.tb_lineno}"
                     if where else "?")
            log.error("%s", logs.note("internal error: Dovecot applies auth_policy_reject_on_"
                                      "fail", command=command, error=type(e).__name__,
                                      at=place))
            return _error(500, "internal")
        return web.json_response(answer)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=30.0)
        await self.runner.setup()
        site: web.BaseSite
        if self.listen.family == "unix":
            path = self.listen.path
            with contextlib.suppress(FileNotFoundError):
                if os.path.exists(path) and not os.path.isdir(path):
                    os.unlink(path)  # stale socket of a previous run
            site = web.UnixSite(self.runner, path,
                                shutdown_timeout=self.p.shutdown_grace_s)
            await site.start()
            os.chmod(path, self.p.socket_mode)
            self._socket_inode = os.stat(path).st_ino
        else:
            site = web.TCPSite(self.runner, self.listen.host, self.listen.port,
                               shutdown_timeout=self.p.shutdown_grace_s, reuse_address=True)
            await site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # answers requests in flight within the grace
        if self.listen.family == "unix" and self._socket_inode:
            with contextlib.suppress(OSError):
                if os.stat(self.listen.path).st_ino == self._socket_inode:
                    os.unlink(self.listen.path)
        await self.service.store.close()


def run(cfg: Config) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from mailwarden.clock import SystemClock
    from mailwarden.policyd.server import sd_notify
    from mailwarden.settings import Settings, authpolicy_from
    from mailwarden.store.redis_store import RedisStore

    settings = Settings.from_config(cfg)
    p = authpolicy_from(cfg)

    async def main() -> None:
        store = RedisStore.from_settings(settings.redis,
                                         min_timeout_s=0.0)
        service = AuthPolicyService(cfg, store, SystemClock())
        server = AuthPolicyServer(service, p)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        started = time.monotonic()
        s = service.s
        log.info("listening on %s (profile %s, lock refuses login %s, failed-login limit %d, "
                 "mode %s, address window %gs, cap %d accounts)", server.listen,
                 settings.profile_name, "yes" if s.lock_refuses_login else "no",
                 s.failed_login_limit, "enforce" if s.enforce else "monitor",
                 s.address_window_s, s.address_max_accounts)
        sd_notify("READY=1")
        await stop.wait()
        sd_notify("STOPPING=1")
        await server.stop()
        log.info("%s", service.stats.line(time.monotonic() - started, final=True))

    asyncio.run(main())
    return 0
