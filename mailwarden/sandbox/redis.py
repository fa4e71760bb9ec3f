"""A private redis-server: own directory, unix socket (or loopback TCP), by PID."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mailwarden.sandbox import procs


class RedisInstance:
    def __init__(self, workdir: Path, *, tcp: bool = False, appendonly: bool = False) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "redis.sock"
        self.port = procs.free_port() if tcp else 0
        self.appendonly = appendonly
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> RedisInstance:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "yes"]
        self.proc = procs.spawn(argv, self.log)
        probe = procs.tcp_ready("127.0.0.1", self.port) if self.port else \
            procs.unix_ready(self.socket)
        procs.wait_until(probe, 15, "redis-server", alive=lambda: self.proc is not None
                         and self.proc.poll() is None, log=self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def __enter__(self) -> RedisInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
