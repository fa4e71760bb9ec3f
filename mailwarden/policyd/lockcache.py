"""The in-process copy of the lock list, and its durable copy on disk.

Updated at once by this daemon's own locks and by every lock/unlock event
published on the lock channel (the CLI, other daemons' rate locks: server.py),
reconciled with Redis every `policyd.lock_refresh` and after every
(re)subscription (service.py, `PolicyService.refresh_locks`), and saved to the
snapshot file (`policyd.lock_snapshot`) whenever it changes, so that a locked
(possibly compromised) account stays refused when Redis is unreachable, across
a restart of the daemon, and when Redis loses its data.

The copy never loses a lock because Redis no longer has it: only an unlock
(published, or found in the audit stream) or the lapse of a rate lock
(`lock.expire_after`) removes one. The snapshot also keeps the Redis epoch
the daemon last saw (store/keys.py `epoch`), which tells a Redis that lost
its data from one that was merely unreachable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from mailwarden import logs
from mailwarden.rules.ratelock import LockInfo

log = logging.getLogger("mailwarden.policyd")


class LockCache:
    def __init__(self, snapshot: str = "", rate_lock_expire_s: float = 0.0) -> None:
        self.locks: dict[str, LockInfo] = {}
        self.snapshot = Path(snapshot) if snapshot else None
        self.expire_s = rate_lock_expire_s
        self.loaded_from_redis = False
        self.epoch = ""  # the Redis epoch these locks were last reconciled with
        # Accounts read from the snapshot and not seen in Redis since (the source named
        # in a restore's audit entry: "snapshot" rather than "memory").
        self.from_snapshot: set[str] = set()

    def get(self, account: str, now: float) -> LockInfo | None:
        lock = self.locks.get(account)
        if lock and self.expired(lock, now):
            return None
        return lock

    def expired(self, lock: LockInfo, now: float, margin_s: float = 0.0) -> bool:
        """A rate lock past `lock.expire_after` (less `margin_s`); manual locks never."""
        return bool(lock.kind == "rate" and self.expire_s
                    and lock.since + self.expire_s - margin_s <= now)

    def expire_left_s(self, lock: LockInfo, now: float) -> float:
        """What is left of a rate lock's lifetime; 0 = it never lapses."""
        if lock.kind != "rate" or not self.expire_s:
            return 0.0
        return max(0.001, lock.since + self.expire_s - now)

    def add(self, lock: LockInfo) -> None:
        self.locks[lock.account] = lock

    def remove(self, account: str) -> None:
        self.locks.pop(account, None)
        self.from_snapshot.discard(account)

    def replace_all(self, locks: list[LockInfo], epoch: str | None = None) -> None:
        """The reconciled list (service.py decides what it holds; never Redis's list alone
        when that lacks a known lock). Saved when it or the epoch changed."""
        new = {lk.account: lk for lk in locks}
        changed = new != self.locks or (epoch is not None and epoch != self.epoch)
        self.locks = new
        if epoch is not None:
            self.epoch = epoch
        self.from_snapshot &= new.keys()
        self.loaded_from_redis = True
        if changed:
            self.save()

    def save(self) -> None:
        if self.snapshot is None:
            return
        data = {"epoch": self.epoch, "locks": [lk.__dict__ for lk in self.locks.values()]}
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.snapshot.parent, prefix=".locks.")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())  # a lock is precious: on disk before we go on
            os.replace(tmp, self.snapshot)
        except OSError as e:
            log.warning("%s", logs.note("cannot write lock snapshot", path=str(self.snapshot),
                                        error=str(e)))
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def check_writable(self) -> bool:
        """At start: warn once when the snapshot cannot be written (no such directory,
        no permission): locks then live in memory and Redis only."""
        if self.snapshot is None:
            return False
        if os.access(self.snapshot.parent, os.W_OK | os.X_OK):
            return True
        log.warning("%s", logs.note("lock snapshot directory not writable; locks kept in "
                                    "memory and redis only", path=str(self.snapshot)))
        return False

    def load_snapshot(self) -> int:
        """Read the snapshot (a list of locks from older versions, or {epoch, locks})."""
        if self.snapshot is None or not self.snapshot.exists():
            return 0
        try:
            data = json.loads(self.snapshot.read_text())
            if isinstance(data, dict):
                epoch, items = str(data.get("epoch", "")), data.get("locks", [])
            else:
                epoch, items = "", data
            locks = {d["account"]: LockInfo(**d) for d in items}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("%s", logs.note("cannot read lock snapshot", path=str(self.snapshot),
                                        error=str(e)))
            return 0
        self.locks, self.epoch = locks, epoch
        self.from_snapshot = set(locks)
        return len(self.locks)
