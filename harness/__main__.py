"""`make run`: a complete local sandbox in the foreground; Ctrl-C stops it all.

Private Redis, clamd (with a locally generated test signature database),
the policy daemon, the milter, a sink that stores accepted mail under
./sandbox/mail/, and a private Postfix on 127.0.0.1:2525 wired to them.
Everything runs from ./sandbox/ (git-ignored) and is stopped by PID.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink

SMTP_PORT = 2525
SANDBOX_LIMIT = 5  # external recipients per window, low enough to see the lock by hand


class Stoppable(Protocol):
    def stop(self) -> Any: ...


def write_sandbox_config(path: Path, *, policyd: str, milter: str, redis_url: str,
                         clamd: str, limit: int = SANDBOX_LIMIT) -> Path:
    return write_config(path, {
        "ratelimit.limit": limit,
        "policyd.listen": policyd, "policyd.socket_mode": "0666",
        "policyd.trusted_networks": ["127.0.0.0/8"], "policyd.stats_interval": 60.0,
        "policyd.lock_refresh": 1.0,
        "milter.listen": milter, "milter.socket_mode": "0666",
        "antivirus.clamd": clamd,
        "redis.url": redis_url,
        "logging.level": "info", "logging.log_accepts": True,
    })


def follow(paths: list[Path], done: threading.Event) -> None:
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
                print(f"[{p.stem}] {line}", flush=True)
        if last:
            return
        done.wait(0.3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    ap.add_argument("--dir", default="sandbox", help="where everything lives (default ./sandbox)")
    ap.add_argument("--port", type=int, default=SMTP_PORT)
    ap.add_argument("--no-milter", action="store_true", help="without clamd and the milter")
    ap.add_argument("--no-policyd", action="store_true",
                    help="without the policy daemon (Postfix asks no policy service)")
    args = ap.parse_args(argv)

    root = Path(args.dir).resolve()
    for sub in ("postfix", "redis", "clamd"):
        shutil.rmtree(root / sub, ignore_errors=True)  # fresh queue and state each run
    for log in ("policyd.log", "milter.log", "sink.log"):
        (root / log).unlink(missing_ok=True)  # this run's lines only; mail/ is kept
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # Postfix's unprivileged daemons reach the sockets in here
    started: list[Stoppable] = []
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    try:
        print("starting redis-server ...", flush=True)
        redis = RedisInstance(root / "redis").start()
        started.append(redis)
        clamd = None
        if not args.no_milter:
            print("starting clamd (test signatures only: EICAR, clam.exe) ...", flush=True)
            clamd = ClamdInstance(root / "clamd").start()
            started.append(clamd)
        sink = Sink(root).start()
        started.append(sink)
        config = write_sandbox_config(
            root / "mailwarden.toml", policyd=f"unix:{root}/policyd.sock",
            milter=f"unix:{root}/milter.sock", redis_url=redis.url,
            clamd=clamd.address if clamd else "unix:/nonexistent")
        policyd = None
        if not args.no_policyd:
            print("starting mailwarden policyd ...", flush=True)
            policyd = Daemon("policyd", config, f"unix:{root}/policyd.sock",
                             root / "policyd.log").start()
            started.append(policyd)
        milter = None
        if not args.no_milter:
            print("starting mailwarden milter ...", flush=True)
            milter = Daemon("milter", config, f"unix:{root}/milter.sock",
                            root / "milter.log").start()
            started.append(milter)
        print(f"starting postfix on 127.0.0.1:{args.port} ...", flush=True)
        postfix = PostfixInstance(root / "postfix", relay_port=sink.port, smtpd_port=args.port,
                                  policy=f"unix:{root}/policyd.sock" if policyd else None,
                                  milter=f"unix:{root}/milter.sock" if milter else None).start()
        started.append(postfix)
    except Exception as e:
        print(f"sandbox: could not start: {e}", file=sys.stderr)
        for s in reversed(started):
            s.stop()
        return 1

    logs = [postfix.maillog]
    logs += [root / "policyd.log"] if policyd else []
    logs += [root / "milter.log"] if milter else []
    print(f"""
mailwarden sandbox is up (Ctrl-C stops everything).
  SMTP:    127.0.0.1:{args.port}   (Postfix, relays accepted mail to the sink)
  mail:    {sink.dir}/   (NNNNNN.eml byte for byte + NNNNNN.json envelope)
  logs:    {", ".join(map(str, logs))} (followed below)
  config:  {config}   (limit {SANDBOX_LIMIT} external recipients / 10m)
  daemons: {"" if policyd else "NO "}policyd, {"" if milter else "NO "}milter

Try:
  swaks --server 127.0.0.1:{args.port} --from someone@gmail.com --to alice@ninhbinh.gov.vn
  swaks --server 127.0.0.1:{args.port} --xclient-login alice@ninhbinh.gov.vn \\
        --xclient-addr 10.20.30.40 --from alice@ninhbinh.gov.vn --to friend@gmail.com
  .venv/bin/mailwarden --config {config} locks
""", flush=True)
    followed = threading.Event()
    follower = threading.Thread(target=follow, args=(logs, followed), daemon=True)
    follower.start()
    while not stop.is_set():
        for name, d in (("policyd", policyd), ("milter", milter)):
            if d is not None and d.proc is not None and d.proc.poll() is not None:
                print(f"sandbox: {name} exited with {d.proc.returncode}; stopping",
                      file=sys.stderr)
                stop.set()
        stop.wait(0.5)
    print("\nstopping ...", flush=True)
    for s in reversed(started):
        s.stop()
    followed.set()
    follower.join(5)  # its last pass prints the shutdown lines
    print("sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
