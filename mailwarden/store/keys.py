"""Every Redis key and pub/sub channel mailwarden uses is built here and nowhere else.

Per-account keys carry the account in braces ({alice@ninhbinh.gov.vn}), a
Cluster hash tag, so one account's keys always share a slot. The lock index
and the audit stream are global: scripts that set or lift a lock update them
atomically with the lock, which is why mailwarden supports standalone Redis
and Sentinel, not Cluster (docs/redis.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccountKeys:
    lock: str  # HASH reason, since_ms, by, kind, count, expires_ms
    window: str  # ZSET member -> commit time (ms): what was really sent
    pending: str  # ZSET member -> expiry (ms): reserved at RCPT, not yet committed
    message: str  # SET members reserved for one SMTP transaction (instance)


class Keyspace:
    def __init__(self, prefix: str = "mw") -> None:
        self.prefix = prefix
        self.lock_index = f"{prefix}:locks"  # SET of locked accounts
        self.audit = f"{prefix}:audit"  # STREAM of lock/unlock events
        # Pub/sub channel (not a key): the scripts that set or lift a lock PUBLISH a JSON
        # event here, and every policy daemon applies it to its lock list at once.
        self.lock_channel = f"{prefix}:lock-events"

    def account(self, account: str, instance: str = "") -> AccountKeys:
        base = f"{self.prefix}:{{{account}}}"
        return AccountKeys(
            lock=f"{base}:lock",
            window=f"{base}:win",
            pending=f"{base}:pend",
            message=f"{base}:msg:{instance}",
        )

    def queue(self, queue_id: str) -> str:
        """STRING: Postfix queue id -> "account\ninstance" of a committed send."""
        return f"{self.prefix}:queue:{queue_id}"

    def account_pattern(self) -> str:
        """SCAN pattern over every account's lock hash (reconciling the index)."""
        return f"{self.prefix}:{{*}}:lock"
