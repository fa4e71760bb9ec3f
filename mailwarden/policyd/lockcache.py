"""The in-process copy of the lock list.

Updated at once by this daemon's own locks and by every lock/unlock event
published on the lock channel (the CLI, other daemons' rate locks: server.py),
refreshed whole from Redis every `policyd.lock_refresh` and after every
(re)subscription, and optionally saved to a snapshot file, so that a locked
(possibly compromised) account stays refused when Redis is unreachable, even
across a restart of the daemon during the outage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from mailwarden.rules.ratelock import LockInfo

log = logging.getLogger("mailwarden.policyd")


class LockCache:
    def __init__(self, snapshot: str = "", rate_lock_expire_s: float = 0.0) -> None:
        self.locks: dict[str, LockInfo] = {}
        self.snapshot = Path(snapshot) if snapshot else None
        self.expire_s = rate_lock_expire_s
        self.loaded_from_redis = False

    def get(self, account: str, now: float) -> LockInfo | None:
        lock = self.locks.get(account)
        if lock and lock.kind == "rate" and self.expire_s and lock.since + self.expire_s <= now:
            return None
        return lock

    def add(self, lock: LockInfo) -> None:
        self.locks[lock.account] = lock

    def remove(self, account: str) -> None:
        self.locks.pop(account, None)

    def replace_all(self, locks: list[LockInfo]) -> None:
        new = {lk.account: lk for lk in locks}
        changed = new.keys() != self.locks.keys()
        self.locks = new
        self.loaded_from_redis = True
        if changed:
            self.save()

    def save(self) -> None:
        if self.snapshot is None:
            return
        data = [lk.__dict__ for lk in self.locks.values()]
        try:
            fd, tmp = tempfile.mkstemp(dir=self.snapshot.parent, prefix=".locks.")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.snapshot)
        except OSError as e:
            log.warning("cannot write lock snapshot %s: %s", self.snapshot, e)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)

    def load_snapshot(self) -> int:
        if self.snapshot is None or not self.snapshot.exists():
            return 0
        try:
            data = json.loads(self.snapshot.read_text())
            self.locks = {d["account"]: LockInfo(**d) for d in data}
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("cannot read lock snapshot %s: %s", self.snapshot, e)
            return 0
        return len(self.locks)
