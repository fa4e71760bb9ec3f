"""Start a server process, wait until it is ready by probing, stop it by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self


class StartError(RuntimeError):
    """A server did not become ready in time; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def unix_ready(path: str | Path) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(path))
                return True
        except OSError:
            return False

    return probe


def wait_until(
    probe: Callable[[], bool],
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `probe` (a socket probe, not a sleep-and-hope) until it is true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        if alive is not None and not alive():
            break
        time.sleep(0.02)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise StartError(f"{what} not ready after {timeout_s:.0f}s{tail}")


# The directory holding the `harness` package (the repository root). The harness is not
# installed with the package, so a child `python -m harness.sink` started from another
# working directory finds it through PYTHONPATH.
HARNESS_ROOT = str(Path(__file__).resolve().parent.parent)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: ours) with the harness's root first on PYTHONPATH."""
    out = dict(os.environ if env is None else env)
    rest = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != HARNESS_ROOT]
    out["PYTHONPATH"] = os.pathsep.join([HARNESS_ROOT, *rest])
    return out


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Run `argv` in its own session with stdout+stderr appended to `log`.

    Python children get the harness's root on PYTHONPATH so `-m harness.X` imports."""
    if argv and argv[0] == sys.executable:
        env = child_env(env)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the process we started, then SIGKILL if it will not go."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Child:
    """One server we start as a child process: spawn, wait for readiness, stop by PID.

    Subclasses say what to run (`argv()`), how to tell it is ready (`ready_probe()`),
    its name and log file; `start()` cleans up after itself if the server never comes up.
    """

    name = "server"
    start_timeout_s = 15.0

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready_probe(self) -> Callable[[], bool]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.proc = spawn(self.argv(), self.log)
        try:
            wait_until(self.ready_probe(), self.start_timeout_s, self.name, alive=self.alive,
                       log=self.log)
        except StartError:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """SIGTERM by PID and wait; returns the exit status."""
        if self.proc is None:
            return None
        stop(self.proc)
        code, self.proc = self.proc.returncode, None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
