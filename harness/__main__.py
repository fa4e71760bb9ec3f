"""`make run`: a complete local sandbox in the foreground; Ctrl-C stops it all.

Private Redis, clamd (with a locally generated test signature database),
the policy daemon, the milter, a sink that stores accepted mail under
./sandbox/mail/, and a private Postfix on 127.0.0.1:2525 wired to them.
Everything runs from ./sandbox/ (git-ignored) and is stopped by PID.

Every way out stops every child: Ctrl-C, SIGTERM, SIGHUP, a closed stdout
(`make run | tee run.log` and the reader goes away), an exception while
starting, a child that keeps dying. A child that dies is restarted with a
logged line. The PIDs of every child started are in DIR/pids.json; what the
harness itself says is also appended to DIR/harness.log (readable when stdout
is gone). Mail left in Postfix's queue by an earlier run is kept and delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink

SMTP_PORT = 2525
SANDBOX_LIMIT = 5  # external recipients per window, low enough to see the lock by hand
RESTARTS_ALLOWED = 5  # per child within RESTART_WINDOW_S; one more and the sandbox stops
RESTART_WINDOW_S = 60.0
PIDS_FILE = "pids.json"
HARNESS_LOG = "harness.log"


class Stoppable(Protocol):
    def stop(self) -> Any: ...


def write_sandbox_config(path: Path, *, policyd: str, milter: str, redis_url: str,
                         clamd: str, limit: int = SANDBOX_LIMIT) -> Path:
    return write_config(path, {
        "ratelimit.limit": limit,
        "policyd.listen": policyd, "policyd.socket_mode": "0666",
        "domains.trusted_networks": ["127.0.0.0/8"], "policyd.stats_interval": 60.0,
        "policyd.lock_refresh": 1.0,
        "milter.listen": milter, "milter.socket_mode": "0666",
        "antivirus.clamd": clamd,
        "redis.url": redis_url,
        "logging.level": "info", "logging.log_accepts": True,
    })


class Console:
    """The harness's voice: stdout/stderr and DIR/harness.log.

    A closed stdout or stderr (the reader of a pipe went away) does not raise: it is
    remembered, the stream is pointed at /dev/null (so nothing later, not even the
    interpreter's final flush, fails on it) and `on_broken` is called once."""

    def __init__(self, log: Path, on_broken: Callable[[], None]) -> None:
        self.log = log
        self.on_broken = on_broken
        self.broken = False
        self._lock = threading.Lock()

    def say(self, text: str, *, err: bool = False) -> None:
        with self._lock:
            with contextlib.suppress(OSError), open(self.log, "a") as f:
                f.write(text + "\n")
            stream = sys.stderr if err else sys.stdout
            try:
                stream.write(text + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                self._lost(stream)
            except OSError as e:
                if e.errno != errno.EPIPE:
                    raise
                self._lost(stream)

    def check(self) -> None:
        """Notice a pipe whose reader went away even when there is nothing to print."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                p = select.poll()
                p.register(stream.fileno(), 0)  # POLLERR on a pipe with no reader left
                if any(ev & select.POLLERR for _, ev in p.poll(0)):
                    with self._lock:
                        self._lost(stream)

    def _lost(self, stream: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        with contextlib.suppress(OSError), open(self.log, "a") as f:
            f.write("harness: output pipe closed; stopping\n")
        if not self.broken:
            self.broken = True
            self.on_broken()


@dataclass
class Service:
    """One child of the sandbox: how to start it, tell it is alive and list its PIDs."""

    name: str
    make: Callable[[], Any]  # a new, not yet started instance
    instance: Any = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> Any:
        """Start it; a restart reuses the instance (same port, socket, directory)."""
        if self.instance is None:
            self.instance = self.make()
        self.instance.start()
        return self.instance

    def stop(self) -> None:
        if self.instance is not None:
            self.instance.stop()

    def alive(self) -> bool:
        i = self.instance
        if i is None:
            return False
        if isinstance(i, ClamdInstance):
            return i.running
        if isinstance(i, PostfixInstance):
            return i.proc is not None and i.proc.poll() is None and _exists(i.master_pid)
        return bool(i.alive())

    def pids(self) -> list[int]:
        i = self.instance
        if isinstance(i, PostfixInstance):  # the start-fg wrapper and the master
            return [p for p in (i.proc.pid if i.proc else 0, i.master_pid) if p]
        with contextlib.suppress(AssertionError, RuntimeError):
            return [int(i.pid)]
        return []

    def exit_status(self) -> object:
        i = self.instance
        proc = getattr(i, "proc", None) or getattr(i, "_proc", None)
        return proc.poll() if proc is not None else "?"


def _exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class Sandbox:
    def __init__(self, root: Path, console: Console, stop: threading.Event) -> None:
        self.root = root
        self.say = console.say
        self.stop_requested = stop
        self.services: list[Service] = []
        self.pids: dict[str, list[int]] = {"harness": [os.getpid()]}

    def record(self, service: Service) -> None:
        """Add the service's PIDs to DIR/pids.json (every PID started this run)."""
        known = self.pids.setdefault(service.name, [])
        known += [p for p in service.pids() if p not in known]
        tmp = self.root / (PIDS_FILE + ".tmp")
        tmp.write_text(json.dumps(self.pids, indent=1) + "\n")
        os.replace(tmp, self.root / PIDS_FILE)

    def start(self, name: str, make: Callable[[], Any]) -> Any:
        if self.stop_requested.is_set():
            raise Interrupted
        service = Service(name, make)
        self.services.append(service)
        try:
            return service.start()
        finally:
            self.record(service)

    def check(self) -> None:
        """Restart a child that died; stop the sandbox when one keeps dying."""
        for s in self.services:
            if self.stop_requested.is_set() or s.alive():
                continue
            now = time.monotonic()
            s.restarts = [t for t in s.restarts if now - t < RESTART_WINDOW_S]
            status = s.exit_status()
            if len(s.restarts) >= RESTARTS_ALLOWED:
                self.say(f"harness: {s.name} died (status {status}) {len(s.restarts) + 1} "
                         f"times in {RESTART_WINDOW_S:.0f}s; stopping the sandbox", err=True)
                raise ChildKeepsDying(s.name)
            s.restarts.append(now)
            self.say(f"harness: {s.name} died (status {status}); restarting it", err=True)
            try:
                s.stop()  # reap it and whatever it left (postfix: the master's children)
                s.start()
            except Exception as e:
                self.record(s)
                self.say(f"harness: {s.name} did not restart: {e}", err=True)
                continue
            self.record(s)
            self.say(f"harness: {s.name} restarted (pid {', '.join(map(str, s.pids()))})",
                     err=True)

    def stop_all(self) -> None:
        """Stop every child by PID, newest first; one that will not stop does not keep
        the others running."""
        for s in reversed(self.services):
            try:
                s.stop()
            except Exception as e:
                self.say(f"harness: stopping {s.name}: {e}", err=True)
        self.services.clear()


class Interrupted(Exception):
    """A stop was asked for while starting."""


class ChildKeepsDying(Exception):
    pass


def follow(paths: list[Path], done: threading.Event, say: Callable[[str], None]) -> None:
    """Print the logs' new complete lines as they come, until `done` (then one last pass)."""
    offsets = {p: 0 for p in paths}
    while True:
        last = done.is_set()
        for p in paths:
            if not p.exists():
                continue
            with open(p, "rb") as f:
                f.seek(offsets[p])
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for its end
            offsets[p] += end
            for line in data[:end].decode(errors="replace").splitlines():
                say(f"[{p.stem}] {line}")
        if last:
            return
        done.wait(0.3)


def daemon_maker(kind: str, config: Path, root: Path) -> Callable[[], Daemon]:
    return lambda: Daemon(kind, config, f"unix:{root}/{kind}.sock", root / f"{kind}.log")


def prepare(root: Path) -> None:
    """Fresh Redis, clamd and daemon logs; Postfix's queue (mail not yet delivered by an
    earlier run) is kept, its maillog moved to maillog.prev."""
    for sub in ("redis", "clamd"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for log in ("policyd.log", "milter.log", "sink.log", HARNESS_LOG, PIDS_FILE):
        (root / log).unlink(missing_ok=True)  # this run's lines only; mail/ is kept
    maillog = root / "postfix" / "maillog"
    if maillog.exists():
        maillog.replace(maillog.with_name("maillog.prev"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # Postfix's unprivileged daemons reach the sockets in here


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="sandbox", help="where everything lives (default ./sandbox)")
    ap.add_argument("--port", type=int, default=SMTP_PORT)
    ap.add_argument("--no-milter", action="store_true", help="without clamd and the milter")
    ap.add_argument("--no-policyd", action="store_true",
                    help="without the policy daemon (Postfix asks no policy service)")
    args = ap.parse_args(argv)

    root = Path(args.dir).resolve()
    prepare(root)
    stop = threading.Event()
    console = Console(root / HARNESS_LOG, on_broken=stop.set)
    say = console.say
    sandbox = Sandbox(root, console, stop)
    why = ""

    def shutdown(signum: int, _frame: object) -> None:
        nonlocal why
        why = why or signal.Signals(signum).name
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, shutdown)
    followed = threading.Event()
    follower: threading.Thread | None = None
    status = 0
    try:
        say("starting redis-server ...")
        redis = sandbox.start("redis-server", lambda: RedisInstance(root / "redis"))
        clamd = None
        if not args.no_milter:
            say("starting clamd (test signatures only: EICAR, clam.exe) ...")
            clamd = sandbox.start("clamd", lambda: ClamdInstance(root / "clamd"))
        sink = sandbox.start("sink", lambda: Sink(root))
        config = write_sandbox_config(
            root / "mailwarden.toml", policyd=f"unix:{root}/policyd.sock",
            milter=f"unix:{root}/milter.sock", redis_url=redis.url,
            clamd=clamd.address if clamd else "unix:/nonexistent")
        policyd, milter = not args.no_policyd, not args.no_milter
        for kind, wanted in (("policyd", policyd), ("milter", milter)):
            if wanted:
                say(f"starting mailwarden {kind} ...")
                sandbox.start(kind, daemon_maker(kind, config, root))
        say(f"starting postfix on 127.0.0.1:{args.port} ...")
        postfix = sandbox.start("postfix", lambda: PostfixInstance(
            root / "postfix", relay_port=sink.port, smtpd_port=args.port,
            policy=f"unix:{root}/policyd.sock" if policyd else None,
            milter=f"unix:{root}/milter.sock" if milter else None))

        logs = [postfix.maillog]
        logs += [root / "policyd.log"] if policyd else []
        logs += [root / "milter.log"] if milter else []
        say(f"""
mailwarden sandbox is up (Ctrl-C stops everything).
  SMTP:    127.0.0.1:{args.port}   (Postfix, relays accepted mail to the sink)
  mail:    {sink.dir}/   (NNNNNN.eml byte for byte + NNNNNN.json envelope)
  logs:    {", ".join(map(str, logs))} (followed below)
  config:  {config}   (limit {SANDBOX_LIMIT} external recipients / 10m)
  daemons: {"" if policyd else "NO "}policyd, {"" if milter else "NO "}milter
  pids:    {root / PIDS_FILE}

Try:
  swaks --server 127.0.0.1:{args.port} --from someone@gmail.com --to alice@ninhbinh.gov.vn
  swaks --server 127.0.0.1:{args.port} --xclient-login alice@ninhbinh.gov.vn \\
        --xclient-addr 10.20.30.40 --from alice@ninhbinh.gov.vn --to friend@gmail.com
  .venv/bin/mailwarden --config {config} locks
""")
        follower = threading.Thread(target=follow, args=(logs, followed, say), daemon=True)
        follower.start()
        while not stop.is_set():
            sandbox.check()
            console.check()
            stop.wait(0.5)
        if console.broken:
            why = why or "output closed"
    except Interrupted:
        pass
    except ChildKeepsDying:
        status = 1
    except BaseException as e:  # whatever it was, the children are stopped below
        say(f"sandbox: could not start: {e}" if follower is None else f"sandbox: {e!r}",
            err=True)
        status = 1
        if not isinstance(e, Exception):
            raise
    finally:
        # A second Ctrl-C must not cut the stopping short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, shutdown)
        say(f"\nstopping ({why or 'error'}) ...")
        sandbox.stop_all()
        followed.set()
        if follower is not None:
            follower.join(5)  # its last pass prints the shutdown lines
        say("sandbox stopped")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
