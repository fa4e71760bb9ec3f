"""From one policy request to one action: rules + store + failure policy + log line.

The socket side lives in server.py; the decisions in rules/ratelock.py; the
counting in Redis (store/). This module ties them together and owns what
happens when Redis does not answer in time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from redis.exceptions import RedisError

from mailwarden import logs, metrics
from mailwarden.clock import Clock
from mailwarden.config import Config
from mailwarden.failure import internal_error
from mailwarden.policyd.lockcache import LockCache
from mailwarden.rules import ratelock
from mailwarden.rules.ratelock import Classified, LockInfo, Scope
from mailwarden.settings import Settings
from mailwarden.store.redis_store import RedisStore
from mailwarden.units import format_duration
from mailwarden.verdict import Action, Verdict, reply_safe

log = logging.getLogger("mailwarden.policyd")

DUNNO = "DUNNO"
_MAX_REPLY_TEXT = 480  # an SMTP reply line is at most 512 octets with code and CRLF
# A rate lock with less than this left before lock.expire_after is not restored.
_RESTORE_MARGIN_S = 30.0


@dataclass
class Stats:
    requests: int = 0
    reject: int = 0
    defer: int = 0
    locks: int = 0
    redis_errors: int = 0
    malformed: int = 0
    max_window: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def line(self, since_s: float, final: bool = False) -> str:
        return logs.stats_line({
            "requests": self.requests, "reject": self.reject, "defer": self.defer,
            "locks": self.locks, "redis_errors": self.redis_errors,
            "malformed": self.malformed, "max_window": self.max_window, **self.extra},
            since_s=since_s, final=final)


class PolicyService:
    def __init__(self, cfg: Config, store: RedisStore, clock: Clock,
                 locks: LockCache | None = None) -> None:
        self.settings = Settings.from_config(cfg)
        self.s = self.settings.rate
        self.store = store
        self.clock = clock
        p = self.settings.policyd
        self.on_error_defer = p.on_redis_error_defer
        self.reserve_ttl = p.reservation_ttl_s
        self.lock_expire = p.lock_expire_s
        self.log_accepts = self.settings.logging.log_accepts
        self.locks = locks or LockCache(rate_lock_expire_s=self.lock_expire)
        self.stats = Stats()
        self.instance_name = f"policyd@{socket.gethostname()}[{os.getpid()}]"
        self.lock_reason = (f"over {{count}} external {self.s.count_unit} in "
                            f"{format_duration(self.s.window_s)}")

    # -- entry point ---------------------------------------------------------
    async def handle(self, attrs: Mapping[str, str]) -> str:
        """The action string for one request (DUNNO, or a reply like '550 5.7.1 ...')."""
        self.stats.requests += 1
        state = attrs.get("protocol_state", "").upper()
        try:
            if state == "RCPT":
                return await self._rcpt(attrs)
            if state == "END-OF-MESSAGE":
                return await self._end_of_message(attrs)
        except (RedisError, OSError, TimeoutError) as e:
            return self.backend_failure(attrs, state, e)
        return DUNNO

    # -- RCPT ----------------------------------------------------------------
    async def _rcpt(self, attrs: Mapping[str, str]) -> str:
        c = ratelock.classify(attrs, self.s)
        if c.scope is Scope.INBOUND:
            return DUNNO
        now = self.clock.now()
        known = self.locks.get(c.account, now)
        if known is not None or c.scope is not Scope.EXTERNAL:
            return self._decided(attrs, ratelock.RateInputs(c.account, lock=known))
        return await self._reserve(attrs, c, now)

    async def _reserve(self, attrs: Mapping[str, str], c: Classified, now: float) -> str:
        limit = ratelock.limit_for(c.account, self.s)
        r = await self.store.reserve(
            c.account, attrs.get("instance", ""), c.member, now=now, window_s=self.s.window_s,
            limit=limit, reserve_ttl_s=self.reserve_ttl, enforce=self.s.enforce,
            lock_expire_s=self.lock_expire,
            lock_reason=self.lock_reason.format(count=limit))
        self.stats.max_window = max(self.stats.max_window, r.count)
        over = r.status == "over"
        if r.lock is not None:
            self.locks.add(r.lock)
            if over:
                self.locks.save()
                self.stats.locks += 1
                metrics.lock_event("policyd", "lock", "rate")
                await self.wait_replicas(c.account)
        return self._decided(attrs, ratelock.RateInputs(
            c.account, lock=r.lock if r.status == "locked" else None, over=over,
            count=r.count, locked_now=over and r.lock is not None))

    def _decided(self, attrs: Mapping[str, str], inputs: ratelock.RateInputs) -> str:
        """The rate rule's verdicts as the answer: the first refusal, else DUNNO."""
        for v in ratelock.decide(inputs, self.s):
            return self._refuse(attrs, "RCPT", v)
        if self.log_accepts and inputs.count:
            log.info("%s", self._line(attrs, "RCPT", ratelock.accepted(count=str(inputs.count))))
        return DUNNO

    # -- END-OF-MESSAGE ------------------------------------------------------
    async def _end_of_message(self, attrs: Mapping[str, str]) -> str:
        account = ratelock.sending_account(attrs, self.s, end_of_message=True)
        if not account or account in self.s.exempt or not self.s.enabled:
            return DUNNO
        committed, count = await self.store.commit(
            account, attrs.get("instance", ""), now=self.clock.now(), window_s=self.s.window_s,
            keep_s=self.reserve_ttl, queue_id=attrs.get("queue_id", ""))
        if committed and self.log_accepts:
            log.info("%s", self._line(attrs, "END-OF-MESSAGE", ratelock.accepted(
                committed=str(committed), count=str(count))))
        return DUNNO

    # -- replies and failures -----------------------------------------------
    def _line(self, attrs: Mapping[str, str], stage: str, v: Verdict, action: str = "") -> str:
        action = action or (v.action.value if not v.monitor else "monitor")
        return logs.decision_line(
            queue_id=attrs.get("queue_id", ""), action=action, stage=stage,
            client_name=attrs.get("client_name", ""), client_addr=attrs.get("client_address", ""),
            rule=v.rule, detail=v.detail, sender=attrs.get("sender", ""),
            recipients=[attrs["recipient"]] if attrs.get("recipient") else [],
            extra={"sasl_username": attrs["sasl_username"]} if attrs.get("sasl_username") else None,
            article=v.article, reply=v.reply if v.action is not Action.ACCEPT else "")

    def _refuse(self, attrs: Mapping[str, str], stage: str, v: Verdict) -> str:
        # The rules made message/operator text safe; the reply is one line of printable
        # ASCII whatever a rule let through (a newline would end the policy answer).
        v = replace(v, text=reply_safe(v.text, _MAX_REPLY_TEXT))
        if v.monitor:
            metrics.decision("policyd", v.rule, "monitor", stage)
            log.warning("%s", self._line(attrs, stage, v))
            return DUNNO
        if v.action is Action.DEFER:
            self.stats.defer += 1
        else:
            self.stats.reject += 1
        metrics.decision("policyd", v.rule, v.action.value, stage)
        log.warning("%s", self._line(attrs, stage, v))
        return v.reply

    def backend_failure(self, attrs: Mapping[str, str], stage: str, e: BaseException) -> str:
        self.stats.redis_errors += 1
        why = logs.describe_error(e)
        v = ratelock.backend_error(why, defer=self.on_error_defer and stage == "RCPT")
        if v.action is Action.DEFER:
            return self._refuse(attrs, stage, v)
        metrics.decision("policyd", v.rule, "accept-unchecked", stage)
        log.error("%s", self._line(attrs, stage, v, action="accept-unchecked"))
        return DUNNO

    def internal_failure(self, attrs: Mapping[str, str], stage: str, e: BaseException,
                         policy: str) -> str:
        """A bug while deciding: failure.on_internal_error, one line at error level with
        the exception's type and place, never its text (it can quote the request)."""
        v = internal_error(e, policy)
        metrics.decision("policyd", v.rule, "accept-unchecked" if v.action is Action.ACCEPT
                         else v.action.value, stage)
        if v.action is Action.ACCEPT:
            log.error("%s", self._line(attrs, stage, v, action="accept-unchecked"))
            return DUNNO
        self.stats.defer += 1
        log.error("%s", self._line(attrs, stage, v))
        return v.reply

    # -- background ------------------------------------------------------------
    async def refresh_locks(self) -> None:
        try:
            await self._reconcile_locks()
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("%s", logs.note("lock list refresh failed, keeping the known locks",
                                        locks=len(self.locks.locks), error=str(e)))

    async def _reconcile_locks(self) -> None:
        """Redis's lock list, plus every known lock Redis lacks and nobody unlocked.

        A Redis that lost its data (no epoch, or another epoch than the one we last saw:
        restarted empty, flushed, replaced) or a failover to a replica that missed a lock
        must not unlock anyone: a known lock missing from Redis is restored (restore.lua,
        audited action=restore) unless the audit stream's newest event for the account is
        an unlock (we missed its published event). After a data loss, locks the audit
        stream still holds (it can outlive the lock keys) are restored too."""
        before = dict(self.locks.locks)
        epoch, created = await self.store.ensure_epoch(uuid.uuid4().hex)
        lost = ""
        if created:
            lost = "redis had no epoch: new, restarted without its data, or flushed"
        elif self.locks.epoch and epoch != self.locks.epoch:
            lost = "redis epoch changed: replaced, or restored from an older copy"
        if lost and (self.locks.epoch or self.locks.locks):
            self.stats.extra["redis_data_lost"] = self.stats.extra.get("redis_data_lost", 0) + 1
            log.warning("%s", logs.note("redis lost its data; restoring the known locks",
                                        why=lost, known_locks=len(self.locks.locks),
                                        old_epoch=self.locks.epoch or "-", epoch=epoch))
        in_redis = {lk.account: lk for lk in await self.store.list_locks()}
        now = self.clock.now()
        missing = {a: lk for a, lk in self.locks.locks.items()
                   if a not in in_redis and not self.locks.expired(lk, now)}
        from_audit: dict[str, LockInfo] = {}
        if missing or lost:
            newest = await self.store.newest_events(None if lost else set(missing))
            for account, ev in newest.items():
                if ev.get("action") == "unlock":
                    missing.pop(account, None)  # lifted; its published event never reached us
                elif lost and account not in in_redis and account not in missing \
                        and ev.get("action") in ("lock", "restore"):
                    lk = _lock_from_audit(account, ev)
                    if not self.locks.expired(lk, now):
                        from_audit[account] = lk
        keep = dict(in_redis)
        for account, lk in (missing | from_audit).items():
            keep[account] = lk
            # A rate lock about to lapse anyway is kept here until it does, not re-made.
            if self.locks.expired(lk, now, margin_s=_RESTORE_MARGIN_S):
                continue
            source = ("audit" if account in from_audit else
                      "snapshot" if account in self.locks.from_snapshot else "memory")
            if await self.store.restore_lock(
                    lk, expire_ms=int(self.locks.expire_left_s(lk, now) * 1000),
                    restored_by=self.instance_name, source=source,
                    why=lost or "missing from redis, no unlock in the audit stream"):
                self.stats.extra["locks_restored"] = self.stats.extra.get(
                    "locks_restored", 0) + 1
                log.warning("%s", logs.note("lock restored", account=account, kind=lk.kind,
                                            source=source, why=lost or "missing from redis"))
                await self.wait_replicas(account)
        # A lock or unlock event applied while we were reading Redis is newer than what
        # we read: it wins.
        now_locks = self.locks.locks
        for account in before.keys() | now_locks.keys():
            if before.get(account) != now_locks.get(account):
                if account in now_locks:
                    keep[account] = now_locks[account]
                else:
                    keep.pop(account, None)
        self.locks.replace_all(list(keep.values()), epoch)

    async def wait_replicas(self, account: str) -> None:
        """After a new lock: bounded WAIT for the replicas (redis.replica_wait); a lock
        that did not reach them all is logged, never an error for the request."""
        try:
            acked, wanted = await self.store.wait_replicas()
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("%s", logs.note("lock not confirmed by the replicas", account=account,
                                        error=str(e)))
            return
        if acked < wanted:
            log.warning("%s", logs.note("lock not confirmed by every replica in time",
                                        account=account, acknowledged=acked, replicas=wanted))

    async def lock_refresher(self, interval_s: float) -> None:
        while True:
            await self.refresh_locks()
            await asyncio.sleep(interval_s)

    def note_unlock(self, account: str) -> None:
        self.locks.remove(account)


def _lock_from_audit(account: str, ev: Mapping[str, str]) -> LockInfo:
    """The lock an audit entry (action lock or restore) describes; its time is the
    entry's id (ms) unless it carries the original lock's since_ms."""
    try:
        since_ms = int(ev.get("since_ms") or ev.get("id", "0").split("-")[0])
        count = int(ev.get("count") or 0)
    except ValueError:
        since_ms, count = 0, 0
    return LockInfo(account, ev.get("reason", ""), since_ms / 1000.0,
                    ev.get("kind", "manual") or "manual",
                    ev.get("locked_by") or ev.get("by", ""), count)


__all__ = ["DUNNO", "LockInfo", "PolicyService", "Stats"]
