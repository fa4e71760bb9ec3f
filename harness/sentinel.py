"""A private Redis Sentinel set on loopback: a master, a replica, three sentinels.

Every process is our child, on its own free 127.0.0.1 port, with its own directory
(and, for a sentinel, its own writable config file: Sentinel rewrites it with what it
learns). Ready means: the replica's link to the master is up and every sentinel knows
the replica and the two other sentinels, so a failover can be voted at once.
`kill_master()` SIGKILLs the master by PID (a machine lost, not a clean shutdown);
`wait_failover()` polls the sentinels until they name another master. Everything is
stopped by PID.

Timings follow POSTFIX-FACTS.md: quorum 2, down-after-milliseconds 1000,
failover-timeout 5000 promote the replica about 2 s after the master dies.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import redis

from harness import procs
from harness.redis import RedisInstance, ping_ready

SERVICE = "mymaster"


class SentinelInstance(procs.Child):
    """`redis-server FILE --sentinel`, FILE written by us and rewritten by Sentinel."""

    name = "redis-sentinel"

    def __init__(self, workdir: Path, master_port: int, *, service: str = SERVICE,
                 quorum: int = 2, down_after_ms: int = 1000, failover_timeout_ms: int = 5000,
                 ) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.dir / "sentinel.log")
        self.port = procs.free_port()
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\ndaemonize no\n"
            f'logfile ""\nprotected-mode no\n'
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return ["redis-server", str(self.conf), "--sentinel"]

    def ready_probe(self) -> Callable[[], bool]:
        return ping_ready(("127.0.0.1", self.port))

    def client(self) -> Any:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0,
                           socket_connect_timeout=1.0, decode_responses=True)


class SentinelSet:
    """master + replica (RedisInstance, TCP) + three sentinels, in `workdir`."""

    def __init__(self, workdir: Path, *, service: str = SERVICE, sentinels: int = 3,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        self.dir = Path(workdir)
        self.service = service
        self.master = RedisInstance(self.dir / "redis-a", tcp=True)
        self.replica = RedisInstance(
            self.dir / "redis-b", tcp=True,
            extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinels = [SentinelInstance(self.dir / f"sentinel-{i}", self.master.port,
                                           service=service, down_after_ms=down_after_ms,
                                           failover_timeout_ms=failover_timeout_ms)
                          for i in range(sentinels)]
        self.servers = {self.master.port: self.master, self.replica.port: self.replica}

    @property
    def addresses(self) -> list[str]:
        """What `redis.sentinels` takes."""
        return [s.address for s in self.sentinels]

    def start(self, timeout_s: float = 30.0) -> Self:
        try:
            self.master.start()
            self.replica.start()
            procs.wait_until(lambda: self._link_up(self.replica), timeout_s,
                             "replica link to the master", log=self.replica.log)
            for s in self.sentinels:
                s.start()
            procs.wait_until(self._sentinels_agree, timeout_s,
                             "sentinels knowing the replica and each other",
                             log=self.sentinels[0].log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for r in (self.replica, self.master):
            r.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- looking -----------------------------------------------------------------
    @staticmethod
    def _info(server: RedisInstance) -> dict[str, Any]:
        try:
            c = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1.0,
                            socket_connect_timeout=1.0)
            with c:
                info: Any = c.info("replication")
                return dict(info)
        except redis.RedisError:
            return {}

    def _link_up(self, server: RedisInstance) -> bool:
        return self._info(server).get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            try:
                with s.client() as c:
                    m = c.sentinel_master(self.service)
            except redis.RedisError:
                return False
            if int(m.get("num-slaves", 0)) < 1 or \
                    int(m.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for s in self.sentinels:
            if not s.alive():
                continue
            try:
                with s.client() as c:
                    addr = c.sentinel_get_master_addr_by_name(self.service)
            except redis.RedisError:
                continue
            if addr:
                return int(addr[1])
        return None

    def current_master(self) -> RedisInstance:
        port = self.master_port()
        assert port is not None, "no sentinel names a master"
        return self.servers[port]

    def client(self, server: RedisInstance | None = None) -> Any:
        """A plain client to one server (default: the current master)."""
        s = server or self.current_master()
        return redis.Redis(host="127.0.0.1", port=s.port, socket_timeout=2.0,
                           socket_connect_timeout=1.0, decode_responses=True)

    # -- failing -----------------------------------------------------------------
    def kill_master(self) -> RedisInstance:
        """SIGKILL the current master by PID (no shutdown save, no goodbye to clients)."""
        victim = self.current_master()
        os.kill(victim.pid, signal.SIGKILL)
        victim.stop()  # reaps it (already dead)
        return victim

    def wait_failover(self, old_port: int, timeout_s: float = 30.0) -> tuple[int, float]:
        """Poll the sentinels until they name a master other than `old_port` that
        answers as a master; (its port, seconds waited)."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old_port and \
                    self._info(self.servers[port]).get("role") == "master":
                return port, time.monotonic() - t0
            time.sleep(0.02)
        raise procs.StartError(f"no failover after {timeout_s:.0f}s")

