"""Async façade over Redis: the scripts in scripts/*.lua and a few reads.

Calls from many concurrent policy connections are coalesced: while one
pipeline is on the wire, new calls queue up and go out together in the next
one (`_Batcher`). Under load this turns N round trips and N client-side
command encodings into one, which is where redis-py spends its time
(benchmarks/policyd.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError, RedisError

from mailwarden.rules.ratelock import LockInfo
from mailwarden.store.keys import Keyspace

if TYPE_CHECKING:
    from mailwarden.settings import RedisSettings

AUDIT_MAXLEN = 100_000  # lock/unlock events kept (approximate, MAXLEN ~)
# The lock channel is quiet for hours: PING it after this long without a word, and give
# up on the connection (resubscribe) when the PONG does not come within as long again.
CHANNEL_PING_S = 15.0
SCRIPT_NAMES = ("reserve", "commit", "release", "lock", "unlock", "restore")
# Issue 11 (docs/accounts.md): the auth policy daemon's scripts.
ACCOUNT_SCRIPT_NAMES = ("login_failed", "login_ok")
_MAX_BATCH = 256


def _load_scripts() -> dict[str, tuple[str, str]]:
    out = {}
    for name in SCRIPT_NAMES + ACCOUNT_SCRIPT_NAMES:
        text = resources.files("mailwarden.store").joinpath(f"scripts/{name}.lua").read_text()
        out[name] = (text, hashlib.sha1(text.encode()).hexdigest())  # noqa: S324 - Redis's id
    return out


@dataclass(frozen=True)
class ReserveResult:
    status: str  # ok | dup | over | locked
    count: int
    lock: LockInfo | None = None


@dataclass(frozen=True)
class LockEvent:
    """One message on the lock channel: a lock (with its LockInfo) or an unlock."""

    action: str  # lock | unlock
    account: str
    by: str
    lock: LockInfo | None  # set for "lock"

    @classmethod
    def parse(cls, data: bytes | str) -> LockEvent:
        """ValueError for anything that is not an event our scripts publish."""
        d = json.loads(data)
        if not isinstance(d, dict) or d.get("action") not in ("lock", "unlock") \
                or not isinstance(d.get("account"), str) or not d["account"]:
            raise ValueError("not a lock event")
        account, by = d["account"], str(d.get("by", ""))
        lock = None
        if d["action"] == "lock":
            lock = LockInfo(account, str(d.get("reason", "")),
                            int(str(d.get("since_ms", "0")) or 0) / 1000.0,
                            str(d.get("kind", "manual")), by, int(d.get("count", 0) or 0))
        return cls(d["action"], account, by, lock)


@dataclass(frozen=True)
class LoginCheck:
    lock: LockInfo | None
    address_failures: int  # failed logins from the address in the window
    address_accounts: int  # distinct logins it failed against in the window


@dataclass(frozen=True)
class LoginFailure:
    status: str  # login_failed.lua's: off | locked | capped | repeat | counted | locked_now
    count: int
    address_failures: int
    address_accounts: int


@dataclass(frozen=True)
class Activity:
    last_login: dict[str, float]  # account -> epoch seconds
    last_send: dict[str, float]
    since: float | None  # when recording started (None: nothing recorded yet)


@dataclass(frozen=True)
class AccountStatus:
    account: str
    committed: int
    pending: int
    lock: LockInfo | None


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _lock_from_hash(account: str, h: dict[Any, Any]) -> LockInfo | None:
    d = {_s(k): _s(v) for k, v in h.items()}
    if "reason" not in d:
        return None
    try:
        since = int(d.get("since_ms", "0")) / 1000.0
        count = int(d.get("count", "0") or 0)
    except ValueError:
        since, count = 0.0, 0
    return LockInfo(account, d["reason"], since, d.get("kind", "manual"), d.get("by", ""), count)


def sentinel_hosts(sentinels: Sequence[str]) -> list[tuple[str, int]]:
    """["10.0.0.1:26379", "[::1]:26379"] -> [("10.0.0.1", 26379), ("::1", 26379)]."""
    out = []
    for h in sentinels:
        host, _, port = h.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def _url_db_password(url: str) -> dict[str, Any]:
    """With Sentinel, redis.url only gives the db and the password (and username)."""
    from redis.connection import parse_url

    kw = parse_url(url)  # type: ignore[no-untyped-call]
    return {k: kw[k] for k in ("db", "username", "password") if kw.get(k) is not None}


class _Batcher:
    """Send queued EVALSHA calls in one pipeline; one pipeline in flight at a time."""

    def __init__(self, client: Any, scripts: dict[str, tuple[str, str]],
                 enabled: bool = True) -> None:
        self.client = client
        self.scripts = scripts
        self.enabled = enabled
        self.queue: list[tuple[str, Sequence[str], Sequence[Any], asyncio.Future[Any]]] = []
        self.running = False

    def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.enabled:  # one pipeline of one per call, concurrently
            asyncio.get_running_loop().create_task(self._send([(name, keys, args, fut)]))
            return fut
        self.queue.append((name, keys, args, fut))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue[:_MAX_BATCH], self.queue[_MAX_BATCH:]
                batch = [b for b in batch if not b[3].done()]  # caller gave up
                if batch:
                    await self._send(batch)
        finally:
            self.running = False

    async def _send(self, batch: list[tuple[str, Sequence[str], Sequence[Any],
                                            asyncio.Future[Any]]]) -> None:
        try:
            results = await self._pipeline(batch)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # SCRIPT FLUSH or a fresh/failed-over server: load, retry those
                for name in {batch[i][0] for i in missing}:
                    await self.client.script_load(self.scripts[name][0])
                retried = await self._pipeline([batch[i] for i in missing])
                for i, r in zip(missing, retried, strict=True):
                    results[i] = r
        except (RedisError, OSError) as e:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (*_, fut), r in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(r, Exception):
                fut.set_exception(r)
            else:
                fut.set_result(r)

    async def _pipeline(self, batch: Sequence[tuple[str, Sequence[str], Sequence[Any],
                                                     asyncio.Future[Any]]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for name, keys, args, _ in batch:
            pipe.evalsha(self.scripts[name][1], len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


class RedisStore:
    @classmethod
    def from_settings(cls, s: RedisSettings, *, min_timeout_s: float = 0.0) -> RedisStore:
        return cls(s.url, prefix=s.prefix, timeout_s=max(s.timeout_s, min_timeout_s),
                   sentinels=s.sentinels, sentinel_service=s.sentinel_service,
                   batching=s.batching, replica_wait_s=s.replica_wait_s)

    def __init__(self, url: str, *, prefix: str = "mw", timeout_s: float = 0.5,
                 sentinels: Sequence[str] = (), sentinel_service: str = "mymaster",
                 batching: bool = True, replica_wait_s: float = 0.0) -> None:
        self.keys = Keyspace(prefix)
        # WAIT after a new lock: bounded by the socket timeout, which WAIT must not hit.
        self.replica_wait_ms = int(min(replica_wait_s, 0.8 * timeout_s) * 1000)
        self.scripts = _load_scripts()
        opts: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry_on_timeout": False,
            "max_connections": 64,
        }
        if sentinels:
            # Every new connection asks the sentinels for the current master, so after a
            # failover the next call (and the lock channel's resubscription) reaches the
            # promoted replica; a demoted master's READONLY drops the connection too.
            kw = _url_db_password(url)
            self.client: Any = Sentinel(  # type: ignore[no-untyped-call]
                sentinel_hosts(sentinels), socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
            ).master_for(sentinel_service, **kw, socket_timeout=timeout_s,
                         socket_connect_timeout=timeout_s, retry_on_timeout=False,
                         max_connections=64)
        else:
            self.client = aioredis.Redis.from_url(url, **opts)
        self._batch = _Batcher(self.client, self.scripts, batching)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    def _ms(self, seconds: float) -> int:
        return int(seconds * 1000)

    async def reserve(self, account: str, instance: str, member: str, *, now: float,
                      window_s: float, limit: int, reserve_ttl_s: float, enforce: bool,
                      lock_expire_s: float, lock_reason: str) -> ReserveResult:
        k = self.keys.account(account, instance)
        raw = await self._batch.call("reserve", (
            k.lock, k.window, k.pending, k.message, self.keys.lock_index, self.keys.audit,
        ), (
            self._ms(now), self._ms(window_s), limit, member, self._ms(reserve_ttl_s),
            1 if enforce else 0, self._ms(lock_expire_s), account, lock_reason, AUDIT_MAXLEN,
            self.keys.lock_channel,
        ))
        status, count = _s(raw[0]), int(raw[1])
        lock = None
        if status == "locked" or (status == "over" and enforce):
            lock = LockInfo(account, _s(raw[2]), int(_s(raw[3]) or 0) / 1000.0,
                            _s(raw[4]) or "manual", count=count)
        return ReserveResult(status, count, lock)

    async def commit(self, account: str, instance: str, *, now: float, window_s: float,
                     keep_s: float, queue_id: str = "") -> tuple[int, int]:
        k = self.keys.account(account, instance)
        raw = await self._batch.call(
            "commit", (k.window, k.pending, k.message, self.keys.queue(queue_id or instance),
                       self.keys.last_send, self.keys.activity_since),
            (self._ms(now), self._ms(window_s), self._ms(keep_s), account, instance))
        return int(raw[0]), int(raw[1])

    # -- accounts: logins and last use (issue 11, docs/accounts.md) --------------------
    async def login_check(self, account: str, network: str, *, now: float,
                          window_s: float) -> LoginCheck:
        """Before a login: the account's lock and the address's recent failures."""
        pipe = self.client.pipeline(transaction=False)
        if account:
            pipe.hgetall(self.keys.account(account).lock)
        if network:
            a, since = self.keys.address(network), self._ms(now - window_s) + 1
            pipe.zcount(a.failures, since, "+inf")
            pipe.zcount(a.accounts, since, "+inf")
        out = list(await pipe.execute())
        lock = _lock_from_hash(account, out.pop(0)) if account else None
        failures, accounts = (int(out[0]), int(out[1])) if network else (0, 0)
        return LoginCheck(lock, failures, accounts)

    async def login_failed(self, account: str, network: str, *, member: str, pwhash: str,
                           attempt: str, now: float, window_s: float, max_accounts: int,
                           limit: int, enforce: bool, memory_s: float, reason: str,
                           exempt: bool) -> LoginFailure:
        """Count one failed login (login_failed.lua); it may lock the account."""
        k = self.keys.account(account)
        a = self.keys.address(network)
        raw = await self._batch.call("login_failed", (
            k.fails, k.lock, self.keys.lock_index, self.keys.audit, a.failures, a.accounts,
        ), (
            self._ms(now), account, network, pwhash, attempt, self._ms(window_s),
            max_accounts, limit, 1 if enforce else 0, self._ms(memory_s), reason,
            AUDIT_MAXLEN, self.keys.lock_channel, 1 if exempt else 0, member,
        ))
        return LoginFailure(_s(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))

    async def login_succeeded(self, account: str, *, now: float) -> int:
        """A successful login ends the failure run and is the account's last use."""
        k = self.keys.account(account)
        raw = await self._batch.call(
            "login_ok", (k.fails, self.keys.last_login, self.keys.activity_since),
            (self._ms(now), account))
        return int(raw)

    async def failed_logins(self, account: str) -> int:
        """The account's current run of consecutive failed logins."""
        return int(await self.client.hget(self.keys.account(account).fails, "n") or 0)

    async def activity(self) -> Activity:
        """Every recorded last login and last send (epoch seconds), and since when."""
        logins: dict[str, float] = {}
        sends: dict[str, float] = {}
        for key, out in ((self.keys.last_login, logins), (self.keys.last_send, sends)):
            async for field, value in self.client.hscan_iter(key, count=1000):
                out[_s(field)] = int(_s(value)) / 1000.0
        since = await self.client.get(self.keys.activity_since)
        return Activity(logins, sends, int(_s(since)) / 1000.0 if since else None)

    async def set_activity(self, account: str, *, login: float | None = None,
                           send: float | None = None) -> None:
        """Plant a last use (tests, and importing dates from an older system)."""
        pipe = self.client.pipeline(transaction=False)
        if login is not None:
            pipe.hset(self.keys.last_login, account, self._ms(login))
        if send is not None:
            pipe.hset(self.keys.last_send, account, self._ms(send))
        pipe.set(self.keys.activity_since, self._ms(min(x for x in (login, send, 4e9)
                                                         if x is not None)), nx=True)
        await pipe.execute()

    async def release_queue_id(self, queue_id: str) -> int:
        """Uncount a message refused after END-OF-MESSAGE (by the milter), by queue id."""
        raw = await self.client.get(self.keys.queue(queue_id))
        if not raw:
            return 0
        account, _, instance = _s(raw).partition("\n")
        n = await self.release(account, instance)
        await self.client.delete(self.keys.queue(queue_id))
        return n

    async def release(self, account: str, instance: str) -> int:
        k = self.keys.account(account, instance)
        return int(await self._batch.call("release", (k.window, k.pending, k.message), ()))

    async def lock(self, account: str, *, reason: str, by: str, now: float,
                   kind: str = "manual") -> bool:
        k = self.keys.account(account)
        raw = await self._batch.call("lock", (k.lock, self.keys.lock_index, self.keys.audit),
                                     (self._ms(now), account, reason, by, kind, AUDIT_MAXLEN,
                                      self.keys.lock_channel))
        return int(raw) == 1

    async def unlock(self, account: str, *, reason: str, by: str) -> bool:
        k = self.keys.account(account)
        raw = await self._batch.call("unlock", (
            k.lock, self.keys.lock_index, self.keys.audit, k.window, k.pending,
        ), (account, reason, by, AUDIT_MAXLEN, self.keys.lock_channel))
        return int(raw) == 1

    async def watch_locks(self, on_event: Callable[[LockEvent], None],
                          on_subscribed: Callable[[], Awaitable[None]]) -> None:
        """Follow the lock channel until an error (raised: the caller resubscribes).

        `on_subscribed` runs at each subscription confirmation, also when redis-py
        reconnected and resubscribed on its own: events published in between are lost,
        so that is where the caller refreshes its whole lock list. A dead connection
        (no PONG) raises TimeoutError rather than waiting for ever."""
        pubsub = self.client.pubsub()
        loop = asyncio.get_running_loop()
        try:
            await pubsub.subscribe(self.keys.lock_channel)
            heard, pinged = loop.time(), False
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                now = loop.time()
                if msg is None:
                    if now - heard > 2 * CHANNEL_PING_S:
                        raise TimeoutError("no PONG on the lock channel")
                    if now - heard > CHANNEL_PING_S and not pinged:
                        await pubsub.ping()
                        pinged = True
                    continue
                heard, pinged = now, False
                kind = _s(msg.get("type", ""))
                if kind == "subscribe":
                    await on_subscribed()
                elif kind == "message":
                    try:
                        event = LockEvent.parse(msg["data"])
                    except (ValueError, TypeError, KeyError):
                        continue  # not ours (someone else publishing): ignored
                    on_event(event)
        finally:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await pubsub.aclose()

    async def ensure_epoch(self, candidate: str) -> tuple[str, bool]:
        """This Redis's epoch, and True when it had none and `candidate` became it (a new
        Redis, or one that lost its data: restarted empty, flushed, replaced)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.epoch, candidate, nx=True)
        pipe.get(self.keys.epoch)
        created, epoch = await pipe.execute()
        return _s(epoch or b""), bool(created)

    async def restore_lock(self, lock: LockInfo, *, expire_ms: int, restored_by: str,
                           source: str, why: str) -> bool:
        """Put back a lock Redis lost (restore.lua: never overwrites, audited as
        action=restore, published). True if it was restored, False if present."""
        k = self.keys.account(lock.account)
        raw = await self._batch.call("restore", (k.lock, self.keys.lock_index, self.keys.audit), (
            lock.account, lock.reason, self._ms(lock.since), lock.by, lock.kind, lock.count,
            max(0, expire_ms), AUDIT_MAXLEN, self.keys.lock_channel, restored_by, source, why))
        return int(raw) == 1

    async def newest_events(self, accounts: set[str] | None = None,
                            max_entries: int = AUDIT_MAXLEN) -> dict[str, dict[str, str]]:
        """account -> its newest audit event (with "id"), for `accounts` (None = every
        account in the stream), reading newest first and stopping once all are found."""
        out: dict[str, dict[str, str]] = {}
        last, seen = "+", 0
        while seen < max_entries and (accounts is None or len(out) < len(accounts)):
            entries = await self.client.xrevrange(self.keys.audit, last, "-", count=1000)
            if not entries:
                break
            for eid, fields in entries:
                d = {_s(k): _s(v) for k, v in fields.items()}
                a = d.get("account", "")
                if a and a not in out and (accounts is None or a in accounts):
                    d["id"] = _s(eid)
                    out[a] = d
            seen += len(entries)
            last = "(" + _s(entries[-1][0])
        return out

    async def wait_replicas(self) -> tuple[int, int]:
        """After a new lock: WAIT (bounded by redis.replica_wait) until every replica the
        master has now acknowledged it. (acknowledged, replicas); (0, 0) without any."""
        if self.replica_wait_ms <= 0:
            return 0, 0
        role = await self.client.execute_command("ROLE")
        if _s(role[0]) != "master" or not role[2]:
            return 0, 0
        wanted = len(role[2])
        # WAIT counts this connection's writes only: a write here first covers the lock
        # written on whichever pooled connection ran it (one ordered replication stream).
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.replication_mark, "1", px=60_000)
        pipe.execute_command("WAIT", wanted, self.replica_wait_ms)
        _, acked = await pipe.execute()
        return int(acked), wanted

    async def get_lock(self, account: str) -> LockInfo | None:
        return _lock_from_hash(account, await self.client.hgetall(self.keys.account(account).lock))

    async def list_locks(self) -> list[LockInfo]:
        """All current locks. Index entries whose lock expired are dropped."""
        accounts = sorted(_s(a) for a in await self.client.smembers(self.keys.lock_index))
        if not accounts:
            return []
        pipe = self.client.pipeline(transaction=False)
        for a in accounts:
            pipe.hgetall(self.keys.account(a).lock)
        hashes = await pipe.execute()
        locks: list[LockInfo | str] = []
        stale: list[str] = []
        for a, h in zip(accounts, hashes, strict=True):
            info = _lock_from_hash(a, h)
            if info:
                locks.append(info)
            else:
                stale.append(a)
        if stale:
            await self.client.srem(self.keys.lock_index, *stale)
        return [x for x in locks if isinstance(x, LockInfo)]

    async def status(self, account: str, *, now: float, window_s: float) -> AccountStatus:
        k = self.keys.account(account)
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(k.window, self._ms(now - window_s) + 1, "+inf")
        pipe.zcount(k.pending, self._ms(now) + 1, "+inf")
        pipe.hgetall(k.lock)
        committed, pending, h = await pipe.execute()
        return AccountStatus(account, int(committed), int(pending), _lock_from_hash(account, h))

    async def audit(self, count: int = 50, account: str = "") -> list[dict[str, str]]:
        """Newest first: lock/unlock events with time (ms id), who and why."""
        out: list[dict[str, str]] = []
        last = "+"
        while len(out) < count:
            entries = await self.client.xrevrange(self.keys.audit, last, "-", count=500)
            if not entries:
                break
            for eid, fields in entries:
                d = {_s(k): _s(v) for k, v in fields.items()}
                d["id"] = _s(eid)
                if not account or d.get("account") == account:
                    out.append(d)
                    if len(out) >= count:
                        break
            last = "(" + _s(entries[-1][0])
        return out




class SyncReleaser:
    """The milter's one Redis need, from its libmilter threads: uncount a message
    that policyd committed at END-OF-MESSAGE and the milter then refused."""

    @classmethod
    def from_settings(cls, s: RedisSettings) -> SyncReleaser:
        return cls(s.url, prefix=s.prefix, timeout_s=s.timeout_s, sentinels=s.sentinels,
                   sentinel_service=s.sentinel_service)

    def __init__(self, url: str, *, prefix: str = "mw", timeout_s: float = 0.5,
                 sentinels: Sequence[str] = (), sentinel_service: str = "mymaster") -> None:
        import redis
        from redis.sentinel import Sentinel as SyncSentinel

        self.keys = Keyspace(prefix)
        if sentinels:
            self.client: Any = SyncSentinel(  # type: ignore[no-untyped-call]
                sentinel_hosts(sentinels), socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
            ).master_for(sentinel_service, **_url_db_password(url), socket_timeout=timeout_s,
                         socket_connect_timeout=timeout_s)
        else:
            self.client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        text, _ = _load_scripts()["release"]
        self.script = self.client.register_script(text)  # EVALSHA, reloads on NOSCRIPT

    def release_queue_id(self, queue_id: str) -> int:
        qkey = self.keys.queue(queue_id)
        raw = self.client.get(qkey)
        if not raw:
            return 0
        account, _, instance = _s(raw).partition("\n")
        k = self.keys.account(account, instance)
        n = int(self.script(keys=[k.window, k.pending, k.message]))
        self.client.delete(qkey)
        return n
