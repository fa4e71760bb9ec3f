"""Load test of the policy daemon against a DUNNO-only ceiling, in one run.

    .venv/bin/python -m benchmarks.policyd_load --report benchmarks/policyd.md

What it does (all on loopback, every process started here and stopped by PID):

1. builds benchmarks/policy_client.c (gcc -O2) into a private work directory;
2. starts a private redis-server (unix socket + a loopback TCP port, no
   persistence);
3. for every row: starts the server of that row (the daemon with the row's
   config, or benchmarks/dunno_server.py), FLUSHALL, runs the C client
   (C connections, one request in flight each, Postfix 3.7 RCPT attribute
   set, 1,000 SASL senders, 90 % external recipients, a distinct `instance`
   per request) for a warm-up and a measured interval; CPU time of the
   server, of Redis and of the client is sampled by the client at the edges
   of the measured interval (/proc/PID/stat, getrusage);
4. the 10 %-locked row: locks 10 % of the senders with the real CLI code
   (`mailwarden --config F lock ADDR --reason bench`) before the daemon starts;
5. Redis memory: every sender commits a full window (N = limit) through the
   daemon (RCPT x5 + END-OF-MESSAGE per message), used_memory delta / senders;
6. a py-spy profile of the daemon at C=100 (cProfile if py-spy is missing);
7. writes the Markdown report, with benchmarks/policyd_analysis.md appended.

Every row is measured --rounds times (interleaved; the median counts), the
server alone on one CPU (taskset) and everything else on the other. Redis is
flushed before every row, and a row is short enough (throughput x 3 s /
1,000 senders x 0.9 external recipients per sender) that no sender gets near
the limit: the rows measure accepted requests, the expensive path (a Redis
script call each). The refused share is in the table.

A/B of daemon changes without touching the tree: `--variant NAME=DIR` adds
every selected policyd row again with the daemon imported from DIR/mailwarden
(see benchmarks/policyd_experiments/ and the analysis).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.procs import free_port, spawn, stop_pid, tcp_ready, unix_ready, wait_until

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SENDER_FMT = "nv%04d@ninhbinh.gov.vn"  # the client's --sender-format (C printf)
BLOCK_UVLOOP = ("import sys; sys.modules['uvloop'] = None; "
                "from mailwarden.cli import main; sys.exit(main(sys.argv[1:]))")


# -- rows ------------------------------------------------------------------------
@dataclass
class Row:
    key: str
    label: str
    server: str  # "dunno" | "policyd"
    conns: int
    uvloop: bool = True
    batching: bool = True
    redis_via: str = "unix"  # how the daemon reaches Redis
    listen: str = "unix"  # the policy socket (Postfix side)
    codec: bool = False  # dunno_server parses with the daemon's codec
    locked_pct: int = 0
    pythonpath: str = ""  # run the server from another copy of the package (--variant)
    result: dict[str, Any] = field(default_factory=dict)  # medians over the rounds
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def settle(self) -> None:
        """Each number of the row is the median of that number over the rounds."""
        if self.rounds:
            self.result = dict(self.rounds[0])
            for k, v in self.rounds[0].items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self.result[k] = statistics.median(r[k] for r in self.rounds)
            self.result["rps_min"] = min(r["rps"] for r in self.rounds)
            self.result["rps_max"] = max(r["rps"] for r in self.rounds)

    def server_config(self) -> tuple[Any, ...]:
        return (self.server, self.uvloop, self.batching, self.redis_via, self.listen,
                self.codec, self.locked_pct, self.pythonpath)


DEFAULT_POLICYD = Row("", "", "policyd", 0).server_config()


def all_rows() -> list[Row]:
    rows: list[Row] = []
    for c in (1, 10, 100):
        rows.append(Row(f"dunno-c{c}", "DUNNO ceiling", "dunno", c))
    for c in (1, 10, 100):
        rows.append(Row(f"dunno-asyncio-c{c}", "DUNNO ceiling, plain asyncio", "dunno", c,
                        uvloop=False))
    rows.append(Row("dunno-tcp-c100", "DUNNO ceiling, policy socket TCP", "dunno", 100,
                    listen="tcp"))
    rows.append(Row("dunno-codec-c100", "DUNNO + the daemon's codec (parse every attribute)",
                    "dunno", 100, codec=True))
    for c in (1, 10, 100):
        rows.append(Row(f"policyd-c{c}", "policyd (default: batching, uvloop, Redis unix)",
                        "policyd", c))
    for c in (10, 100):
        rows.append(Row(f"policyd-nobatch-c{c}", "policyd, redis.batching = false", "policyd", c,
                        batching=False))
    rows.append(Row("policyd-asyncio-c100", "policyd, plain asyncio (uvloop blocked)",
                    "policyd", 100, uvloop=False))
    rows.append(Row("policyd-naive-c100", "policyd, batching = false + plain asyncio",
                    "policyd", 100, uvloop=False, batching=False))
    rows.append(Row("policyd-redistcp-c100", "policyd, Redis over TCP", "policyd", 100,
                    redis_via="tcp"))
    rows.append(Row("policyd-tcp-c100", "policyd, policy socket TCP", "policyd", 100,
                    listen="tcp"))
    rows.append(Row("policyd-locked-c100", "policyd, 10 % of senders locked", "policyd", 100,
                    locked_pct=10))
    return rows


# -- processes -------------------------------------------------------------------
class Procs:
    """Every process this run started, stopped by PID at the end."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def add(self, pid: int) -> None:
        self.pids.append(pid)

    def stop(self, pid: int) -> None:
        stop_pid(pid)
        with contextlib.suppress(ValueError):
            self.pids.remove(pid)

    def stop_all(self) -> None:
        for pid in reversed(list(self.pids)):
            self.stop(pid)


def uvloop_loaded(pid: int) -> bool:
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@dataclass
class Env:
    work: Path
    client: Path
    redis_pid: int
    redis_sock: Path
    redis_port: int
    python: str
    pythonpath: str
    procs: Procs
    server_cpus: list[str] = field(default_factory=list)  # taskset prefix for servers
    other_cpus: list[str] = field(default_factory=list)  # ... for client, Redis, py-spy
    commands: list[str] = field(default_factory=list)

    def note(self, argv: Sequence[str], pythonpath: str = "") -> None:
        """Remember a command for the report, in a form that repeats across rows."""
        text = shlex.join(str(a) for a in argv).replace(str(self.work), "$WORK")
        text = text.replace(str(ROOT) + "/", "")
        text = re.sub(r"--(seed|run-id) \d+", r"--\1 N", text)
        text = re.sub(r"--port \d+", "--port PORT", text)
        text = re.sub(r"inet:127\.0\.0\.1:\d+", "inet:127.0.0.1:PORT", text)
        if pythonpath:
            text = f"PYTHONPATH={pythonpath} {text}"
        if text not in self.commands:
            self.commands.append(text)

    def env(self, pythonpath: str = "") -> dict[str, str]:
        """Servers run in the work directory with the tree (for benchmarks.*) on PYTHONPATH,
        after --pythonpath/--variant, so that an experimental copy of the package wins."""
        e = dict(os.environ)
        path = [x for x in (pythonpath or self.pythonpath, str(ROOT), e.get("PYTHONPATH", ""))
                if x]
        e["PYTHONPATH"] = os.pathsep.join(path)
        return e

    def redis(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.redis_sock))


def pinning(enabled: bool) -> tuple[list[str], list[str]]:
    """taskset prefixes: the server alone on the last CPU, everything else on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2 or not shutil.which("taskset"):
        return [], []
    rest = ",".join(str(c) for c in cpus[:-1])
    return ["taskset", "-c", str(cpus[-1])], ["taskset", "-c", rest]


def start_redis(work: Path, procs: Procs,
                prefix: Sequence[str] = ()) -> tuple[int, Path, int, list[str]]:
    sock = work / "redis.sock"
    port = free_port()
    argv = [*prefix, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--unixsocket", str(sock), "--unixsocketperm", "700", "--save", "",
            "--appendonly", "no", "--dir", str(work)]
    p = spawn(argv, work / "redis.log")
    procs.add(p.pid)
    wait_until(unix_ready(sock), 10, "redis-server", alive=lambda: p.poll() is None,
               log=work / "redis.log")
    return p.pid, sock, port, argv


def policyd_config(env: Env, row: Row, listen: str) -> Path:
    url = (f"unix://{env.redis_sock}" if row.redis_via == "unix"
           else f"redis://127.0.0.1:{env.redis_port}/0")
    path = env.work / f"policyd-{row.key}.toml"
    path.write_text(
        "[policyd]\n"
        f'listen = "{listen}"\n'
        'stats_interval = "0s"\n'
        "[redis]\n"
        f'url = "{url}"\n'
        f"batching = {'true' if row.batching else 'false'}\n"
        "[ratelimit]\n"
        "limit = 250\n")
    return path


def start_server(env: Env, row: Row) -> tuple[int, str, Path]:
    """Start the row's server; returns (pid, client target, config or log)."""
    log = env.work / f"server-{row.key}.log"
    if row.listen == "unix":
        sock = env.work / f"{row.server}.sock"
        listen, target, probe = f"unix:{sock}", f"unix:{sock}", unix_ready(sock)
    else:
        port = free_port()
        listen, target = f"inet:127.0.0.1:{port}", f"inet:127.0.0.1:{port}"
        probe = tcp_ready("127.0.0.1", port)
    cfg = log
    if row.server == "dunno":
        argv = [env.python, "-m", "benchmarks.dunno_server", "--listen", listen]
        if not row.uvloop:
            argv.append("--no-uvloop")
        if row.codec:
            argv.append("--codec")
    else:
        cfg = policyd_config(env, row, listen)
        if row.uvloop:
            argv = [env.python, "-m", "mailwarden", "--config", str(cfg), "policyd"]
        else:
            argv = [env.python, "-c", BLOCK_UVLOOP, "--config", str(cfg), "policyd"]
    argv = [*env.server_cpus, *argv]
    env.note(argv, row.pythonpath)
    p = spawn(argv, log, env=env.env(row.pythonpath), cwd=env.work)
    env.procs.add(p.pid)
    wait_until(probe, 20, row.server, alive=lambda: p.poll() is None, log=log)
    return p.pid, target, cfg


def run_client(env: Env, target: str, conns: int, pids: Sequence[int], seed: int,
               args: argparse.Namespace, extra: Sequence[str] = (),
               timeout: float = 120) -> dict[str, Any]:
    argv = [*env.other_cpus, str(env.client), "--target", target, "--conns", str(conns),
            "--warmup", str(args.warmup), "--duration", str(args.duration),
            "--senders", str(args.senders), "--external-pct", str(args.external_pct),
            "--sender-format", SENDER_FMT, "--seed", str(seed), "--run-id", str(seed),
            *[x for pid in pids for x in ("--pid", str(pid))], *extra]
    env.note([re.sub(r"^\d+$", "PID", a) if i and argv[i - 1] == "--pid" else a
              for i, a in enumerate(argv)])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if not out.stdout.strip():
        raise RuntimeError(f"policy_client failed ({out.returncode}): {out.stderr.strip()}")
    res: dict[str, Any] = json.loads(out.stdout)
    res["returncode"] = out.returncode
    return res


def summarize(res: dict[str, Any], server_pid: int, redis_pid: int) -> dict[str, Any]:
    n = max(res["requests"], 1)
    wall = res["wall_s"] or 1.0
    cpu = {int(k): v for k, v in res["pid_cpu_s"].items()}
    ncpu = os.cpu_count() or 1
    replies = res["dunno"] + res["other"]
    m = res["machine_ticks"]
    total = max(sum(m.values()), 1)
    busy = total - m["idle"] - m["iowait"]
    return {
        **res,
        "server_us": cpu.get(server_pid, -1) / n * 1e6,
        "server_pct": cpu.get(server_pid, -1) / wall * 100,
        "redis_us": cpu.get(redis_pid, -1) / n * 1e6,
        "redis_pct": cpu.get(redis_pid, -1) / wall * 100,
        "client_us": res["client_cpu_s"] / n * 1e6,
        "client_pct": res["client_cpu_s"] / wall * 100,
        "machine_pct": busy / total * 100 * ncpu,
        # CPU used meanwhile by everything that is not part of the test (the machine is
        # shared with other people's work), in % of one core
        "other_pct": (busy / total * ncpu - sum(v for v in cpu.values() if v > 0) / wall
                      - res["client_cpu_s"] / wall) * 100,
        "refused_pct": res["other"] / replies * 100 if replies else 0.0,
    }


# -- phases ------------------------------------------------------------------------
def lock_senders(cfg: Path, count: int) -> list[str]:
    """`mailwarden --config CFG lock ADDR --reason bench` for the first `count` senders."""
    from mailwarden.cli import main as cli_main

    done = []
    for i in range(count):
        addr = SENDER_FMT % i
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(["--config", str(cfg), "lock", addr, "--reason", "bench"])
        if rc != 0:
            raise RuntimeError(f"mailwarden lock {addr} failed ({rc})")
        done.append(addr)
    return done


def memory_phase(env: Env, target: str, server_pid: int,
                 args: argparse.Namespace) -> dict[str, Any]:
    r = env.redis()
    r.flushall()
    before = int(r.info("memory")["used_memory"])
    keys_before = int(r.dbsize())
    res = run_client(env, target, 100, [server_pid, env.redis_pid], 9000, args, extra=(
        "--mode", "fill", "--fill-recipients", str(args.limit),
        "--fill-per-message", str(args.fill_per_message)), timeout=600)
    time.sleep(0.2)
    after = int(r.info("memory")["used_memory"])
    pipe = r.pipeline(transaction=False)
    for i in range(args.senders):
        pipe.zcard(f"mw:{{{SENDER_FMT % i}}}:win")
    cards = pipe.execute()
    full = sum(1 for c in cards if int(c) == args.limit)
    # What the bytes are: MEMORY USAGE of every key, grouped by kind.
    by_kind: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    batch: list[bytes] = []

    def flush() -> None:
        p = r.pipeline(transaction=False)
        for k in batch:
            p.memory_usage(k, samples=0)
        for k, used in zip(batch, p.execute(), strict=True):
            name = k.decode()
            kind = ("window ZSET (:win)" if name.endswith(":win") else
                    "reservations ZSET (:pend)" if name.endswith(":pend") else
                    "transaction SET (:msg:INSTANCE)" if ":msg:" in name else
                    "queue-id STRING (mw:queue:QID)" if name.startswith("mw:queue:") else
                    "other")
            by_kind[kind][0] += 1
            by_kind[kind][1] += int(used or 0)
        batch.clear()

    for k in r.scan_iter(count=1000):
        batch.append(k)
        if len(batch) >= 2000:
            flush()
    flush()
    enc = r.object("encoding", f"mw:{{{SENDER_FMT % 0}}}:win")
    r.close()
    return {
        "client": res, "before": before, "after": after, "keys_before": keys_before,
        "senders_full": full, "window_entries": args.limit, "by_kind": dict(by_kind),
        "win_encoding": enc.decode() if isinstance(enc, bytes) else str(enc),
        "per_sender": (after - before) / max(full, 1),
    }


def aggregate_pyspy(raw: Path) -> dict[str, Any]:
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return {"total": total, "self": self_c.most_common(20), "incl": incl}


# Where the daemon's time goes, by inclusive share of one named frame each.
PROFILE_GROUPS = (
    ("request parsing (codec Decoder.feed)", "Decoder.feed (mailwarden/policyd/codec.py)"),
    ("Redis calls: store batcher + redis-py pipeline, total",
     "_Batcher._drain (mailwarden/store/redis_store.py)"),
    ("  of which encoding the commands (redis-py pack_commands)",
     "AbstractConnection.pack_commands (redis/asyncio/connection.py)"),
    ("  of which parsing the replies (redis-py parse_response, pure Python)",
     "Pipeline.parse_response (redis/asyncio/client.py)"),
    ("  of which redis-py's asyncio.timeout around reads",
     "timeout (asyncio/timeouts.py)"),
    ("asyncio.wait_for per request (policyd.answer_timeout)", "wait_for (asyncio/tasks.py)"),
    ("rules: classify (sending account, recipient domain)",
     "classify (mailwarden/rules/ratelock.py)"),
    ("store: RedisStore.reserve (keys, arguments, result)",
     "RedisStore.reserve (mailwarden/store/redis_store.py)"),
    ("idle timer re-armed per read (PolicyConnection._touch)",
     "PolicyConnection._touch (mailwarden/policyd/server.py)"),
    ("logging", "Logger._log (logging/__init__.py)"),
)


def profile_phase(env: Env, target: str, server_pid: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    r = env.redis()
    r.flushall()
    r.close()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.profiler == "cprofile" or not Path(spy).exists():
        return cprofile_phase(env, args)
    seconds = max(3, int(args.duration))
    cargs = argparse.Namespace(**{**vars(args), "warmup": 0, "duration": seconds + 2})
    raw = env.work / "pyspy.txt"
    argv = [*env.other_cpus, spy, "record", "-p", str(server_pid), "-d", str(seconds),
            "-r", "250", "-f", "raw", "-o", str(raw)]
    k = argv.index("-p") + 1
    env.note([*argv[:k], "PID", *argv[k + 1:]])
    with open(env.work / "pyspy.log", "wb") as log:
        spy_p = None

        def later() -> None:
            nonlocal spy_p
            time.sleep(1)
            spy_p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

        import threading

        t = threading.Thread(target=later)
        t.start()
        res = run_client(env, target, 100, [server_pid, env.redis_pid], 7000, cargs)
        t.join()
        if spy_p is not None:
            spy_p.wait(30)
    if not raw.exists():
        return {"error": (env.work / "pyspy.log").read_text(errors="replace")[-500:]}
    agg = aggregate_pyspy(raw)
    agg["client"] = summarize(res, server_pid, env.redis_pid)
    agg["profiler"] = "py-spy"
    return agg


CPROFILE_WRAPPER = (
    "import cProfile, sys\n"
    "from mailwarden.cli import main\n"
    "p = cProfile.Profile()\n"
    "p.enable()\n"
    "try:\n"
    "    main(sys.argv[2:])\n"
    "finally:\n"
    "    p.disable()\n"
    "    p.dump_stats(sys.argv[1])\n")


def cprofile_phase(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    """Without py-spy: a daemon of the default configuration run under cProfile."""
    import pstats

    r = env.redis()
    r.flushall()
    r.close()
    row = Row("profile", "profile", "policyd", 100)
    sock = env.work / "profiled.sock"
    cfg = policyd_config(env, row, f"unix:{sock}")
    out = env.work / "cprofile.out"
    argv = [*env.server_cpus, env.python, "-c", CPROFILE_WRAPPER, str(out), "--config", str(cfg),
            "policyd"]
    env.note(argv)
    log = env.work / "cprofile.log"
    proc = spawn(argv, log, env=env.env(), cwd=env.work)
    env.procs.add(proc.pid)
    wait_until(unix_ready(sock), 20, "policyd under cProfile",
               alive=lambda: proc.poll() is None, log=log)
    cargs = argparse.Namespace(**{**vars(args), "warmup": 0.5, "duration": 3})
    res = run_client(env, f"unix:{sock}", 100, [proc.pid, env.redis_pid], 7000, cargs)
    env.procs.stop(proc.pid)  # SIGTERM: the daemon returns from main, the profile is saved
    if not out.exists():
        return {"error": "cProfile wrote nothing: " + log.read_text(errors="replace")[-500:]}
    st: dict[Any, Any] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    idle = ("run_until_complete", "run_forever", "poll' of 'select.epoll", "_run_once")
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in st.items():
        if any(i in func for i in idle):
            continue
        short = re.sub(r"^.*/(site-packages|python3\.\d+)/", "", file)
        name = f"{func} ({short.replace(str(ROOT) + '/', '')})"
        self_c[name] += int(tt * 1e6)
        incl[name] += int(ct * 1e6)
    return {"total": sum(self_c.values()), "self": self_c.most_common(20), "incl": incl,
            "client": summarize(res, proc.pid, env.redis_pid), "profiler": "cProfile"}


def incl_share(prof: dict[str, Any], frame: str) -> float:
    """Inclusive share of one function, matched by its name and the end of its path
    (py-spy names frames `Class.method (path)`, cProfile `method (/full/path)`)."""
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return 0.0
    func, path = m.group(1).split(".")[-1], m.group(2)
    best: int = 0
    for f, n in prof["incl"].items():
        fm = re.match(r"^(.*) \((.*)\)$", f)
        if fm and fm.group(1).split(".")[-1] == func and fm.group(2).endswith(path):
            best = max(best, n)  # recursion/duplicates: take the largest, never sum
    return float(best) / max(int(prof["total"]), 1)


# -- report --------------------------------------------------------------------------
def machine_info() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: Sequence[str]) -> str:
        try:
            out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    import redis

    try:
        uv = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uv = "not installed"
    hi = ("installed" if importlib.util.find_spec("hiredis")
          else "not installed (redis-py uses its pure-Python RESP parser)")
    mem = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis-py": redis.__version__,
        "hiredis": hi,
        "uvloop": uv,
        "redis-server": version(["redis-server", "--version"]),
        "gcc": version(["gcc", "--version"]),
    }


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def table(rows: Sequence[Row], ceilings: dict[tuple[int, str], float]) -> list[str]:
    out = [
        "| row | C | req/s (min-max of rounds) | x ceiling | p50 ms | p99 ms "
        "| server µs/req (CPU %) | Redis µs/req (CPU %) | client µs/req (CPU %) "
        "| others' CPU % | refused % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r.result
        if not s:
            continue
        ceil = ceilings.get((r.conns, r.listen))
        ratio = f"{s['rps'] / ceil:.2f}" if ceil else "-"
        redis_col = (f"{s['redis_us']:.1f} ({s['redis_pct']:.0f})" if r.server == "policyd"
                     else "-")
        spread = (f" ({s['rps_min'] / 1000:.1f}k-{s['rps_max'] / 1000:.1f}k)"
                  if len(r.rounds) > 1 else "")
        out.append(
            f"| {r.label} | {r.conns} | **{s['rps']:,.0f}**{spread} | {ratio} "
            f"| {fmt_ms(s['p50_us'])} | {fmt_ms(s['p99_us'])} "
            f"| {s['server_us']:.1f} ({s['server_pct']:.0f}) "
            f"| {redis_col} | {s['client_us']:.1f} ({s['client_pct']:.0f}) "
            f"| {max(s['other_pct'], 0):.0f} | {s['refused_pct']:.1f} |")
    return out


def find(rows: Sequence[Row], key: str) -> dict[str, Any]:
    for r in rows:
        if r.key == key:
            return r.result
    return {}


def report(rows: Sequence[Row], info: dict[str, str], env: Env, args: argparse.Namespace,
           mem: dict[str, Any] | None, prof: dict[str, Any] | None, started: float,
           finished: float) -> str:
    ceilings = {(r.conns, r.listen): r.result["rps"] for r in rows
                if r.server == "dunno" and r.uvloop and not r.codec and r.result}
    lines: list[str] = []
    add = lines.append
    add("# Policy daemon load test")
    add("")
    add("Generated by `make bench-policyd` (`.venv/bin/python -m benchmarks.policyd_load "
        "--report benchmarks/policyd.md`); every number below comes from that one run "
        "unless marked otherwise. Method, workload and the experiments behind the proposals "
        "are described after the results.")
    add("")
    when = datetime.datetime.fromtimestamp(started, datetime.UTC)
    add(f"Run: {when:%Y-%m-%d %H:%M} UTC, {finished - started:.0f} s in total. Every row "
        f"{args.rounds} times ({args.warmup:g} s warm-up + {args.duration:g} s measured "
        "each), the rounds interleaved over the whole run with a fresh server each time; "
        "every number of a row is the median over its rounds.")
    add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    for k, v in info.items():
        add(f"| {k} | {v} |")
    add("")

    add("## Results")
    add("")
    add("Closed loop, one request in flight per connection (like smtpd). *x ceiling* = "
        "req/s over the DUNNO ceiling (uvloop) at the same C and the same kind of policy "
        "socket. Server/Redis/client CPU: utime+stime over the measured interval "
        "divided by the requests answered in it; *CPU %* is of one core. *refused %*: replies "
        "other than DUNNO. *others' CPU %*: CPU used meanwhile by processes not part of the "
        "test (the machine is shared), from /proc/stat.")
    add("")
    lines += table(rows, ceilings)
    add("")

    # targets
    d100 = find(rows, "policyd-c100")
    c100 = ceilings.get((100, "unix"))
    if d100 and c100:
        ratio = d100["rps"] / c100
        ok = [ratio >= 0.5, d100["p99_us"] <= 10_000, d100["server_us"] <= 40]
        add("### Targets (C=100, default configuration)")
        add("")
        add("| target | measured | met |")
        add("|---|---|---|")
        add(f"| throughput ≥ 0.5x the DUNNO ceiling | {d100['rps']:,.0f} req/s = "
            f"{ratio:.2f}x of {c100:,.0f} | {'yes' if ok[0] else '**no**'} |")
        add(f"| p99 ≤ 10 ms | {fmt_ms(d100['p99_us'])} ms | {'yes' if ok[1] else '**no**'} |")
        add(f"| server CPU ≤ 40 µs/request | {d100['server_us']:.1f} µs "
            f"(Redis another {d100['redis_us']:.1f} µs) | {'yes' if ok[2] else '**no**'} |")
        add("")
    levers = [
        ("redis.batching = true (vs false)", "policyd-c100", "policyd-nobatch-c100"),
        ("uvloop (vs plain asyncio)", "policyd-c100", "policyd-asyncio-c100"),
        ("Redis over its unix socket (vs TCP)", "policyd-c100", "policyd-redistcp-c100"),
        ("policy socket unix (vs TCP)", "policyd-c100", "policyd-tcp-c100"),
        ("all three (vs batching off + plain asyncio)", "policyd-c100", "policyd-naive-c100"),
    ]
    lever_lines = []
    for name, on_key, off_key in levers:
        on, off = find(rows, on_key), find(rows, off_key)
        if on and off:
            overlap = on["rps_min"] <= off["rps_max"] and off["rps_min"] <= on["rps_max"]
            lever_lines.append(
                f"| {name} | {on['rps']:,.0f} vs {off['rps']:,.0f} "
                f"({on['rps'] / off['rps']:.2f}x{', ranges overlap' if overlap else ''}) "
                f"| {on['server_us']:.0f} vs "
                f"{off['server_us']:.0f} | {on['redis_us']:.0f} vs {off['redis_us']:.0f} "
                f"| {fmt_ms(on['p99_us'])} vs {fmt_ms(off['p99_us'])} |")
    if lever_lines:
        add("### Levers (C=100, rows of the table above)")
        add("")
        add("*ranges overlap*: the req/s ranges of the rounds overlap, so this run does not "
            "separate the two.")
        add("")
        add("| lever | req/s | server µs/req | Redis µs/req | p99 ms |")
        add("|---|---|---|---|---|")
        lines += lever_lines
        add("")
    daemon_rows = [r.result for r in rows if r.server == "policyd" and r.result]
    dunno_rows = [r.result for r in rows
                  if r.server == "dunno" and not r.codec and r.result and r.conns >= 10]
    if daemon_rows:
        add("**The client is not the bottleneck of the daemon rows:** it used at most "
            f"{max(x['client_pct'] for x in daemon_rows):.0f} % of a core "
            f"({min(x['client_us'] for x in daemon_rows):.0f}-"
            f"{max(x['client_us'] for x in daemon_rows):.0f} µs per request) on the CPU it "
            "shares with Redis, while the daemon, alone on its CPU, ran at "
            f"{min(x['server_pct'] for x in daemon_rows if x['conns'] >= 10):.0f}-"
            f"{max(x['server_pct'] for x in daemon_rows):.0f} % of it at C ≥ 10.")
        add("")
    if dunno_rows:
        add("**The DUNNO ceiling is different:** there the server costs only "
            f"{min(x['server_us'] for x in dunno_rows):.1f}-"
            f"{max(x['server_us'] for x in dunno_rows):.1f} µs per request, about what the "
            f"client costs ({min(x['client_us'] for x in dunno_rows):.1f}-"
            f"{max(x['client_us'] for x in dunno_rows):.1f} µs, mostly the two system calls "
            "per request), so at C ≥ 10 the server ran at "
            f"{min(x['server_pct'] for x in dunno_rows):.0f}-"
            f"{max(x['server_pct'] for x in dunno_rows):.0f} % of its CPU and the client at "
            f"{min(x['client_pct'] for x in dunno_rows):.0f}-"
            f"{max(x['client_pct'] for x in dunno_rows):.0f} % of the other: the ceiling is "
            "where a single-threaded Python server runs out of its core, with the client "
            "close to running out of the second one. A faster client could raise it a little, "
            "not lower it, so the ratios in the table are if anything flattering.")
        add("")
    locked = find(rows, "policyd-locked-c100")
    if locked and d100:
        add(f"**10 % of senders locked** (C=100): p99 {fmt_ms(locked['p99_us'])} ms "
            f"(p50 {fmt_ms(locked['p50_us'])} ms) against {fmt_ms(d100['p99_us'])} ms with none "
            f"locked; {locked['refused_pct']:.1f} % of the replies were refusals, answered from "
            f"the in-process lock copy without Redis, each with a warning log line; daemon CPU "
            f"{locked['server_us']:.0f} against {d100['server_us']:.0f} µs per request.")
        add("")

    if mem:
        add("## Redis memory per active sender")
        add("")
        cl = mem["client"]
        add(f"Every one of {args.senders:,} senders sent N = {mem['window_entries']} external "
            f"recipients through the daemon, in messages of {args.fill_per_message} "
            f"recipients (RCPT x{args.fill_per_message}, then END-OF-MESSAGE, which commits "
            f"them): {cl['requests']:,} requests in {cl['wall_s']:.1f} s, "
            f"{cl['other']} refused. Senders whose window then held exactly N entries: "
            f"{mem['senders_full']:,}.")
        add("")
        add(f"- used_memory {mem['before'] / 2**20:.1f} MiB → {mem['after'] / 2**20:.1f} MiB: "
            f"**{mem['per_sender'] / 1024:.1f} KiB per sender** with a full window of "
            f"N = {mem['window_entries']} "
            f"({mem['per_sender'] / mem['window_entries']:.0f} bytes per counted recipient, "
            f"everything included: window, transaction sets and queue-id keys kept for "
            f"`ratelimit.reservation_ttl`, key-space overhead).")
        add(f"- The window ZSET is encoded as `{mem['win_encoding']}` (more than "
            "zset-max-listpack-entries = 128 members).")
        add("")
        add("| key kind | keys | MEMORY USAGE total | per sender |")
        add("|---|---:|---:|---:|")
        for kind, (n, used) in sorted(mem["by_kind"].items(), key=lambda kv: -kv[1][1]):
            add(f"| {kind} | {n:,} | {used / 2**20:.1f} MiB | {used / args.senders / 1024:.1f} "
                "KiB |")
        add("")

    if prof:
        add("## Where the daemon's CPU goes")
        add("")
        if "error" in prof:
            add(f"Profile not taken: {prof['error']}")
        else:
            pc = prof["client"]
            if prof.get("profiler") == "py-spy":
                add(f"py-spy (250 samples/s) on the daemon at C=100, default configuration: "
                    f"{prof['total']:,} samples; throughput while sampled {pc['rps']:,.0f} "
                    f"req/s (py-spy pauses the process for each sample), {pc['server_us']:.0f} "
                    "µs CPU per request. Shares of the daemon's busy time (idle samples "
                    "excluded); time in uvloop's C code (socket reads and writes, callbacks) "
                    "shows as `Runner.run` self time.")
            else:
                add(f"cProfile (py-spy not installed: `.venv/bin/pip install py-spy` for a "
                    f"sampling profile) on a daemon of the default configuration at C=100: "
                    f"{pc['rps']:,.0f} req/s under the profiler. Shares of the Python time "
                    "(the event loop's own time is not separable from idle time here and is "
                    "left out); cProfile's overhead inflates small functions.")
            add("")
            add("| part | inclusive share | ≈ µs/request |")
            add("|---|---:|---:|")
            tot = max(prof["total"], 1)
            for name, frame in PROFILE_GROUPS:
                share = incl_share(prof, frame)
                add(f"| {name} | {share * 100:.1f} % | {share * pc['server_us']:.1f} |")
            if prof.get("profiler") == "py-spy":
                loop_self = dict(prof["self"]).get("Runner.run (asyncio/runners.py)", 0) / tot
                add(f"| event loop itself: uvloop's C code and system calls (`Runner.run` "
                    f"self) | {loop_self * 100:.1f} % | {loop_self * pc['server_us']:.1f} |")
            add("")
            add("Top frames by self time:")
            add("")
            add("| self share | frame |")
            add("|---:|---|")
            for f, n in prof["self"][:15]:
                add(f"| {n / tot * 100:.1f} % | `{f}` |")
        add("")

    add("## Method")
    add("")
    add("- **Client**: `benchmarks/policy_client.c`, one thread, epoll, C connections with "
        "one request in flight each (send, wait for `action=...` and the empty line, send "
        "the next, like smtpd). Each request carries the 31 attributes of a Postfix 3.7 "
        "RCPT request for a SASL submission over TLS (request, protocol_state, "
        "protocol_name, helo_name, queue_id, sender, recipient, recipient_count, "
        "client_address, client_name, reverse_client_name, instance, sasl_method, "
        "sasl_username, sasl_sender, size, ccert_subject, ccert_issuer, ccert_fingerprint, "
        "ccert_pubkey_fingerprint, encryption_protocol, encryption_cipher, "
        "encryption_keysize, etrn_domain, stress, client_port, server_address, server_port, "
        "policy_context, compatibility_level, mail_version; about 700 bytes).")
    add(f"- **Workload**: {args.senders:,} senders (SASL logins `nv0000@ninhbinh.gov.vn`…), "
        f"chosen uniformly per request; {args.external_pct} % of recipients external (gmail.com, "
        "hanoi.gov.vn, …: counted, one Redis script call), the rest internal (lock check "
        "only); a distinct `instance` per request, so every external recipient is a new "
        "count, never a duplicate.")
    add(f"- **Staying under the limit** (limit {args.limit} per 10 min): Redis is flushed "
        "before every row, and a row sends at most (warm-up + measured) x req/s requests; at "
        f"the daemon's rates that is well under {args.limit} external recipients per sender, "
        "so the rows measure accepted requests (the *refused %* column shows it); only the "
        "locked row refuses on purpose.")
    add("- **Locked row**: before its daemon starts, the first 10 % of the senders are locked "
        "by the CLI's own code path (`mailwarden --config F lock nv0000@ninhbinh.gov.vn "
        "--reason bench`, …), so the daemon loads them at start and answers them from its "
        "in-process lock copy.")
    add("- **Servers**: the daemon as `python -m mailwarden --config F policyd` with the "
        "row's config; without uvloop through a wrapper that blocks the import (the "
        "daemon uses uvloop if importable). The loop in use is checked in "
        "/proc/PID/maps. The ceiling is `benchmarks/dunno_server.py`: an asyncio.Protocol "
        "that counts request ends (`\\n\\n`) and writes `action=DUNNO` per request — no "
        "attribute parsing; the *codec* variant parses every request with the daemon's "
        "own `Decoder` and `encode_action`. Policy socket: unix (as in "
        "conf/postfix/main.cf.policyd) unless the row says TCP.")
    add("- **CPU**: the client samples utime+stime of the server and of redis-server "
        "(/proc/PID/stat, 10 ms ticks), its own getrusage and /proc/stat at the start and "
        "the end of the measured interval, so all CPU figures cover exactly the interval "
        "whose requests are counted.")
    add("- **Pinning and the client**: the server under test runs alone on the last CPU "
        "(`taskset`), the client, Redis and py-spy on the others (see *Machine*). A row is "
        "limited by the server when the server is near 100 % of its CPU; the client's own CPU "
        "is in every row (statements under the targets). The machine is shared with other "
        "people's work: a measurement during which other processes used more than "
        f"{args.max_other:g} % of a CPU is repeated (budget in *Machine*), and their share "
        "stays visible in the *others' CPU* column.")
    add(f"- **Rounds**: every row {args.rounds} times, the rounds interleaved over the run, a "
        "fresh server each time; each number is the median over the rounds; the req/s "
        "range of the rounds is shown too.")
    add("")
    add("Commands (`$WORK` is the run's private temporary directory; `PID` the server's "
        "and redis-server's):")
    add("")
    add("```")
    add("gcc -O2 -o $WORK/policy_client benchmarks/policy_client.c")
    lines += env.commands
    add("```")
    add("")
    analysis = BENCH / "policyd_analysis.md"
    if analysis.exists() and not args.no_analysis:
        add(analysis.read_text().rstrip())
        add("")
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------
@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    try:
        yield d
    finally:
        if keep:
            print(f"work directory kept: {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.policyd_load",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--report", help="write the Markdown report here")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--rounds", type=int, default=3,
                   help="every row this many times, interleaved; the median counts")
    p.add_argument("--duration", type=float, default=2.5, help="measured seconds per row")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per row")
    p.add_argument("--senders", type=int, default=1000)
    p.add_argument("--external-pct", type=int, default=90)
    p.add_argument("--limit", type=int, default=250, help="ratelimit.limit (= N for memory)")
    p.add_argument("--fill-per-message", type=int, default=5,
                   help="recipients per message in the memory phase")
    p.add_argument("--rows", default="", help="comma-separated row keys or prefixes")
    p.add_argument("--max-other", type=float, default=25,
                   help="repeat a row when other processes used more than this %% of a CPU")
    p.add_argument("--retries", type=int, default=2, help="at most this many repeats per row")
    p.add_argument("--retry-budget", type=int, default=12,
                   help="at most this many repeats in the whole run (keeps it short)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to a CPU of its own (taskset)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--profiler", choices=("py-spy", "cprofile"), default="py-spy",
                   help="py-spy if installed (default), else cProfile")
    p.add_argument("--no-analysis", action="store_true",
                   help="leave out benchmarks/policyd_analysis.md")
    p.add_argument("--pythonpath", default="",
                   help="run the servers with this first on PYTHONPATH (an experimental "
                        "copy of the package)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                   help="A/B in one run: add every selected policyd row again, its daemon "
                        "run from the copy of the package in DIR (labelled NAME)")
    p.add_argument("--keep-workdir", action="store_true")
    args = p.parse_args(argv)
    if args.limit != 250:
        p.error("the daemon config is written with limit = 250; keep --limit 250")

    rows = all_rows()
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
        rows = [r for r in rows if any(r.key == w or r.key.startswith(w) for w in wanted)]
    base = list(rows)
    for v in args.variant:
        name, _, vdir = v.partition("=")
        if not vdir or not (Path(vdir) / "mailwarden").is_dir():
            p.error(f"--variant {v}: expected NAME=DIR with DIR/mailwarden")
        vdir = str(Path(vdir).resolve())
        extra = [Row(f"{r.key}-{name}", f"{r.label} [{name}]", r.server, r.conns, r.uvloop,
                     r.batching, r.redis_via, r.listen, r.codec, r.locked_pct, vdir)
                 for r in base if r.server == "policyd" or r.codec]
        rows += extra
    started = time.time()
    info = machine_info()
    server_cpus, other_cpus = pinning(not args.no_pin)
    info["pinning"] = (f"server `{' '.join(server_cpus)}`, client + Redis + py-spy "
                       f"`{' '.join(other_cpus)}`" if server_cpus else "none")
    procs = Procs()
    mem = prof = None
    retried = 0
    env: Env | None = None
    # one server per distinct configuration, its rows in order
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        groups.setdefault(r.server_config(), []).append(r)
    with workdir(args.keep_workdir) as work:
        try:
            client = work / "policy_client"
            subprocess.run(["gcc", "-O2", "-o", str(client), str(BENCH / "policy_client.c")],
                           check=True)
            redis_pid, redis_sock, redis_port, redis_argv = start_redis(work, procs, other_cpus)
            env = Env(work, client, redis_pid, redis_sock, redis_port, sys.executable,
                      args.pythonpath, procs, server_cpus, other_cpus)
            env.note(redis_argv)
            seed = 0
            retry_budget = args.retry_budget
            for rnd in range(args.rounds):
                for group in groups.values():
                    first = group[0]
                    if first.locked_pct:
                        env.redis().flushall()
                        cfg = policyd_config(env, first, "unix:/nonexistent/unused")
                        n = args.senders * first.locked_pct // 100
                        lock_senders(cfg, n)
                        if rnd == 0:
                            env.commands.append(
                                f"mailwarden --config $WORK/{cfg.name} lock ADDR --reason bench"
                                f"  # ADDR = nv0000..nv{n - 1:04d}@ninhbinh.gov.vn (in-process)")
                    pid, target, _ = start_server(env, first)
                    loop_ok = uvloop_loaded(pid) == first.uvloop
                    for r in group:
                        for attempt in range(args.retries + 1):
                            seed += 1
                            if not first.locked_pct:
                                env.redis().flushall()
                            res = summarize(run_client(env, target, r.conns, [pid, redis_pid],
                                                       seed, args), pid, redis_pid)
                            res["attempts"] = attempt + 1
                            if res["other_pct"] <= args.max_other or retry_budget <= 0:
                                break
                            retry_budget -= 1
                            retried += 1
                            print(f"  {r.key}: others used {res['other_pct']:.0f} % of a CPU "
                                  "meanwhile; once more", file=sys.stderr, flush=True)
                            time.sleep(1)
                        res["loop_checked"] = loop_ok
                        r.rounds.append(res)
                        print(f"[{rnd + 1}/{args.rounds}] {r.key:22} {res['rps']:9,.0f} req/s"
                              f"  p50 {fmt_ms(res['p50_us'])} p99 {fmt_ms(res['p99_us'])} ms"
                              f"  server {res['server_us']:6.1f} µs ({res['server_pct']:3.0f}%)"
                              f"  redis {res['redis_us']:5.1f}  client {res['client_us']:4.1f}"
                              f" ({res['client_pct']:3.0f}%)  other {res['other_pct']:3.0f}%"
                              f"  refused {res['refused_pct']:.1f}%"
                              f"{'' if loop_ok else '  EVENT LOOP NOT AS EXPECTED'}",
                              file=sys.stderr, flush=True)
                    if rnd == 0 and first.server_config() == DEFAULT_POLICYD:
                        if not args.no_profile:
                            prof = profile_phase(env, target, pid, args)
                            print(f"profile: {prof.get('total', prof.get('error'))} samples",
                                  file=sys.stderr, flush=True)
                        if not args.no_memory:
                            mem = memory_phase(env, target, pid, args)
                            print(f"memory: {mem['per_sender'] / 1024:.1f} KiB per sender "
                                  f"({mem['senders_full']} full windows)", file=sys.stderr,
                                  flush=True)
                    procs.stop(pid)
        finally:
            procs.stop_all()
    for r in rows:
        r.settle()
    finished = time.time()
    assert env is not None
    info["repeated measurements"] = (
        f"{retried} (a measurement is repeated, up to {args.retries} times per row and "
        f"{args.retry_budget} per run, when other processes used more than "
        f"{args.max_other:g} % of a CPU during it)")
    text = report(rows, info, env, args, mem, prof, started, finished)
    if args.report:
        Path(args.report).write_text(text)
        print(f"wrote {args.report}", file=sys.stderr)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": info,
            "rows": [{"key": r.key, "label": r.label, "median": r.result, "rounds": r.rounds}
                     for r in rows],
            "memory": mem, "profile": {k: v for k, v in (prof or {}).items() if k != "incl"},
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
