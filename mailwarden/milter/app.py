"""pymilter adapter: callbacks -> spool -> engine -> reply and one log line.

libmilter runs one thread per SMTP connection; each connection gets its own
`WardenMilter`. The message is spooled (memory up to milter.spool_memory,
then a temp file), so its size never costs RAM beyond that threshold. The
threads only spool and wait: the parsing runs in the engine's worker processes
(engine/workers.py) and clamd is called through the engine's gate (bounded,
with a circuit breaker). Anything unexpected inside a callback becomes a logged
451, never a crash and never a silent pass (milter_default_action = tempfail
covers a dead milter).

Shutdown (SIGTERM): libmilter stops accepting; messages in flight get
milter.shutdown_grace to finish, then a 451; new MAIL FROM on open connections
gets a 451; the unix socket is removed; the final statistics line is written.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import time
from typing import Any

import Milter

from mailwarden import logs, metrics
from mailwarden.config import Config
from mailwarden.engine import Engine, Envelope, Evaluation
from mailwarden.failure import INTERNAL_ERROR, internal_error
from mailwarden.rules import attachments
from mailwarden.rules.forwarding import parse_orcpt
from mailwarden.settings import Settings
from mailwarden.verdict import Action, Verdict, reply_safe

log = logging.getLogger("mailwarden.milter")

_MAX_RCPTS_LOGGED = 50
_MAX_REPLY_TEXT = 480  # an SMTP reply line is at most 512 octets with code and CRLF


class Runtime:
    """What every connection shares: settings, the engine, and the optional Redis link.

    `pool=True` (the daemon) starts the worker processes; without it (component tests)
    messages are parsed in-process by the same engine."""

    def __init__(self, cfg: Config, *, pool: bool = False) -> None:
        self.settings = s = Settings.from_config(cfg)
        self.content = s.content
        self.spool_memory = s.milter.spool_memory
        self.tmpdir = s.milter.tmpdir
        self.final_hop_name = s.milter.final_hop_daemon_name
        self.log_accepts = s.logging.log_accepts
        self.on_internal_error = s.on_internal_error
        self.releaser = None
        if s.milter.release_on_refusal:
            from mailwarden.store.redis_store import SyncReleaser

            self.releaser = SyncReleaser.from_settings(s.redis)
        # Reads the DKIM keys and the public suffix list: a problem is fatal at start.
        self.engine = Engine.from_settings(s, pool=pool, on_event=_engine_event)
        self.stats_lock = threading.Lock()
        self.stats = {"messages": 0, "reject": 0, "defer": 0, "errors": 0}
        self.in_flight = 0  # messages between MAIL FROM and their answer
        self.idle = threading.Condition(self.stats_lock)
        self.stopping = threading.Event()  # SIGTERM: no new messages
        self.cancel = threading.Event()  # grace over: answer what is in flight with 451

    def count(self, key: str) -> None:
        with self.stats_lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def begin(self) -> None:
        with self.stats_lock:
            self.in_flight += 1
        metrics.add_inflight("milter", 1)

    def end(self) -> None:
        with self.stats_lock:
            self.in_flight = max(0, self.in_flight - 1)
            self.idle.notify_all()
        metrics.add_inflight("milter", -1)

    def wait_idle(self, timeout_s: float) -> int:
        """Wait until no message is in flight or `timeout_s`; the number left."""
        deadline = time.monotonic() + timeout_s
        with self.stats_lock:
            while self.in_flight and (left := deadline - time.monotonic()) > 0:
                self.idle.wait(left)
            return self.in_flight

    def stats_line(self, *, final: bool = False) -> str:
        engine = self.engine
        extra: dict[str, int] = {}
        if engine.pool is not None:
            extra.update(engine.pool.stats)
        extra.update({k: v for k, v in engine.gate.stats.items() if k != "scans"})
        with self.stats_lock:
            return logs.stats_line({**self.stats, **extra}, final=final)


def _engine_event(text: str, values: dict[str, str | int | float]) -> None:
    log.warning("%s", logs.note(text, **values))


def evaluate(engine: Engine, spool: Any, envelope: Envelope, *, queue_id: str,
             cancelled: Any) -> Evaluation:
    """The one call at end of message (a seam for the component tests)."""
    return engine.evaluate(spool, envelope, queue_id=queue_id, cancelled=cancelled)


RUNTIME: Runtime | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


@Milter.header_leading_space
class WardenMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self) -> None:
        assert RUNTIME is not None
        self.rt = RUNTIME
        self.client_name = ""
        self.client_addr = ""
        self.final_hop = False
        self.helo = ""
        self._reset()

    def _reset(self) -> None:
        if getattr(self, "in_flight", False):
            self.rt.end()
        self.in_flight = False
        self.sender = ""
        self.authenticated = False
        self.recipients: list[str] = []
        self.orcpts: list[str] = []
        self.spool: Any = None
        self.queue_id = ""
        self.header_changes: tuple[Any, Any] = ([], [])

    # -- connection and envelope ---------------------------------------------
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        # Postfix passes "[ip]" when it has no verified name: log it as Postfix does.
        self.client_name = "unknown" if not hostname or hostname.startswith("[") else hostname
        self.client_addr = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else "unknown"
        daemon = _text(self.getsymval("{daemon_name}") or "")
        self.final_hop = daemon == self.rt.final_hop_name
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname: str) -> int:
        self.helo = hostname[:255]
        return Milter.CONTINUE

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._close_spool()
        self._reset()
        if self.rt.stopping.is_set():
            log.info("%s", logs.event_line("", "MAIL FROM refused: the milter is stopping",
                                           client=self.client_addr))
            self.setreply("451", "4.3.2", "Dich vu dang khoi dong lai, vui long thu lai sau. "
                          "Mail filter restarting, try again later")
            return Milter.TEMPFAIL
        self.rt.begin()
        self.in_flight = True
        self.sender = mailfrom.strip("<>")
        self.authenticated = bool(self.getsymval("{auth_authen}"))
        for p in params:
            key, _, value = p.partition("=")
            if key.upper() == "SIZE" and value.isdigit():
                refused = attachments.decide_announced_size(int(value),
                                                            self.rt.content.attachments)
                if refused and not self.final_hop:
                    rc = self._apply(refused, "MAIL")
                    self._reset()
                    return rc
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        if len(self.recipients) < 10_000:
            self.recipients.append(to.strip("<>"))
            self.orcpts.append(next((parse_orcpt(p) for p in params
                                     if p[:6].upper() == "ORCPT="), ""))
        return Milter.CONTINUE

    # -- content -------------------------------------------------------------
    @Milter.decode("bytes")
    @Milter.noreply
    def header(self, name: str, value: bytes) -> int:
        spool = self._spool()
        spool.write(name.encode("ascii", "replace") + b":" + value.replace(b"\n", b"\r\n")
                    .replace(b"\r\r\n", b"\r\n") + b"\r\n")
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        self._spool().write(b"\r\n")
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self._spool().write(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self.queue_id = _text(self.getsymval("i") or "")
        self.rt.count("messages")
        metrics.request("milter")
        started = time.monotonic()
        try:
            try:
                result = evaluate(self.rt.engine, self._spool(), Envelope(
                    mail_from=self.sender, recipients=tuple(self.recipients),
                    original_recipients=tuple(self.orcpts), client_addr=self.client_addr,
                    authenticated=self.authenticated, final_hop=self.final_hop,
                    helo=self.helo), queue_id=self.queue_id, cancelled=self.rt.cancel.is_set)
                self._authenticated(result)
            except Exception as e:  # a bug or an OS error: failure.on_internal_error, keep serving
                # One decision line at error level (type and place, never the exception's
                # text: it can quote the message), 451 by default or accept-unchecked.
                self.rt.count("errors")
                self.header_changes = ([], [])
                result = Evaluation(verdicts=[internal_error(e, self.rt.on_internal_error)])
            finally:
                self._close_spool()
            return self._apply(result.verdicts, "EOM")
        finally:
            metrics.milter_eom(time.monotonic() - started)
            _pool_metrics(self.rt)
            self._reset()

    def _authenticated(self, result: Evaluation) -> None:
        """What authentication did (in the worker): header changes, only if accepted."""
        a = result.analysis
        self.header_changes = (a.remove_headers, a.add_headers)
        if a.auth_skipped:
            log.info("%s", logs.event_line(
                self.queue_id, "DKIM not signed or verified: message over auth.max_message_"
                "bytes (SPF, the spoof check and Authentication-Results still applied)",
                size=a.auth_skipped))
        if a.auth_detail and self.rt.log_accepts:
            log.info("%s", logs.auth_line(self.queue_id, a.auth_detail))

    def abort(self) -> int:
        self._close_spool()
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        self._close_spool()
        self._reset()
        return Milter.CONTINUE

    # -- helpers -------------------------------------------------------------
    def _spool(self) -> Any:
        if self.spool is None:
            self.spool = tempfile.SpooledTemporaryFile(
                max_size=self.rt.spool_memory, dir=self.rt.tmpdir, prefix="mailwarden-")
        return self.spool

    def _close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _line(self, v: Verdict, stage: str) -> str:
        return logs.decision_line(
            queue_id=self.queue_id, action=_action(v), stage=stage, client_name=self.client_name,
            client_addr=self.client_addr, rule=v.rule, detail=v.detail, sender=self.sender,
            recipients=self.recipients[:_MAX_RCPTS_LOGGED], article=v.article,
            reply=v.reply if v.action is not Action.ACCEPT else "")

    def _apply(self, verdicts: list[Verdict], stage: str) -> int:
        decisive = next((v for v in verdicts if v.enforced and v.action is Action.REJECT), None)
        decisive = decisive or next((v for v in verdicts if v.enforced), None)
        for v in verdicts:
            level = logging.WARNING if v.action is not Action.ACCEPT or v.monitor else \
                logging.INFO
            if v.rule in ("av.unavailable", INTERNAL_ERROR):
                level = logging.ERROR
            log.log(level, "%s", self._line(v, stage))
            metrics.decision("milter", v.rule, _action(v), stage)
        if decisive is None:
            if stage == "EOM":
                self._change_headers()
                metrics.decision("milter", "none", "accept", stage)
            if self.rt.log_accepts and stage == "EOM":
                log.info("%s", logs.decision_line(
                    queue_id=self.queue_id, action="accept", stage=stage,
                    client_name=self.client_name, client_addr=self.client_addr, rule="none",
                    sender=self.sender, recipients=self.recipients[:_MAX_RCPTS_LOGGED]))
            return Milter.CONTINUE
        # The rules already made message/operator text safe (verdict.reply_safe); this is
        # the adapter's own guarantee: libmilter refuses CR/LF and reads "%" as a format.
        self.setreply(str(decisive.smtp_code), decisive.enhanced_code,
                      reply_safe(decisive.text, _MAX_REPLY_TEXT).replace("%", "%%"))
        if decisive.action is Action.REJECT:
            self.rt.count("reject")
            if stage == "EOM":
                self._release()
            return Milter.REJECT
        self.rt.count("defer")
        if stage == "EOM":
            self._release()
        return Milter.TEMPFAIL

    def _change_headers(self) -> None:
        """Remove forged Authentication-Results; add ours / the DKIM signatures on top."""
        remove, add = self.header_changes
        try:
            for name, index in remove:
                self.chgheader(name, index, "")
            for field in reversed(add):  # pymilter: addheader with an index = smfi_insheader
                # With header_leading_space negotiated, Postfix takes the value as is:
                # the space after the colon is ours to give.
                value = field.milter_value
                if not value.startswith((" ", "\t")):
                    value = " " + value
                self.addheader(field.name, value, 0)
        except Exception:  # the verdict stands; a header we could not change is logged
            log.exception("%s", logs.event_line(self.queue_id, "could not change headers"))

    def _release(self) -> None:
        """A refused message was already counted by policyd at END-OF-MESSAGE."""
        if self.rt.releaser is None or not self.queue_id:
            return
        try:
            n = self.rt.releaser.release_queue_id(self.queue_id)
            if n:
                log.info("%s", logs.event_line(
                    self.queue_id, f"uncounted {n:d} recipients of the refused message from "
                    "the rate window"))
        except Exception as e:  # Redis trouble must not change the verdict
            metrics.backend_error("milter", "redis")
            log.warning("%s", logs.event_line(self.queue_id, "could not uncount refused message",
                                              error=str(e)))


def _action(v: Verdict) -> str:
    """The action word of a verdict's decision line (and its metrics label)."""
    if v.action is Action.ACCEPT:
        return {"av.unavailable": "accept-unscanned",
                INTERNAL_ERROR: "accept-unchecked"}.get(v.rule, "log")
    return "monitor" if v.monitor else v.action.value


_pool_seen = {"replaced": 0}


def _pool_metrics(rt: Runtime) -> None:
    """The worker pool's state, from the parent (the only one that sees the pool)."""
    pool = rt.engine.pool
    if pool is None or not metrics.enabled():
        return
    idle = pool.idle.qsize()
    configured = rt.settings.milter.workers
    metrics.set_workers(busy=max(0, configured - idle), idle=idle, configured=configured)
    replaced = pool.stats.get("workers_replaced", 0)
    for _ in range(replaced - _pool_seen["replaced"]):
        metrics.worker_restart("replaced")
    _pool_seen["replaced"] = max(replaced, _pool_seen["replaced"])


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_CANCEL_WAIT_S = 10.0  # after the grace: time for the 451s to go out


def run(cfg: Config) -> int:
    """Run the milter in the foreground until SIGTERM/SIGINT, then stop gracefully."""
    import os

    from mailwarden.addresses import parse_listen
    from mailwarden.policyd.server import sd_notify

    # Before any thread exists (ours, the workers' spawner, libmilter's): every thread
    # inherits the mask, so a stop signal reaches only a sigwait() (libmilter's or ours)
    # and never kills the process in the middle of sessions.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    settings = Settings.from_config(cfg)
    if settings.milter.metrics_listen:
        # Before the workers start: they inherit the multiprocess directory (metrics.py).
        from mailwarden import __version__

        metrics.serve("milter", settings.milter.metrics_listen, multiprocess=True,
                      profile=settings.profile_name, version=__version__,
                      tmpdir=settings.milter.tmpdir)
    global RUNTIME
    RUNTIME = rt = Runtime(cfg, pool=True)
    s = rt.settings
    try:
        if not _probe_clamd(rt):
            return 1
        listen = parse_listen(s.milter.listen)
        if listen.family == "unix" and os.path.exists(listen.path):
            os.unlink(listen.path)  # stale socket of a previous run
        Milter.factory = WardenMilter
        Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS)
        pool = rt.engine.pool
        log.info("listening on %s (profile %s, attachments cap %d bytes, clamd %s, "
                 "%d worker processes)", listen, s.profile_name,
                 s.content.attachments.max_bytes,
                 s.content.clamd_address if s.content.scan else "off",
                 len(pool.pids()) if pool is not None else 0)
        # libmilter creates the socket in runmilter; tell systemd once it is there. The
        # umask gives the socket its mode from the start (Postfix must not find it
        # unreachable for a moment); temporary spool files are created 0600 by tempfile
        # whatever the umask.
        if listen.family == "unix":
            mode = s.milter.socket_mode
            os.umask(0o777 & ~mode)
            _notify_when_socket(listen.path, mode, sd_notify)
        else:
            sd_notify("READY=1")
        interval = s.milter.stats_interval_s
        if interval > 0:
            _every(interval, lambda: log.info("%s", rt.stats_line()))
        threading.Thread(target=_await_stop, args=(rt,), daemon=True, name="signals").start()
        Milter.runmilter("mailwarden", listen.libmilter(), int(s.milter.timeout_s))
        left = _drain(rt, s.milter.shutdown_grace_s, sd_notify)
        if listen.family == "unix":
            _remove_socket(listen.path)
        log.info("%s", rt.stats_line(final=True))
    finally:
        rt.engine.close()
    if left:
        # libmilter's session threads still run C code that calls into Python: end the
        # process here rather than let the interpreter be finalised under them.
        logging.shutdown()
        os._exit(0)
    return 0


def _await_stop(rt: Runtime) -> None:
    """Our own sigwait beside libmilter's: whichever gets SIGTERM, both stop accepting."""
    signum = signal.sigwait(_STOP_SIGNALS)
    rt.stopping.set()
    log.info("%s", logs.note("stopping: no new messages", signal=signal.Signals(signum).name))
    import milter as libmilter

    libmilter.stop()


def _drain(rt: Runtime, grace_s: float, notify: Any) -> int:
    """After libmilter stopped listening: let messages in flight finish within the grace,
    then cancel what is left (their waits end, they are answered 451)."""
    rt.stopping.set()
    notify("STOPPING=1")
    with rt.stats_lock:
        busy = rt.in_flight
    log.info("%s", logs.note("stopped listening; finishing messages in flight",
                             in_flight=busy, grace=f"{grace_s:g}s"))
    left = rt.wait_idle(grace_s)
    if left:
        log.warning("%s", logs.note("grace over: answering messages in flight with 451",
                                    in_flight=left))
        rt.cancel.set()
        left = rt.wait_idle(_CANCEL_WAIT_S)
    return left


def _remove_socket(path: str) -> None:
    """libmilter leaves its socket behind when running as root: remove it (only a socket)."""
    import os
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _probe_clamd(rt: Runtime) -> bool:
    """The policy-signature probe at start (antivirus.policy_signatures); False = fatal."""
    c = rt.settings.content
    if not c.scan or c.policy_signatures == "off":
        return True
    from mailwarden.engine.scanning import probe_policy_signatures

    ok, said = probe_policy_signatures(c.clamd_address)
    if ok:
        log.info("%s", logs.note("clamd has the policy signatures", signature=said))
        return True
    if ok is None:
        log.warning("%s", logs.note("could not probe clamd for the policy signatures",
                                    error=said))
        return True
    log.error("%s", logs.note("clamd lacks the policy signatures (conf/clamav/"
                              "mailwarden-policy.ndb)", answer=said))
    return c.policy_signatures != "require"


def _every(interval_s: float, fn: Any) -> None:
    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval_s):
            fn()

    threading.Thread(target=loop, daemon=True, name="statistics").start()


def _notify_when_socket(path: str, mode: int, notify: Any) -> None:
    import os
    import time

    def wait() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(path):
                os.chmod(path, mode)
                notify("READY=1")
                return
            time.sleep(0.02)

    threading.Thread(target=wait, daemon=True, name="sd-notify").start()
