"""The bounded worker pool: hostile parsing in processes that can be killed and replaced.

MIMEDefang's multiplexor and amavis' children, in small: `milter.workers` processes are
started (spawned: fork+exec of a fresh interpreter, safe in the threaded milter) when the
milter starts, each running `engine.core.analyse` (inspection, the attachment and forwarding
rules, authentication) for one message at a time. The milter's threads only spool the
message, hand it to a free worker and wait.

Limits, each costing that ONE message `milter.on_worker_failure` (451 by default, our own
resource ran out; or 550 as attachment.uninspectable) and the worker its life:

* memory: RLIMIT_AS = `milter.worker_memory` (a MemoryError ends the worker);
* CPU: RLIMIT_CPU set before each message to the CPU used so far + `milter.worker_cpu`
  (the kernel sends SIGXCPU, which ends the worker);
* wall time: `milter.worker_timeout` from the start of the message, waiting for a free
  worker included; past it (plus a short grace: inspection answers on its own budget first)
  the worker is SIGKILLed.

A worker that died is replaced in the background; the message after it is judged
normally. A worker retires after MAX_MESSAGES messages (memory fragmentation, leaks).

Messages go to the worker as bytes when the spool is in memory, as a file descriptor
(SCM_RIGHTS) when it is on disk: a 40 MB message is never copied through the pipe.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any, BinaryIO

from mailwarden import logs
from mailwarden.engine.core import Analysis, Envelope, analyse
from mailwarden.inspect import Finding, FindingKind, MessageModel
from mailwarden.rules import attachments

log = logging.getLogger("mailwarden.milter")

# A worker retires after this many messages (fragmentation, leaks; RLIMIT_AS caps it
# anyway). Starting one costs ~0.4 s of CPU (a fresh interpreter and its imports): at
# 1000 that was ~0.4 ms per message, as much as the parsing of a 20 KB message's text.
MAX_MESSAGES = 10_000
KILL_GRACE_S = 2.0  # past the deadline: inspection stops on its own budget first
# A fresh interpreter (fork+exec: safe in the threaded milter), importing only this module:
# not multiprocessing's spawn, which would re-run the daemon's __main__.
_BOOT = "import sys; from mailwarden.engine.workers import boot; boot(int(sys.argv[1]))"


@dataclass(frozen=True)
class WorkerLimits:
    memory_bytes: int
    cpu_s: float
    timeout_s: float


@dataclass(frozen=True)
class WorkerFailure:
    reason: str  # "cpu-limit", "memory-limit", "timeout", "died", "no-worker"
    detail: str


def failure_analysis(f: WorkerFailure, s: attachments.AttachmentSettings,
                     policy: str) -> Analysis:
    """The message's verdict when its worker failed: attachment.uninspectable with
    detected=worker-<reason>, deferred (our resource) or refused by config."""
    # Not subject to attachments.mode: a message nobody looked at is never passed.
    settings = replace(s, uninspectable=policy, enforce=True)
    finding = Finding(FindingKind.UNINSPECTABLE, "message", f"worker-{f.reason}", f.detail)
    return Analysis(verdicts=attachments.decide(MessageModel(findings=[finding]), settings),
                    model=MessageModel(findings=[finding]))


# -- the worker process ---------------------------------------------------------------------

def boot(fd: int) -> None:
    """The worker process's entry (see _BOOT): its settings come first on the socket."""
    conn = Connection(fd)
    settings, limits, hook = conn.recv()
    from mailwarden import metrics

    metrics.worker_init()  # DNS/clamd timings of this worker reach the milter's /metrics
    worker_main(conn, settings, limits, hook)


def worker_main(conn: Connection, settings: Any, limits: WorkerLimits,
                hook: str = "") -> None:
    """The worker's loop: one message at a time. Exits on EOF of its socket."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the milter blocks them for libmilter
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the milter, not to us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    from mailwarden.auth.engine import Authenticator
    from mailwarden.engine.core import AuthStep

    authenticate = AuthStep(Authenticator.from_settings(settings), settings.ours,
                            settings.auth.max_message_bytes)
    content = settings.content
    conn.send(("ready", os.getpid()))
    for served in range(1, MAX_MESSAGES + 1):
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        _cpu_limit(limits.cpu_s)
        message: BinaryIO
        if job["fd"]:
            fd = reduction.recv_handle(conn)
            message = os.fdopen(fd, "rb")
        else:
            message = io.BytesIO(job["data"])
        try:
            if hook:
                _test_hook(hook, message)
            with message:
                result = analyse(message, content, job["envelope"], job["deadline"],
                                 authenticate=None if job["envelope"].final_hop else
                                 (authenticate if job["auth"] else None))
        except MemoryError:
            _send_quietly(conn, ("failed", "memory-limit", "MemoryError"))
            os._exit(3)
        if _memory_error(result):
            _send_quietly(conn, ("failed", "memory-limit", "MemoryError in inspection"))
            os._exit(3)
        conn.send(("ok", result, served >= MAX_MESSAGES))
    return


def _cpu_limit(cpu_s: float) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    total = used.ru_utime + used.ru_stime
    soft = math.ceil(total + cpu_s)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _memory_error(result: Analysis) -> bool:
    model = result.model
    return model is not None and any(
        f.detected == "internal-error" and "MemoryError" in f.detail for f in model.findings)


def _send_quietly(conn: Connection, obj: Any) -> None:
    with contextlib.suppress(Exception):  # the parent learns of it from our exit anyway
        conn.send(obj)


def _test_hook(hook: str, message: BinaryIO) -> None:
    """Test-only behaviours, enabled by MAILWARDEN_TEST_WORKER_HOOK in the milter's
    environment (tests/faults): a message whose Subject holds the trigger misbehaves."""
    head = message.read(8192)
    message.seek(0)
    if b"X-Test-Worker: nap" in head:
        time.sleep(2)
    elif b"X-Test-Worker: sleep" in head:
        time.sleep(3600)
    elif b"X-Test-Worker: spin" in head:
        while True:
            pass
    elif b"X-Test-Worker: hog" in head:
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 * 1024))
    elif b"X-Test-Worker: crash" in head:
        os._exit(7)


# -- the parent's side ----------------------------------------------------------------------

class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        self.proc = proc
        self.conn = conn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exitcode(self, wait_s: float) -> int | None:
        try:
            return self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.conn.close()


class WorkerPool:
    """`size` pre-started worker processes; `analyse` is called from the milter's threads."""

    def __init__(self, settings: Any, size: int, limits: WorkerLimits, *,
                 on_failure: str = "defer", start_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.size = size
        self.limits = limits
        self.on_failure = on_failure
        self.start_timeout_s = start_timeout_s
        self.hook = os.environ.get("MAILWARDEN_TEST_WORKER_HOOK", "")
        self.idle: queue.Queue[_Worker] = queue.Queue()
        self.workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"worker_failures": 0, "workers_replaced": 0}

    # lifecycle
    def start(self) -> WorkerPool:
        for _ in range(self.size):
            self.idle.put(self._spawn())
        return self

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for w in workers:
            w.conn.close()  # EOF: an idle worker exits on its own
        for w in workers:
            if w.exitcode(1) is None:
                w.kill()

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(self.workers)

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            proc = subprocess.Popen([sys.executable, "-c", _BOOT, str(theirs.fileno())],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                    close_fds=True)
            conn = Connection(os.dup(ours.fileno()))
        w = _Worker(proc, conn)
        try:
            conn.send((self.settings, self.limits, self.hook))
            if not conn.poll(self.start_timeout_s):
                raise RuntimeError("worker process did not start in time")
            conn.recv()  # ("ready", pid)
        except (OSError, EOFError, RuntimeError) as e:
            w.kill()
            raise RuntimeError(f"worker process failed to start: {e}") from None
        with self._lock:
            self.workers[w.pid] = w
        return w

    def _replace(self, dead: _Worker, reason: str) -> None:
        with self._lock:
            self.workers.pop(dead.pid, None)
        dead.kill()
        if self._closed:
            return

        def spawn() -> None:
            delay = 1.0
            while True:
                try:
                    w = self._spawn()
                    break
                except Exception as e:  # logged; tried again, the pool runs one short
                    log.error("%s", logs.note("could not start a worker process",
                                              error=str(e), retry=f"{delay:g}s"))
                if self._closed:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            self.stats["workers_replaced"] += 1
            log.info("%s", logs.note("worker process started", pid=w.pid, replaces=dead.pid,
                                     reason=reason))
            self.idle.put(w)

        threading.Thread(target=spawn, name="worker-spawn", daemon=True).start()

    # one message
    def analyse(self, message: BinaryIO, envelope: Envelope | None, deadline: float, *,
                authenticate: bool = True, queue_id: str = "",
                cancelled: Callable[[], bool] = lambda: False) -> Analysis | WorkerFailure:
        """Run `analyse` for `message` in a worker, by `deadline` (time.monotonic)."""
        deadline = min(deadline, time.monotonic() + self.limits.timeout_s)
        while True:
            try:
                w = self.idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return WorkerFailure("no-worker", "no free worker process in time")
            if w.proc.poll() is None:
                break
            # Died while idle (killed, OOM killer): replaced; this message takes another.
            log.warning("%s", logs.note("idle worker process had died", pid=w.pid,
                                        status=str(w.proc.returncode)))
            self._replace(w, "died-idle")
        job = {"envelope": envelope or Envelope(), "deadline": deadline,
               "auth": authenticate, "fd": False, "data": b""}
        fd = _spool_fd(message)
        try:
            if fd is None:
                job["data"] = _spool_bytes(message)
                w.conn.send(job)
            else:
                job["fd"] = True
                w.conn.send(job)
                reduction.send_handle(w.conn, fd, w.pid)
            reply = self._wait(w, deadline + KILL_GRACE_S, cancelled)
        except (OSError, EOFError, ValueError):
            reply = None
        if reply is None or reply[0] != "ok":
            failure = self._failure(w, reply)
            self.stats["worker_failures"] += 1
            log.warning("%s", logs.event_line(queue_id, "worker process failed",
                                              reason=failure.reason, pid=w.pid,
                                              detail=failure.detail))
            self._replace(w, failure.reason)
            return failure
        _, analysis, retire = reply
        if retire:
            self._replace(w, "retired")
        else:
            self.idle.put(w)
        return analysis  # type: ignore[no-any-return]

    def _wait(self, w: _Worker, until: float, cancelled: Callable[[], bool]) -> Any:
        while True:
            left = until - time.monotonic()
            if left <= 0 or cancelled():
                return ("timeout",) if left <= 0 else ("cancelled",)
            if w.conn.poll(min(left, 0.5)):
                try:
                    return w.conn.recv()
                except (EOFError, OSError):
                    return None

    def _failure(self, w: _Worker, reply: Any) -> WorkerFailure:
        if reply is not None and reply[0] == "failed":
            return WorkerFailure(reply[1], reply[2])
        if reply is not None and reply[0] == "timeout":
            return WorkerFailure("timeout", f"no answer within {self.limits.timeout_s:g}s")
        if reply is not None and reply[0] == "cancelled":
            return WorkerFailure("shutdown", "the milter is stopping")
        code = w.exitcode(2)
        if code == -signal.SIGXCPU:
            return WorkerFailure("cpu-limit", f"over {self.limits.cpu_s:g}s of CPU")
        if code == 3:
            return WorkerFailure("memory-limit", "MemoryError")
        if code is not None and code < 0:
            return WorkerFailure("died", f"killed by signal {-code:d}")
        return WorkerFailure("died", f"exit status {code}")

    def rss(self) -> dict[int, int]:
        """Resident set size (bytes) of each worker, from /proc."""
        out = {}
        for pid in self.pids():
            out[pid] = rss_of(pid)
        return out


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid:d}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _spool_fd(message: BinaryIO) -> int | None:
    """The file descriptor of a spool on disk; None for one in memory."""
    if isinstance(message, tempfile.SpooledTemporaryFile):
        if not getattr(message, "_rolled", True):  # fileno() would roll it over to disk
            return None
        return message.fileno()
    if isinstance(message, io.BytesIO):
        return None
    try:
        return message.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _spool_bytes(message: BinaryIO) -> bytes:
    if isinstance(message, tempfile.SpooledTemporaryFile):
        inner = getattr(message, "_file", None)
        if isinstance(inner, io.BytesIO):
            return inner.getvalue()
    message.seek(0)
    return message.read()
