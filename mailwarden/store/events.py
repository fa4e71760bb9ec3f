"""The audit stream read as a work queue: the lock notifier's consumer group.

Every lock and unlock is one entry of the audit stream (keys.audit), written by the
same Lua script that sets or lifts the lock, so an event exists exactly when the lock
changed, once, whichever policy daemon (or CLI) made it. `mailwarden notifier` reads
the stream through ONE consumer group (keys.notify_group): Redis hands each entry to
one consumer of the group, keeps it in that consumer's pending list until XACK, and
lets another consumer take it over (XAUTOCLAIM) when the first one died holding it.
Which roles (owner, admins) were already mailed for an entry is kept in a small set
(keys.notified), so a retry or a takeover mails only the ones still missing.

Synchronous (redis-py's blocking client): the notifier is its own small process and
`mailwarden health` a one-shot command; neither runs in a daemon's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from mailwarden.store.keys import Keyspace

if TYPE_CHECKING:
    from mailwarden.settings import RedisSettings

NOTIFIED_TTL_S = 7 * 86400  # the roles-mailed set outlives any retry schedule


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class AuditEvent:
    id: str  # stream entry id "ms-seq": also when it happened
    fields: dict[str, str]  # action, account, by, kind, reason, count (as written)

    @property
    def when(self) -> float:
        return int(self.id.split("-")[0]) / 1000.0

    @property
    def action(self) -> str:
        return self.fields.get("action", "")

    @property
    def account(self) -> str:
        return self.fields.get("account", "")


@dataclass(frozen=True)
class Backlog:
    pending: int  # handed to a notifier, not acknowledged (being sent or retried)
    unread: int  # not yet handed to any notifier
    oldest_pending_s: float  # age of the oldest pending entry (0 = none)
    group: bool  # the consumer group exists (a notifier ever started)

    @property
    def total(self) -> int:
        return self.pending + self.unread


def _sync_client(s: RedisSettings, timeout_s: float) -> Any:
    import redis

    if s.sentinels:
        from redis.connection import parse_url
        from redis.sentinel import Sentinel

        kw = {k: v for k, v in parse_url(s.url).items()  # type: ignore[no-untyped-call]
              if k in ("db", "username", "password") and v is not None}
        hosts = [(h.rpartition(":")[0].strip("[]"), int(h.rpartition(":")[2]))
                 for h in s.sentinels]
        return Sentinel(hosts, socket_timeout=timeout_s,  # type: ignore[no-untyped-call]
                        socket_connect_timeout=timeout_s).master_for(
            s.sentinel_service, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            **kw)
    return redis.Redis.from_url(s.url, socket_timeout=timeout_s,
                                socket_connect_timeout=timeout_s)


class AuditQueue:
    def __init__(self, client: Any, prefix: str = "mw") -> None:
        self.client = client
        self.keys = Keyspace(prefix)
        self.group = self.keys.notify_group

    @classmethod
    def from_settings(cls, s: RedisSettings, *, timeout_s: float = 5.0) -> AuditQueue:
        """`timeout_s` must exceed the longest BLOCK of read_new()."""
        return cls(_sync_client(s, max(timeout_s, s.timeout_s)), s.prefix)

    def close(self) -> None:
        self.client.close()

    # -- the consumer group ----------------------------------------------------------
    def ensure_group(self) -> bool:
        """Create the group at the stream's end (events from before the first notifier
        are history, not news). True when it was created now."""
        try:
            self.client.xgroup_create(self.keys.audit, self.group, id="$", mkstream=True)
            return True
        except ResponseError as e:
            if "BUSYGROUP" in str(e):
                return False
            raise

    def _events(self, entries: Sequence[Any]) -> list[AuditEvent]:
        out = []
        for eid, fields in entries:
            # An entry trimmed from the stream (MAXLEN) while pending comes back empty.
            out.append(AuditEvent(_s(eid), {_s(k): _s(v) for k, v in (fields or {}).items()}))
        return out

    def read_new(self, consumer: str, *, count: int = 10, block_ms: int = 1000
                 ) -> list[AuditEvent]:
        """Entries no consumer of the group has had yet (waits up to block_ms)."""
        reply = self.client.xreadgroup(self.group, consumer, {self.keys.audit: ">"},
                                       count=count, block=block_ms)
        return self._events(reply[0][1]) if reply else []

    def read_mine(self, consumer: str, *, count: int = 100) -> list[AuditEvent]:
        """This consumer's pending entries (taken earlier, not acknowledged)."""
        reply = self.client.xreadgroup(self.group, consumer, {self.keys.audit: "0"},
                                       count=count)
        return self._events(reply[0][1]) if reply else []

    def take_over(self, consumer: str, *, idle_ms: int, count: int = 10) -> list[AuditEvent]:
        """Entries another consumer has held unacknowledged for idle_ms (it died)."""
        reply = self.client.xautoclaim(self.keys.audit, self.group, consumer,
                                       min_idle_time=idle_ms, start_id="0-0", count=count)
        return self._events(reply[1]) if reply else []

    def ack(self, event_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.audit, self.group, event_id)
        pipe.delete(self.keys.notified(event_id))
        pipe.execute()

    def notified(self, event_id: str) -> set[str]:
        return {_s(r) for r in self.client.smembers(self.keys.notified(event_id))}

    def mark_notified(self, event_id: str, role: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self.keys.notified(event_id), role)
        pipe.expire(self.keys.notified(event_id), NOTIFIED_TTL_S)
        pipe.execute()

    def backlog(self) -> Backlog:
        try:
            groups = self.client.xinfo_groups(self.keys.audit)
        except ResponseError:  # no stream yet: nothing was ever locked
            return Backlog(0, 0, 0.0, False)
        info = next((g for g in groups if _s(g.get("name", "")) == self.group), None)
        if info is None:
            return Backlog(0, 0, 0.0, False)
        pending = int(info.get("pending", 0) or 0)
        lag = info.get("lag")
        if lag is None:  # Redis cannot tell (entries deleted): count after last-delivered
            last = _s(info.get("last-delivered-id", "0-0"))
            lag = len(self.client.xrange(self.keys.audit, f"({last}", "+", count=10_000))
        oldest = 0.0
        if pending:
            summary = self.client.xpending(self.keys.audit, self.group)
            first = _s(summary.get("min", "") or "")
            if first:
                import time

                oldest = max(0.0, time.time() - int(first.split("-")[0]) / 1000.0)
        return Backlog(pending, int(lag), oldest, True)

    # -- health ------------------------------------------------------------------------
    def probe_write(self, value: str) -> bool:
        """Redis answers and takes a write (a key that expires by itself)."""
        self.client.set(self.keys.health_probe, value, px=60_000)
        return _s(self.client.get(self.keys.health_probe) or b"") == value
