"""A private redis-server: own directory, unix socket (or loopback TCP), by PID.

`RedisInstance(dir)` listens on `dir/redis.sock` only (`port 0`); with
`tcp=True` also on a free 127.0.0.1 port, and `.url` is then the TCP one.
`stop()` then `start()` again reuses the same socket path, port and data
directory ("Redis down, then back up"); with `appendonly=True` the data
survives that restart. Ready means it answered PING, not merely that the
socket accepts.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from harness import procs


def ping_ready(address: str | tuple[str, int]) -> Callable[[], bool]:
    """A probe that is true once the server at `address` answers PING with +PONG."""

    def probe() -> bool:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(address)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return probe


class RedisInstance(procs.Child):
    name = "redis-server"

    def __init__(self, workdir: Path, *, tcp: bool = False, appendonly: bool = False,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.dir / "redis.log")
        self.socket = self.dir / "redis.sock"
        self.port = procs.free_port() if tcp else 0
        self.appendonly = appendonly
        self.extra_args = extra_args  # e.g. ("--replicaof", "127.0.0.1", "6379")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}"

    def argv(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no",
                "--protected-mode", "yes", "--logfile", "", *self.extra_args]

    def ready_probe(self) -> Callable[[], bool]:
        return ping_ready(("127.0.0.1", self.port) if self.port else str(self.socket))
