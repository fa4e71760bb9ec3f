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
    # HASH n (consecutive failed logins), last_ms, last_addr, pw:<hash> per wrong password
    # counted (a repeated one counts once); deleted by a successful login or a lock.
    fails: str = ""


@dataclass(frozen=True)
class AddressKeys:
    """Failed logins from one client address (its /N network), for the abuse guard."""

    failures: str  # ZSET attempt id -> time (ms): failures in the sliding window
    accounts: str  # ZSET account -> time (ms) of its last failure from this address


class Keyspace:
    def __init__(self, prefix: str = "mw") -> None:
        self.prefix = prefix
        self.lock_index = f"{prefix}:locks"  # SET of locked accounts
        self.audit = f"{prefix}:audit"  # STREAM of lock/unlock events
        # Pub/sub channel (not a key): the scripts that set or lift a lock PUBLISH a JSON
        # event here, and every policy daemon applies it to its lock list at once.
        self.lock_channel = f"{prefix}:lock-events"
        # Consumer group (a name, not a key) of `mailwarden notifier` on the audit stream:
        # each lock event goes to one notifier and is acknowledged once its mail is sent.
        self.notify_group = "notifier"
        # STRING written (with an expiry) by `mailwarden health`: Redis takes writes.
        self.health_probe = f"{prefix}:health"
        # STRING: a random id written (SET NX) by the first policy daemon to meet this
        # Redis. A daemon that remembers another value, or finds none, knows Redis lost
        # its data (restarted empty, replaced) and restores the locks it knows.
        self.epoch = f"{prefix}:epoch"
        # STRING: rewritten right before WAIT, so that WAIT on any connection covers a
        # lock written on another one (replication is one ordered stream).
        self.replication_mark = f"{prefix}:replmark"

        # HASHes account -> time (ms) of its last successful login (authpolicy) and of its
        # last send (policyd's commit), for `mailwarden inactive`; the STRING says since
        # when they are recorded (an account never seen is idle since then).
        self.last_login = f"{prefix}:last-login"
        self.last_send = f"{prefix}:last-send"
        self.activity_since = f"{prefix}:activity-since"

    def account(self, account: str, instance: str = "") -> AccountKeys:
        base = f"{self.prefix}:{{{account}}}"
        return AccountKeys(
            lock=f"{base}:lock",
            window=f"{base}:win",
            pending=f"{base}:pend",
            message=f"{base}:msg:{instance}",
            fails=f"{base}:fails",
        )

    def notified(self, event_id: str) -> str:
        """SET (expiring) of the recipient roles already mailed for one audit event: a
        retry after a partial failure, or a takeover by another notifier, skips them."""
        return f"{self.prefix}:notified:{event_id}"

    def address(self, network: str) -> AddressKeys:
        """Keys of one client network ("203.0.113.7/32", "2001:db8::/64")."""
        base = f"{self.prefix}:addr:{{{network}}}"
        return AddressKeys(failures=f"{base}:fail", accounts=f"{base}:accts")

    def queue(self, queue_id: str) -> str:
        """STRING: Postfix queue id -> "account\ninstance" of a committed send."""
        return f"{self.prefix}:queue:{queue_id}"

    def account_pattern(self) -> str:
        """SCAN pattern over every account's lock hash (reconciling the index)."""
        return f"{self.prefix}:{{*}}:lock"
