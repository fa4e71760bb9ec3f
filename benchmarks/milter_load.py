"""End-to-end load test of the milter through a real Postfix, in one run.

    .venv/bin/python -m benchmarks.milter_load --report benchmarks/milter.md

Everything runs privately on loopback and every process started here is
stopped by its PID:

* one clamd (ClamdInstance: `DisableCache yes`, the locally generated test
  signature database) shared by every milter;
* the sink (harness.sink) that Postfix relays every message to;
* one private Postfix (PostfixInstance) with one smtpd listener per target:
  the stock listener has no milter, each extra listener (master.cf
  `-o smtpd_milters=...`) talks to one milter, so every row goes through the
  same master, queue, qmgr, delivery agents and sink;
* the milters: mailwarden with its shipped defaults (worker pool of
  `milter.workers` processes, clamd gets the raw message, policy signatures
  required) on a unix socket, on TCP, on a unix socket with
  `antivirus.enabled = false` and with `milter.workers = 0` (parsing in the
  daemon: the cost of the pool), Debian's clamav-milter (foreground, own config
  file in the work directory, the same clamd socket) and Debian's Rspamd
  (milter mode, its antivirus module on the same clamd socket);
* a test DNS server on 127.0.0.1 (harness.dns, answers NXDOMAIN) as the only
  nameserver of mailwarden and Rspamd: nothing leaves loopback.

Load: Postfix's `smtp-source` (one message per connection, S sessions in
parallel) sends pre-built .eml files (`-F`), so the message is a real MIME
message with a base64 attachment. A "sender ceiling" row sends the same file
straight into Postfix's `smtp-sink` to show that the sender is not the
bottleneck. CPU per message comes from /proc/PID/stat (the milter and its
children -- mailwarden's worker processes, Rspamd's workers --, clamd, the
Postfix master and its children, the sink), smtp-source's own from wait4().
One large message is timed with a raw socket client (connect .. the 250 after
the final dot), and the peak RSS of the milter daemon and of each worker is
VmHWM from /proc/PID/status, reset first through /proc/PID/clear_refs; RSS is
also sampled from /proc during every load row and read once after the load.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from harness import procs
from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.dns import DnsServer
from harness.postfix import PostfixInstance
from harness.sink import Sink

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1024 * 1024
SENDER = "doitac@gmail.com"
RCPT = "vanthu@ninhbinh.gov.vn"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
CLAMAV_MILTER = "/usr/sbin/clamav-milter"
RSPAMD = "/usr/bin/rspamd"
RSPAMD_CONF = "/etc/rspamd/rspamd.conf"


# -- messages --------------------------------------------------------------------
VI_PARA = ("Kính gửi các phòng ban, Văn phòng UBND tỉnh xin gửi kèm tài liệu phục vụ cuộc "
           "họp giao ban tuần. Đề nghị các đơn vị nghiên cứu, chuẩn bị ý kiến và phản hồi "
           "trước 16 giờ ngày thứ Năm. Trân trọng cảm ơn. ")


def _headers(m: EmailMessage, n: int) -> None:
    m["From"] = SENDER
    m["To"] = RCPT
    m["Subject"] = f"Tài liệu họp giao ban số {n}"
    m["Date"] = "Mon, 23 Nov 2026 08:00:00 +0700"
    m["Message-ID"] = f"<bench-{n}@gmail.com>"


def text_message(size: int) -> bytes:
    """About `size` bytes: multipart/alternative, Vietnamese text/plain + text/html (8bit)."""
    def build(k: int) -> bytes:
        m = EmailMessage()
        _headers(m, 1)
        m.set_content("\n".join(f"{i}. {VI_PARA}" for i in range(k)))
        m.add_alternative("<html><body>\n" + "".join(
            f"<p>{i}. <b>{VI_PARA}</b></p>\n" for i in range(k)) + "</body></html>",
            subtype="html")
        m.set_boundary("==bench-alternative-1==")
        return m.as_bytes()

    k = 1
    while len(build(k + 1)) <= size:
        k += 1
    return build(k)


def attachment_message(att_bytes: int, seed: int = 1, payload: bytes | None = None,
                       filename: str = "bao-cao-tuan.pdf") -> bytes:
    """A short Vietnamese text + one application/pdf attachment (base64, 76-column lines)
    of `att_bytes` seeded random bytes (compressed data looks like that) or `payload`."""
    m = EmailMessage()
    _headers(m, seed)
    m.set_content(VI_PARA * 4)
    m.add_attachment(b"@@PAYLOAD@@", maintype="application", subtype="pdf", filename=filename)
    m.set_boundary(f"==bench-mixed-{seed}==")
    raw = m.as_bytes()
    marker = base64.encodebytes(b"@@PAYLOAD@@")  # what the placeholder became
    data = payload if payload is not None else random.Random(seed).randbytes(att_bytes)
    head, tail = raw.split(marker)
    return head + base64.encodebytes(data) + tail


def lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def crlf_stuffed(raw: bytes) -> bytes:
    """DATA bytes for the raw client: CRLF, dot-stuffed, terminated."""
    body = lf(raw).replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = re.sub(rb"(?m)^\.", b"..", body)
    return body + b".\r\n"


@dataclass
class Workload:
    key: str
    label: str
    path: Path
    size: int
    messages: int  # per row
    sessions: int


# -- CPU and memory from /proc ------------------------------------------------------
def proc_cpu(pid: int, children: bool = False) -> float:
    """utime+stime (and cutime+cstime) of `pid` in seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def child_pids(ppid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == ppid:
            out.append(int(d))
    return out


def tree_cpu(pid: int) -> float:
    """A Postfix master: its own CPU, its reaped children's, and its live children's."""
    return proc_cpu(pid, children=True) + sum(proc_cpu(c, children=True)
                                              for c in child_pids(pid))


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all CPUs) since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / TICK


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_hwm(pid: int) -> None:
    """VmHWM := current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def status_mib(pid: int, key: str) -> float:
    """VmRSS/VmHWM of `pid` in MiB; 0 when it is gone."""
    try:
        return status_kib(pid, key) / 1024
    except (FileNotFoundError, ProcessLookupError, KeyError):
        return 0.0


def tree_rss(pid: int, key: str = "VmRSS") -> tuple[float, dict[int, float]]:
    """(the daemon's `key` in MiB, {child pid: its `key`}): a milter and its workers."""
    return status_mib(pid, key), {c: status_mib(c, key) for c in child_pids(pid)}


class RssSampler:
    """RSS of a milter and of its worker processes, every `period_s`, in a thread."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid = pid
        self.period_s = period_s
        self.daemon_max = 0.0
        self.worker_max = 0.0  # the largest single worker seen
        self.total_max = 0.0  # daemon + all workers at one instant
        self.workers_seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.period_s)

    def take(self) -> None:
        if not self.pid:
            return
        d, ws = tree_rss(self.pid)
        self.daemon_max = max(self.daemon_max, d)
        self.worker_max = max([self.worker_max, *ws.values()])
        self.total_max = max(self.total_max, d + sum(ws.values()))
        self.workers_seen |= set(ws)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.take()


# -- processes of one run -------------------------------------------------------------
@dataclass
class Target:
    key: str
    label: str
    milter: str | None  # Postfix notation, None = no milter
    kind: str  # "none" | "mailwarden" | "clamav-milter"
    port: int = 0  # the smtpd listener for this target
    pid: int = 0


class ClamavMilter:
    """Debian's clamav-milter in the foreground with its own config, stopped by PID."""

    def __init__(self, workdir: Path, clamd_address: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "clamav-milter.sock"
        self.conf = self.dir / "clamav-milter.conf"
        self.log = self.dir / "clamav-milter.log"
        self.clamd = clamd_address  # "unix:/path" is also clamav-milter's notation
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        settings = [
            ("MilterSocket", f"unix:{self.socket}"),
            ("MilterSocketMode", "666"),
            ("FixStaleSocket", "yes"),
            ("Foreground", "yes"),  # no User line: keeps our uid (root), no privilege drop
            ("PidFile", self.dir / "clamav-milter.pid"),
            ("TemporaryDirectory", self.dir),
            ("ClamdSocket", self.clamd),
            ("OnClean", "Accept"),
            ("OnInfected", "Reject"),
            ("RejectMsg", "Virus found: %v"),
            ("OnFail", "Defer"),
            ("AddHeader", "No"),
            ("MaxFileSize", "64M"),  # above the 41 MB raw message of a 30 MiB attachment
            ("ReadTimeout", "120"),
            ("LogFile", self.log),
            ("LogTime", "yes"),
            ("LogInfected", "Basic"),
            ("LogClean", "Off"),
        ]
        return "".join(f"{k} {v}\n" for k, v in settings)

    def start(self) -> ClamavMilter:
        self.conf.write_text(self.config_text())
        self.proc = procs.spawn([CLAMAV_MILTER, "-c", str(self.conf)], self.dir / "stdout.log")
        procs.wait_until(procs.unix_ready(self.socket), 30, "clamav-milter",
                         alive=lambda: self.proc is not None and self.proc.poll() is None,
                         log=self.log)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class SmtpSink:
    """Postfix's smtp-sink (discards): the sender-ceiling target."""

    def __init__(self, workdir: Path) -> None:
        self.port = procs.free_port()
        self.log = workdir / "smtp-sink.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        self.proc = procs.spawn([SMTP_SINK, "-u", "root", f"127.0.0.1:{self.port}", "256"],
                                self.log)
        procs.wait_until(procs.tcp_ready("127.0.0.1", self.port), 15, "smtp-sink",
                         alive=lambda: self.proc is not None and self.proc.poll() is None)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None


class Rspamd:
    """Debian's Rspamd in milter mode, privately: the stock configuration
    (/etc/rspamd/rspamd.conf, every default module) with LOCAL_CONFDIR, DBDIR, RUNDIR and
    LOGDIR redefined into the work directory (`--var`), so nothing under /etc, /var or /run
    is touched or read from local.d. Overrides: the proxy worker (milter = yes) on a unix
    socket, the normal worker (the scanner the proxy hands messages to) and the controller
    on free 127.0.0.1 ports; `count = 2` normal workers (one per core, as mailwarden's two
    worker processes; the stock configuration starts one); the only nameserver is our test
    DNS server (NXDOMAIN for everything: RBL, DMARC, and the https maps of maps.rspamd.com
    never resolve, so nothing leaves loopback); fuzzy_check off (it would query
    rspamd.com's fuzzy servers); the antivirus module's `clamav` rule on our clamd socket
    with `action = "reject"`, everything else of it as shipped (it sends clamd the
    attachments, not the text parts: scan_mime_parts = true, scan_text_mime = false).
    No Redis: Bayes, greylisting, ratelimit and the reputation modules that need it are
    inactive, as on a server without Redis. Runs as root (`-i -u root -g root`)."""

    def __init__(self, workdir: Path, clamd_socket: str, nameserver: str) -> None:
        self.dir = workdir
        self.socket = self.dir / "milter.sock"
        self.log = self.dir / "log" / "rspamd.log"
        self.clamd_socket = clamd_socket
        self.nameserver = nameserver
        self.proc: subprocess.Popen[bytes] | None = None
        self.files: dict[str, str] = {}

    def start(self) -> Rspamd:
        local = self.dir / "local"
        for d in (local / "local.d", local / "override.d", self.dir / "db", self.dir / "run",
                  self.dir / "log"):
            d.mkdir(parents=True, exist_ok=True)
        normal, controller = procs.free_port(), procs.free_port()
        self.files = {
            "override.d/worker-proxy.inc":
                f'bind_socket = "{self.socket} mode=0666 owner=root";\n'
                "milter = yes;\ntimeout = 120s;\ncount = 1;\n"
                f'upstream "local" {{\n  default = yes;\n  hosts = "127.0.0.1:{normal}";\n}}\n',
            "override.d/worker-normal.inc": f'bind_socket = "127.0.0.1:{normal}";\ncount = 2;\n',
            "override.d/worker-controller.inc": f'bind_socket = "127.0.0.1:{controller}";\n',
            "local.d/options.inc": f'dns {{\n  nameserver = ["{self.nameserver}"];\n}}\n',
            "local.d/fuzzy_check.conf": "enabled = false;\n",
            "local.d/antivirus.conf":
                f'clamav {{\n  type = "clamav";\n  servers = "{self.clamd_socket}";\n'
                '  action = "reject";\n  symbol = "CLAM_VIRUS";\n'
                '  message = "Virus found: ${VIRUS}";\n}\n',
        }
        for name, text in self.files.items():
            (local / name).write_text(text)
        argv = [RSPAMD, "-f", "-i", "-u", "root", "-g", "root", "-c", RSPAMD_CONF,
                f"--var=LOCAL_CONFDIR={local}", f"--var=DBDIR={self.dir / 'db'}",
                f"--var=RUNDIR={self.dir / 'run'}", f"--var=LOGDIR={self.dir / 'log'}"]
        self.proc = procs.spawn(argv, self.dir / "stdout.log")
        procs.wait_until(procs.unix_ready(self.socket), 120, "rspamd",
                         alive=lambda: self.proc is not None and self.proc.poll() is None,
                         log=self.log)
        # the proxy answers before the normal workers have compiled their rules: wait for
        # both normal workers to listen
        procs.wait_until(procs.tcp_ready("127.0.0.1", normal), 120, "rspamd normal worker",
                         alive=lambda: self.proc is not None and self.proc.poll() is None,
                         log=self.log)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


VERIFY_DOMAIN = "kiemtra.ninhbinh.gov.vn"  # routed to the sink (byte-for-byte check)


@dataclass
class Stack:
    root: Path
    clamd: ClamdInstance
    sink: Sink
    smtp_sink: SmtpSink
    postfix: PostfixInstance
    targets: dict[str, Target]
    dns: DnsServer


def mw_config(root: Path, name: str, listen: str, clamd: str, scan: bool, nameserver: str,
              extra: dict[str, Any] | None = None) -> Path:
    """Shipped defaults (milter.workers, the raw-message scan, policy signatures required)
    plus what this benchmark needs: its sockets, no Redis, the loopback DNS server."""
    return write_config(root / f"{name}.toml", {
        "milter.listen": listen,
        "milter.socket_mode": "0666",
        "milter.release_on_refusal": False,  # no Redis in this benchmark; nothing is refused
        "antivirus.enabled": scan,
        "antivirus.clamd": clamd,
        "dns.nameservers": [nameserver],  # never /etc/resolv.conf: loopback only
        "logging.level": "info",
        **(extra or {}),
    })


MILTER_MACROS = {  # as PostfixInstance(milter=...) and conf/postfix/main.cf.milter set them
    "milter_default_action": "tempfail",
    "milter_protocol": "6",
    "milter_mail_macros":
        "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    "milter_rcpt_macros": "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
    "milter_end_of_data_macros": "i",
}


def start_mailwarden(root: Path, t: Target, clamd: str, scan: bool, nameserver: str,
                     pythonpath: str = "", extra: dict[str, Any] | None = None
                     ) -> subprocess.Popen[bytes]:
    """`python -m mailwarden --config F milter`, from another copy of the package if
    `pythonpath` is given (run from that directory so it wins over the tree's)."""
    cfg = mw_config(root, t.key, t.milter or "", clamd, scan, nameserver, extra)
    log = root / f"{t.key}.log"
    if not pythonpath:
        d = Daemon("milter", cfg, t.milter or "", log).start()
        assert d.proc is not None
        return d.proc
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = procs.spawn([sys.executable, "-m", "mailwarden", "--config", str(cfg), "milter"],
                       log, env=env, cwd=Path(pythonpath))
    listen = (t.milter or "")
    probe = procs.unix_ready(listen[5:]) if listen.startswith("unix:") else \
        procs.tcp_ready("127.0.0.1", int(listen.rsplit(":", 1)[1]))
    procs.wait_until(probe, 30, f"mailwarden milter {t.key}", alive=lambda: proc.poll() is None,
                     log=log)
    return proc


# -- experiments: patched copies of the package, never the tree itself -------------------
EXPERIMENTS_DIR = ROOT / "benchmarks" / "milter_experiments"
EXPERIMENTS: dict[str, tuple[str, list[str], str]] = {
    # key: (label, patches applied in order, milter socket)
    # (auth-no-keys and worker-recycle, measured in benchmarks/milter.md, are in the package)
}


def prepare_experiment(root: Path, key: str) -> tuple[str, str, str]:
    """Copy mailwarden/ and conf/ to root/exp/KEY, apply the patches there."""
    label, patches, family = EXPERIMENTS[key]
    dest = root / "exp" / key
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "mailwarden", dest / "mailwarden", ignore=ignore)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=ignore)
    for name in patches:
        subprocess.run(["patch", "-p1", "-s", "-i", str(EXPERIMENTS_DIR / f"{name}.patch")],
                       cwd=dest, check=True)
    return label, str(dest), family


@contextlib.contextmanager
def stack(root: Path, *, clamav_milter: bool, rspamd: bool, clamd_threads: int,
          variants: dict[str, tuple[str, str, str]]) -> Iterator[Stack]:
    """Start everything; stop everything by PID in reverse order, whatever happens.
    variants: target key -> (label, PYTHONPATH of a patched copy, "unix" | "inet")."""
    stops: list[Any] = []
    popens: list[subprocess.Popen[bytes]] = []

    def stop_milters() -> None:  # libmilter takes seconds to stop: SIGTERM all, then wait
        for p in popens:
            if p.poll() is None:
                p.terminate()
        for p in popens:
            procs.stop(p, timeout_s=15)

    try:
        clamd = ClamdInstance(root / "clamd", disable_cache=True, max_threads=clamd_threads)
        clamd.start()
        stops.append(clamd.stop)
        sink = Sink(root / "sink").start()
        stops.append(sink.stop)
        smtp_sink = SmtpSink(root).start()
        stops.append(smtp_sink.stop)
        dns = DnsServer(root / "dns")  # empty zone: NXDOMAIN for every name
        stops.append(dns.stop)
        dns.start()
        stops.append(stop_milters)

        targets = {"none": Target("none", "Postfix alone (no milter)", None, "none")}
        mw_rows: list[tuple[str, str, str, bool, str, dict[str, Any]]] = [
            ("mw-unix", "mailwarden, unix socket (shipped defaults)", "unix", True, "", {}),
            ("mw-tcp", "mailwarden, TCP 127.0.0.1", "inet", True, "", {}),
            ("mw-noscan", "mailwarden, unix, antivirus.enabled=false", "unix", False, "", {}),
            ("mw-inproc", "mailwarden, unix, milter.workers=0 (no pool)", "unix", True, "",
             {"milter.workers": 0}),
        ]
        mw_rows += [(key, label, family, True, path, {})
                    for key, (label, path, family) in variants.items()]
        for key, label, family, scan, path, extra in mw_rows:
            addr = f"unix:{root}/{key}.sock" if family == "unix" else \
                f"inet:127.0.0.1:{procs.free_port()}"
            t = Target(key, label, addr, "mailwarden")
            p = start_mailwarden(root, t, clamd.address, scan, dns.address, path, extra)
            popens.append(p)
            t.pid = p.pid
            targets[key] = t
        # the floor of the pymilter route: same callbacks, no work (benchmarks/milter_null.py)
        t = Target("pymilter-null", "pymilter doing nothing (floor), unix",
                   f"unix:{root}/pymilter-null.sock", "pymilter")
        p = procs.spawn([sys.executable, "-m", "benchmarks.milter_null", t.milter or ""],
                        root / "pymilter-null.log", cwd=ROOT)
        procs.wait_until(procs.unix_ready(f"{root}/pymilter-null.sock"), 30, "milter_null",
                         alive=lambda: p.poll() is None, log=root / "pymilter-null.log")
        popens.append(p)
        t.pid = p.pid
        targets[t.key] = t
        if clamav_milter:
            cm = ClamavMilter(root / "clamav-milter", clamd.address)
            t = Target("clamav-milter", "clamav-milter, unix socket",
                       f"unix:{cm.socket}", "clamav-milter")
            cm.start()
            assert cm.proc is not None
            popens.append(cm.proc)
            t.pid = cm.pid
            targets[t.key] = t
        if rspamd:
            rs = Rspamd(root / "rspamd", str(clamd.socket_path), dns.address)
            t = Target("rspamd", "Rspamd (proxy in milter mode), unix socket",
                       f"unix:{rs.socket}", "rspamd")
            try:
                rs.start()
            finally:
                if rs.proc is not None:
                    popens.append(rs.proc)
            t.pid = rs.pid
            targets[t.key] = t

        extra = ""
        for t in targets.values():
            if t.milter is None:
                continue
            t.port = procs.free_port()
            extra += (f"127.0.0.1:{t.port} inet n - n - - smtpd -o smtpd_milters={t.milter}"
                      " -o non_smtpd_milters=\n")
        cf = {**MILTER_MACROS,
              # load goes to smtp-sink (C, discards); VERIFY_DOMAIN goes to our sink
              "transport_maps": f"inline:{{{VERIFY_DOMAIN}=relay:[127.0.0.1]:{sink.port}}}"}
        pf = PostfixInstance(root / "postfix", relay_port=smtp_sink.port, main_cf_extra=cf,
                             master_cf_extra=extra,
                             relay_domains=("ninhbinh.gov.vn", VERIFY_DOMAIN))
        stops.append(pf.stop)
        pf.start()
        targets["none"].port = pf.smtpd_port
        yield Stack(root, clamd, sink, smtp_sink, pf, targets, dns)
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()


# -- load rows ------------------------------------------------------------------------
def queue_files(st: Stack) -> tuple[int, int]:
    """(messages in incoming+active+maildrop, in deferred+hold)."""
    def count(name: str) -> int:
        return sum(len(files) for _, _, files in os.walk(st.postfix.queue_dir / name))
    return (sum(count(q) for q in ("maildrop", "incoming", "active")),
            sum(count(q) for q in ("deferred", "hold")))


def wait_delivered(st: Stack, timeout_s: float) -> float:
    """Until Postfix's queue is empty (everything relayed); returns then (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy, stuck = queue_files(st)
        if stuck:
            raise RuntimeError(f"{stuck} deferred messages:\n{st.postfix.queue()[-2000:]}")
        if not busy:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"queue not empty after {timeout_s}s:\n{st.postfix.queue()[-2000:]}")


def smtp_source_argv(port: int, wl: Workload, n: int, sessions: int | None = None
                     ) -> list[str]:
    return [SMTP_SOURCE, "-c", "-s", str(sessions or wl.sessions), "-m", str(n), "-f", SENDER,
            "-t", RCPT, "-M", "bench.gmail.com", "-F", str(wl.path), f"127.0.0.1:{port}"]


@dataclass
class SourceRun:
    wall_s: float
    cpu_s: float  # smtp-source's own user+system time (wait4)
    steady_rate: float  # 250s per second between the 10th and the 90th percentile reply


def run_smtp_source(argv: list[str]) -> SourceRun:
    """Run smtp-source; `-c` prints a counter after each completed DATA, unbuffered, which
    gives the steady rate without the ramp-up and ramp-down of the sessions. Any non-2xx
    reply makes smtp-source exit non-zero, and that fails the row."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    times: list[float] = []
    while True:
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break
        now = time.monotonic()
        times += [now] * chunk.count(b"\r")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}: {err[-800:]}")
    n = len(times)
    lo, hi = n // 10, n - 1 - n // 10
    steady = (hi - lo) / (times[hi] - times[lo]) if hi > lo and times[hi] > times[lo] else \
        n / wall
    return SourceRun(wall, ru.ru_utime + ru.ru_stime, steady)


@dataclass
class Sample:
    t: float
    busy: float
    cpu: dict[str, float]


def sample(st: Stack, milter_pid: int) -> Sample:
    """CPU so far. "milter" = the milter process and its children (mailwarden's worker
    processes, Rspamd's workers; reaped ones included: a retired worker's CPU stays
    counted); "milter-daemon" = the milter process alone."""
    assert st.dns.proc is not None
    cpu = {"clamd": proc_cpu(st.clamd.pid), "postfix": tree_cpu(st.postfix.master_pid),
           "smtp-sink": proc_cpu(st.smtp_sink.pid), "dns": proc_cpu(st.dns.proc.pid),
           "milter": tree_cpu(milter_pid) if milter_pid else 0.0}
    own = proc_cpu(milter_pid) if milter_pid else 0.0
    return Sample(time.monotonic(), machine_busy(), cpu | {"milter-daemon": own})


def load_row(st: Stack, target: Target, wl: Workload, n: int) -> dict[str, Any]:
    wait_delivered(st, 120)
    a = sample(st, target.pid)
    with RssSampler(target.pid) as rss:
        run = run_smtp_source(smtp_source_argv(target.port, wl, n))
    b = sample(st, target.pid)
    t_done = wait_delivered(st, 120 + n)
    c = sample(st, target.pid)

    def ms(k: str, s: Sample, e: Sample) -> float:
        return (e.cpu[k] - s.cpu[k]) / n * 1000

    ours = sum(b.cpu[k] - a.cpu[k] for k in a.cpu if k != "milter-daemon") + run.cpu_s
    return {
        "target": target.key, "workload": wl.key, "messages": n, "sessions": wl.sessions,
        "wall_s": run.wall_s, "accepted_rate": run.steady_rate,
        "e2e_rate": n / (t_done - a.t),
        "milter_ms": ms("milter", a, b), "clamd_ms": ms("clamd", a, b),
        "milter_daemon_ms": ms("milter-daemon", a, b), "dns_ms": ms("dns", a, b),
        "rss_daemon_max_mib": rss.daemon_max, "rss_worker_max_mib": rss.worker_max,
        "rss_total_max_mib": rss.total_max, "workers_seen": len(rss.workers_seen),
        # Postfix and smtp-sink until the queue is empty (delivery may lag acceptance)
        "postfix_ms": ms("postfix", a, c), "smtp_sink_ms": ms("smtp-sink", a, c),
        "sender_ms": run.cpu_s / n * 1000,
        "busy_cores": (b.busy - a.busy) / run.wall_s,
        "others_cores": max(0.0, (b.busy - a.busy) - ours) / run.wall_s,
    }


def ceiling_row(st: Stack, wl: Workload, n: int) -> dict[str, Any]:
    run = run_smtp_source(smtp_source_argv(st.smtp_sink.port, wl, n))
    return {"target": "smtp-sink", "workload": wl.key, "messages": n, "sessions": wl.sessions,
            "wall_s": run.wall_s, "accepted_rate": run.steady_rate, "rate": n / run.wall_s,
            "sender_ms": run.cpu_s / n * 1000}


# -- one message at a time --------------------------------------------------------------
def smtp_send(port: int, data: bytes, rcpt: str = RCPT, timeout: float = 120.0
              ) -> tuple[float, str]:
    """One transaction; `data` is CRLF, dot-stuffed and ends with the final dot.
    Returns (seconds from connect to the reply after the dot, that reply)."""
    def reply(f: Any) -> str:
        lines = []
        while True:
            line = f.readline().decode(errors="replace")
            if not line:
                raise RuntimeError("connection closed")
            lines.append(line.rstrip())
            if line[3:4] != "-":
                return " / ".join(lines)

    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")
        reply(f)
        for cmd in (b"EHLO bench.gmail.com", f"MAIL FROM:<{SENDER}>".encode(),
                    f"RCPT TO:<{rcpt}>".encode(), b"DATA"):
            s.sendall(cmd + b"\r\n")
            r = reply(f)
            if r[:1] not in "23":
                raise RuntimeError(f"{cmd!r}: {r}")
        s.sendall(data)
        r = reply(f)
        elapsed = time.monotonic() - t0
        s.sendall(b"QUIT\r\n")
    return elapsed, r


def big_row(st: Stack, target: Target, data: bytes, reps: int) -> dict[str, Any]:
    """One large message `reps` times: end-to-end seconds, CPU (the milter with its
    workers), the RSS growth of the milter daemon and the peak of its worker processes."""
    walls, growth, hwm, before, milter_cpu, clamd_cpu = [], [], [], [], [], []
    w_before, w_hwm, w_growth = [], [], []
    for _ in range(reps):
        wait_delivered(st, 120)
        if target.pid:
            reset_hwm(target.pid)
            _, kids = tree_rss(target.pid)
            for c in kids:
                reset_hwm(c)
            rss0 = status_kib(target.pid, "VmRSS")
            w0 = tree_rss(target.pid)[1]
        c0, k0 = tree_cpu(target.pid) if target.pid else 0.0, proc_cpu(st.clamd.pid)
        port = target.port if target.key != "smtp-sink" else st.smtp_sink.port
        wall, reply = smtp_send(port, data)
        if not reply.startswith("250"):
            raise RuntimeError(f"{target.key}: large message refused: {reply}")
        walls.append(wall)
        clamd_cpu.append(proc_cpu(st.clamd.pid) - k0)
        if target.pid:
            milter_cpu.append(tree_cpu(target.pid) - c0)
            peak = status_kib(target.pid, "VmHWM")
            growth.append((peak - rss0) / 1024)
            hwm.append(peak / 1024)
            before.append(rss0 / 1024)
            w1 = tree_rss(target.pid, "VmHWM")[1]
            if w1:
                w_hwm.append(max(w1.values()))
                w_before.append(max(w0.values(), default=0.0))
                w_growth.append(max(v - w0.get(c, 0.0) for c, v in w1.items()))
    return {"target": target.key, "reps": reps, "walls": walls,
            "worker_rss_before_mib": max(w_before, default=0.0),
            "worker_vmhwm_mib": max(w_hwm, default=0.0),
            "worker_rss_growth_mib": max(w_growth, default=0.0),
            "wall_s": statistics.median(walls),
            "milter_cpu_s": statistics.median(milter_cpu) if milter_cpu else 0.0,
            "clamd_cpu_s": statistics.median(clamd_cpu),
            "rss_growth_mib": max(growth) if growth else 0.0,
            "rss_before_mib": before[0] if before else 0.0,
            "vmhwm_mib": max(hwm) if hwm else 0.0}


def latency_row(st: Stack, target: Target, wl: Workload, n: int) -> dict[str, Any]:
    """One session, one message at a time: the fixed delay per message."""
    wait_delivered(st, 120)
    run = run_smtp_source(smtp_source_argv(target.port, wl, n, sessions=1))
    return {"target": target.key, "workload": wl.key, "messages": n,
            "latency_ms": run.wall_s / n * 1000}


# -- sanity: scanning is on where it should be, clean mail arrives intact ---------------
def verify(st: Stack, clean: bytes) -> dict[str, dict[str, str]]:
    """EICAR (in a zip) must be refused by the scanning milters; a clean 1.4 MB message
    must reach the sink byte for byte through every target."""
    import io
    import zipfile

    from harness.clamd import eicar_bytes

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("thong-bao.txt", eicar_bytes())
    infected = crlf_stuffed(attachment_message(0, seed=7, payload=buf.getvalue(),
                                               filename="thong-bao.zip"))
    body = lf(clean).replace(b"\n", b"\r\n")
    out: dict[str, dict[str, str]] = {}
    for t in st.targets.values():
        for f in os.scandir(st.sink.dir):
            os.unlink(f.path)
        _, eicar = smtp_send(t.port, infected)
        _, ok = smtp_send(t.port, crlf_stuffed(clean), rcpt=f"vanthu@{VERIFY_DOMAIN}")
        got = st.sink.wait_for(1, timeout_s=30)
        intact = bool(got) and got[0][1].endswith(body)
        out[t.key] = {"eicar": eicar[:90], "clean": ok[:40],
                      "intact": "yes" if intact else "NO"}
    for f in os.scandir(st.sink.dir):
        os.unlink(f.path)
    return out


# -- py-spy ------------------------------------------------------------------------------
def py_spy() -> str | None:
    for c in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if c and Path(c).exists():
            return str(c)
    return None


def profile_row(st: Stack, target: Target, wl: Workload, n: int, out: Path,
                rate: int = 200, gil: bool = True) -> dict[str, Any] | None:
    """py-spy (raw collapsed stacks, --nonblocking) on the milter while it takes `n`
    messages of `wl`; returns the top functions by own and by inclusive samples.
    gil=True: only the thread holding the GIL is sampled, i.e. where the milter's Python
    CPU goes; gil=False: every thread not idle, i.e. where connections spend wall time."""
    spy = py_spy()
    if spy is None:
        return None
    wait_delivered(st, 120)
    raw = out
    p = subprocess.Popen([spy, "record", "--nonblocking", "--subprocesses", "-r", str(rate),
                          "-f", "raw", "-o", str(raw), "-p", str(target.pid)]
                         + (["--gil"] if gil else []),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    run_smtp_source(smtp_source_argv(target.port, wl, n))
    time.sleep(0.3)
    p.send_signal(2)  # SIGINT: py-spy writes its output and exits
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        procs.stop(p)
    wait_delivered(st, 120)
    if not raw.exists():
        return None
    return summarize_profile(raw.read_text(), wl.key, n)


def summarize_profile(text: str, workload: str, n: int) -> dict[str, Any]:
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = in_workers = 0
    for line in text.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        # --subprocesses: the first frame names the process ("process PID:"CMDLINE"")
        frames = [_frame(f) for f in stack_text.split(";")
                  if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        if "engine.workers import boot" in stack_text or any(
                f.startswith("worker_main ") for f in frames):
            in_workers += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    top_own = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    top_incl = sorted(incl.items(), key=lambda kv: -kv[1])[:25]
    return {"workload": workload, "messages": n, "samples": total,
            "worker_share": in_workers / total if total else 0.0,
            "own": [(k, v / total) for k, v in top_own],
            "inclusive": [(k, v / total) for k, v in top_incl],
            "inclusive_all": [(k, v / total) for k, v in incl.items()]}


def _frame(f: str) -> str:
    """py-spy raw frame "func (path/to/file.py:123)" -> "func (pkg/file.py)"."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", f.strip())
    if not m:
        return f.strip()
    func, path = m.groups()
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


# -- the run ------------------------------------------------------------------------------
LOAD_COUNTS = {  # workload -> (messages for "none", for a milter), times --scale
    "20k": (3000, 1000), "1m": (300, 100), "1.4m": (300, 100)}
BIG_BYTES = 30 * MiB


def machine() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30
                                  ).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import importlib.metadata as md
    return {
        "nproc": str(os.cpu_count()), "cpu": cpu, "kernel": platform.release(),
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * PAGE // MiB} MiB",
        "postfix": out(["postconf", "-d", "-h", "mail_version"]),
        "clamd": out(["clamd", "--version"]), "clamav-milter": out([CLAMAV_MILTER, "--version"]),
        "python": platform.python_version(), "pymilter": md.version("pymilter"),
        "py-spy": out([py_spy() or "py-spy", "--version"]),
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(workload, target) -> medians over rounds, ratios against "none" of the same round."""
    by_round: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        if r["target"] == "none":
            by_round[(r["round"], r["workload"])] = r
    agg: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        a = agg.setdefault((r["workload"], r["target"]), {"rounds": []})
        base = by_round[(r["round"], r["workload"])]
        a["rounds"].append({**r, "x_accepted": r["accepted_rate"] / base["accepted_rate"],
                            "x_e2e": r["e2e_rate"] / base["e2e_rate"]})
    for a in agg.values():
        rs = a["rounds"]
        for k in ("accepted_rate", "e2e_rate", "x_accepted", "x_e2e", "milter_ms", "clamd_ms",
                  "postfix_ms", "smtp_sink_ms", "sender_ms", "busy_cores", "others_cores"):
            a[k] = median([x[k] for x in rs])
            a[k + "_range"] = (min(x[k] for x in rs), max(x[k] for x in rs))
    return agg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.milter_load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, help="write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write every raw row here")
    ap.add_argument("--rounds", type=int, default=3, help="load rounds (interleaved)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    ap.add_argument("--big-reps", type=int, default=3)
    ap.add_argument("--clamd-threads", type=int, default=4)
    ap.add_argument("--no-clamav-milter", action="store_true")
    ap.add_argument("--no-rspamd", action="store_true")
    ap.add_argument("--no-experiments", action="store_true",
                    help="skip the patched copies in benchmarks/milter_experiments/")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args(argv)

    started = time.monotonic()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="mw-milterbench-", dir="/tmp"))
    root.chmod(0o755)  # Postfix's unprivileged daemons traverse it
    res: dict[str, Any] = {"date": when, "machine": machine(), "args": vars(a) | {
        "report": str(a.report), "json": str(a.json)}, "load_before": load_before}

    def say(*args: Any) -> None:
        print(f"[{time.monotonic() - started:6.1f}s]", *args, file=sys.stderr, flush=True)

    try:
        msgs = root / "msgs"
        msgs.mkdir()
        wls = {
            "20k": Workload("20k", "~20 KB text+html", msgs / "text-20k.eml", 0, 0, 20),
            "1m": Workload("1m", "1 MB attachment", msgs / "att-1m.eml", 0, 0, 20),
            "1.4m": Workload("1.4m", "1.4 MB attachment", msgs / "att-1.4m.eml", 0, 0, 20),
        }
        for wl, raw in ((wls["20k"], text_message(20_000)),
                        (wls["1m"], attachment_message(1_000_000, seed=1)),
                        (wls["1.4m"], attachment_message(1_400_000, seed=2))):
            wl.path.write_bytes(lf(raw))  # smtp-source -F adds CRLF to each line
            wl.size = len(lf(raw).replace(b"\n", b"\r\n"))
        big = crlf_stuffed(attachment_message(BIG_BYTES, seed=30))
        res["workloads"] = {k: {"label": w.label, "bytes": w.size, "sessions": w.sessions}
                            for k, w in wls.items()}
        res["big_bytes"] = len(big)
        variants = {} if a.no_experiments else {k: prepare_experiment(root, k)
                                                for k in EXPERIMENTS}
        with stack(root, clamav_milter=not a.no_clamav_milter,
                   rspamd=not a.no_rspamd and Path(RSPAMD).exists(),
                   clamd_threads=a.clamd_threads, variants=variants) as st:
            say("started:", ", ".join(f"{k}={t.pid or '-'}" for k, t in st.targets.items()))
            res["targets"] = {k: {"label": t.label, "milter": t.milter, "kind": t.kind}
                              for k, t in st.targets.items()}
            res["configs"] = {
                "clamd.conf": st.clamd.conf_path.read_text(),
                "master.cf (extra)": "".join(
                    f"127.0.0.1:PORT inet n - n - - smtpd -o smtpd_milters={t.milter} "
                    "-o non_smtpd_milters=\n" for t in st.targets.values() if t.milter),
                "mailwarden (mw-unix)": (root / "mw-unix.toml").read_text(),
            }
            if not a.no_clamav_milter:
                res["configs"]["clamav-milter.conf"] = \
                    (root / "clamav-milter" / "clamav-milter.conf").read_text()
            if "rspamd" in st.targets:
                local = root / "rspamd" / "local"
                for f in sorted(local.rglob("*")):
                    if f.is_file():
                        res["configs"][f"rspamd LOCAL_CONFDIR/{f.relative_to(local)}"] = \
                            f.read_text()
            res["verify"] = verify(st, attachment_message(1_400_000, seed=2))
            say("verify:", res["verify"])
            # The large message first, while the milters are fresh: RSS growth is then
            # measured over a baseline that no load has inflated yet.
            big_targets = [*st.targets.values(),
                           Target("smtp-sink", "smtp-sink directly (no Postfix)", None, "none")]
            res["big"] = []
            res["idle_rss_mib"] = {t.key: status_kib(t.pid, "VmRSS") / 1024
                                   for t in st.targets.values() if t.pid}
            res["rss_start"] = {t.key: tree_rss(t.pid) for t in st.targets.values() if t.pid}
            for t in big_targets:
                r = big_row(st, t, big, a.big_reps)
                res["big"].append(r)
                say(f"30 MiB {t.key:<14} {r['wall_s']:.2f} s, milter CPU {r['milter_cpu_s']:.2f} s,"
                    f" RSS +{r['rss_growth_mib']:.1f} MiB")

            for t in st.targets.values():  # warm-up: imports, thread pools, page cache
                run_smtp_source(smtp_source_argv(t.port, wls["20k"], 100))
            wait_delivered(st, 120)

            res["ceiling"] = [ceiling_row(st, wl, max(1, int(LOAD_COUNTS[k][0] * a.scale)))
                              for k, wl in wls.items()]
            say("ceiling:", [(r["workload"], round(r["accepted_rate"])) for r in res["ceiling"]])
            res["latency"] = [latency_row(st, t, wls["20k"], 100) for t in st.targets.values()]
            say("latency:", [(r["target"], round(r["latency_ms"], 1)) for r in res["latency"]])

            rows: list[dict[str, Any]] = []
            keys = list(st.targets)
            for rnd in range(a.rounds):
                order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
                if rnd % 2:
                    order.reverse()
                for wk, wl in wls.items():
                    for key in order:
                        n0, n1 = LOAD_COUNTS[wk]
                        n = max(20, int((n0 if key == "none" else n1) * a.scale))
                        r = load_row(st, st.targets[key], wl, n) | {"round": rnd}
                        rows.append(r)
                        say(f"round {rnd} {wk:>4} {key:<14} accepted {r['accepted_rate']:7.1f}/s "
                            f"e2e {r['e2e_rate']:7.1f}/s milter {r['milter_ms']:6.2f} ms "
                            f"clamd {r['clamd_ms']:6.2f} ms others {r['others_cores']:.2f}")
            res["rows"] = rows
            wait_delivered(st, 120)
            res["rss_after"] = {t.key: tree_rss(t.pid) for t in st.targets.values() if t.pid}

            res["profiles"] = []
            if not a.no_profile and py_spy():
                for key in ("mw-unix", "mw-inproc", *EXPERIMENTS):
                    if key not in st.targets:
                        continue
                    for wk, n in (("20k", 600), ("1.4m", 60)):
                        p = profile_row(st, st.targets[key], wls[wk], n,
                                        root / f"profile-{key}-{wk}.txt")
                        if p:
                            res["profiles"].append(p | {"target": key})
                            say("profile", key, wk, p["samples"], "samples")
            res["milter_logs"] = {k: _log_summary(root / f"{k}.log") for k in st.targets
                                  if k.startswith("mw-")}
    finally:
        res["load_after"] = os.getloadavg()
        res["elapsed_s"] = time.monotonic() - started
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))
    if a.report:
        a.report.write_text(render(res))
        say("wrote", a.report)
    return 0


def _log_summary(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {"reject": text.count(": reject: "), "defer": text.count(": defer: "),
            "error": text.count("ERROR"), "traceback": text.count("Traceback")}


# -- the report -----------------------------------------------------------------------------
def _f(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def _rng(a: dict[str, Any], k: str, nd: int = 1) -> str:
    lo, hi = a[k + "_range"]
    if len(a["rounds"]) < 2:
        return _f(a[k], nd)
    return f"{_f(a[k], nd)} ({_f(lo, nd)}-{_f(hi, nd)})"


def _boot_frame(frame: str) -> bool:
    """The frames of a worker process's `python -c` start (see engine/workers.py _BOOT)."""
    return "import boot" in frame or "boot(int(" in frame or frame == "<module> (<string>)"


def _incl(p: dict[str, Any], *needles: str) -> float:
    return max((v for k, v in p["inclusive_all"] if any(n in k for n in needles)), default=0.0)


HISTORICAL_RSPAMD_20K = 0.43  # issue 8's text: "measured here in one run before them"


def _rss_cell(d: float, ws: dict[Any, float]) -> str:
    inner = ", ".join(f"{v:.1f}" for v in ws.values())
    return f"{d:.1f}" + (f" + workers [{inner}]" if ws else "")


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    agg = aggregate(res["rows"])
    targets = res["targets"]
    wls = res["workloads"]
    big = {r["target"]: r for r in res["big"]}
    lat = {r["target"]: r["latency_ms"] for r in res["latency"]}
    ceil = {r["workload"]: r for r in res["ceiling"]}
    cm, rs = "clamav-milter" in targets, "rspamd" in targets
    L: list[str] = []
    w = L.append

    w("# Milter load benchmark: mailwarden vs Postfix alone vs clamav-milter vs Rspamd\n")
    w("Issue 8, section Benchmark (the benchmark itself was built for issue 3). Generated by "
      "`benchmarks/milter_load.py` — every table below comes from ONE run of:\n")
    w("```sh\n.venv/bin/python -m benchmarks.milter_load --report benchmarks/milter.md\n```\n")
    w(f"Run: {res['date']}, {res['elapsed_s'] / 60:.1f} min, {res['args']['rounds']} interleaved "
      f"load rounds (figures are medians, ranges in brackets). Load average before "
      f"{res['load_before'][0]:.2f}, after {res['load_after'][0]:.2f}.\n")
    w("mailwarden runs with its shipped defaults: `milter.workers = 2` (inspection and "
      "authentication in a pre-started pool of worker processes, engine/workers.py), clamd "
      "always gets the raw message (engine/core.py), `antivirus.policy_signatures = "
      "\"require\"` (clamd loads conf/clamav/mailwarden-policy.ndb), the clamd gate and "
      "circuit breaker (engine/scanning.py), `auth.enabled = true`. clamd's cache is off "
      "(`DisableCache yes`) for every row.\n")

    # --- targets
    u = "mw-unix"
    b_none, b_mw = big["none"]["wall_s"], big[u]["wall_s"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    w("## Targets (issue 8; mailwarden on a unix socket, shipped defaults)\n")
    w("| target (issue 8) | measured (end to end, x Postfix alone; acceptance in brackets) "
      "| verdict |")
    w("|---|---|---|")
    for wk in ("20k", "1.4m"):
        t = agg[(wk, u)]
        others = []
        ok = True
        if cm:
            c = agg[(wk, "clamav-milter")]
            others.append(f"clamav-milter {c['x_e2e']:.2f}x ({c['x_accepted']:.2f}x)")
            ok = ok and t["x_e2e"] > c["x_e2e"]
        if rs:
            r = agg[(wk, "rspamd")]
            others.append(f"Rspamd {r['x_e2e']:.2f}x ({r['x_accepted']:.2f}x)")
            ok = ok and t["x_e2e"] > r["x_e2e"]
        elif wk == "20k":
            others.append(f"Rspamd not measured in this run (issue 8's earlier run: "
                          f"{HISTORICAL_RSPAMD_20K:.2f}x, historical)")
        w(f"| {wls[wk]['label']}, 20 sessions: ahead of clamav-milter and Rspamd | mailwarden "
          f"{t['x_e2e']:.2f}x ({t['x_accepted']:.2f}x); " + "; ".join(others)
          + f" | {verdict(ok)} |")
    w(f"| one 30 MiB attachment: ≤ 1.2 s end to end | {b_mw:.2f} s (Postfix alone "
      f"{b_none:.2f} s, {b_mw / b_none:.1f}x) | {verdict(b_mw <= 1.2)} |")
    bu = big[u]
    w(f"| RSS of the daemon and of each worker | daemon {bu['rss_before_mib']:.1f} MiB, "
      f"+{bu['rss_growth_mib']:.1f} MiB for 30 MiB; busiest worker peak "
      f"{bu['worker_vmhwm_mib']:.1f} MiB (+{bu['worker_rss_growth_mib']:.1f}); under load "
      "see [RSS](#rss-of-the-milter-daemon-and-its-workers) | reported |")
    w("")

    # --- throughput
    w("## Throughput through the real Postfix\n")
    w("`smtp-source -c -s 20 -m N -F FILE` (one message per connection, 20 in parallel) into "
      "the target's smtpd listener; Postfix relays every message to Postfix's `smtp-sink`. "
      "**end to end** = N / (first connection → Postfix's queue empty again), i.e. accepted "
      "*and* relayed; **accepted** = the steady rate of 250 replies to the final dot (10th to "
      "90th percentile of smtp-source's counter, no ramp-up/down). x = against Postfix alone "
      "in the same round. CPU columns: milliseconds of CPU per message, from /proc/PID/stat. "
      "*milter* = the milter process and its children (mailwarden's worker processes, "
      "Rspamd's workers), *daemon* = the milter process alone; Postfix = master + all its "
      "children, reaped ones included, counted until the queue is empty. *others* = busy "
      "cores not accounted for by our processes (the test DNS server is counted as ours): "
      "other people's load on this shared machine during the row.\n")
    order = list(targets)
    for wk, wl in wls.items():
        w(f"### {wl['label']} ({wl['bytes']:,} bytes on the wire, {wl['sessions']} sessions)\n")
        w("| target | end to end msg/s | x | accepted msg/s | x | milter CPU ms | of it daemon "
          "| clamd CPU ms | Postfix CPU ms | smtp-source CPU ms | busy cores | others |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k in order:
            if (wk, k) not in agg:
                continue
            x = agg[(wk, k)]
            own = median([r["milter_daemon_ms"] for r in x["rounds"]])
            w(f"| {targets[k]['label']} | {_rng(x, 'e2e_rate')} | {x['x_e2e']:.2f} | "
              f"{_rng(x, 'accepted_rate')} | {x['x_accepted']:.2f} | "
              f"{_f(x['milter_ms'], 2) if k != 'none' else '—'} | "
              f"{_f(own, 2) if k != 'none' else '—'} | {_f(x['clamd_ms'], 2)} | "
              f"{_f(x['postfix_ms'], 2)} | {_f(x['sender_ms'], 2)} | {_f(x['busy_cores'], 2)} | "
              f"{_f(x['others_cores'], 2)} |")
        w("")
    w("Messages per row: " + ", ".join(
        f"{k}: {sorted({r['messages'] for r in res['rows'] if r['workload'] == k})}"
        for k in wls) + " (Postfix alone gets more: it is faster).\n")

    # --- sender
    w("### The sender is not the bottleneck\n")
    w("The same smtp-source command straight into Postfix's `smtp-sink` (no Postfix, no "
      "milter), and smtp-source's own CPU (wait4) per message:\n")
    w("| workload | smtp-source → smtp-sink msg/s | smtp-source CPU ms/msg |")
    w("|---|---|---|")
    for wk in wls:
        c = ceil[wk]
        w(f"| {wls[wk]['label']} | {_f(c['accepted_rate'])} | {_f(c['sender_ms'], 2)} |")
    w("")

    # --- latency
    w("## Latency: one session, one ~20 KB message at a time\n")
    w("`smtp-source -s 1 -m 100`: wall time per message (connect .. 250 .. QUIT).\n")
    w("| target | ms per message |")
    w("|---|---|")
    for k in order:
        w(f"| {targets[k]['label']} | {lat[k]:.1f} |")
    w("")

    # --- big
    w(f"## One 30 MiB attachment ({res['big_bytes']:,} bytes on the wire)\n")
    w("A raw socket client with the message prepared in memory: seconds from connect to the "
      "reply to the final dot; median of "
      f"{res['args']['big_reps']}, sent before any load so the milters are fresh. CPU in "
      "seconds (milter = daemon + workers). RSS: VmHWM of the daemon and of every worker "
      "reset through /proc/PID/clear_refs, then VmHWM after the message (worst of the "
      "repetitions); growth = VmHWM minus VmRSS just before.\n")
    w("| target | seconds | x Postfix alone | milter CPU s | clamd CPU s | daemon RSS before "
      "MiB | daemon growth MiB | busiest worker VmHWM MiB | its growth MiB |")
    w("|---|---|---|---|---|---|---|---|---|")
    for k, r in big.items():
        label = targets[k]["label"] if k in targets else "smtp-sink directly (no Postfix)"
        wk_hwm = f"{r['worker_vmhwm_mib']:.1f}" if r.get("worker_vmhwm_mib") else "—"
        wk_gr = f"{r['worker_rss_growth_mib']:.1f}" if r.get("worker_vmhwm_mib") else "—"
        w(f"| {label} | {r['wall_s']:.2f} ({min(r['walls']):.2f}-{max(r['walls']):.2f}) | "
          f"{r['wall_s'] / b_none:.1f} | {r['milter_cpu_s']:.2f} | {r['clamd_cpu_s']:.2f} | "
          f"{r['rss_before_mib']:.1f} | {r['rss_growth_mib']:.1f} | {wk_hwm} | {wk_gr} |")
    w("")

    # --- RSS
    w("## RSS of the milter daemon and its workers\n")
    w("MiB from /proc/PID/status (VmRSS). *start* = after start, before any message; "
      "*during load* = the largest values sampled every 0.2 s during the load rows (all "
      "workloads and rounds): the daemon, the largest single worker, and daemon + all "
      "workers at one instant; *after* = at rest after the last load row. For Rspamd the "
      "children are its proxy, normal, controller and hs_helper processes.\n")
    w("| target | start: daemon + workers | during load: daemon max | largest worker | "
      "daemon + workers max | after load: daemon + workers | worker PIDs seen |")
    w("|---|---|---|---|---|---|---|")
    for k in order:
        if k == "none" or k not in res.get("rss_start", {}):
            continue
        rows = [r for r in res["rows"] if r["target"] == k]
        d0, ws0 = res["rss_start"][k]
        d1, ws1 = res.get("rss_after", {}).get(k, (0.0, {}))
        w(f"| {targets[k]['label']} | {_rss_cell(d0, ws0)} | "
          f"{max(r['rss_daemon_max_mib'] for r in rows):.1f} | "
          f"{max(r['rss_worker_max_mib'] for r in rows):.1f} | "
          f"{max(r['rss_total_max_mib'] for r in rows):.1f} | {_rss_cell(d1, ws1)} | "
          f"{max(r['workers_seen'] for r in rows)} per row |")
    w("")

    # --- profile
    profiles = res.get("profiles", [])
    if profiles:
        w("## Where the milter's time goes (py-spy)\n")
        w("`py-spy record --gil --subprocesses --nonblocking -r 200 -f raw -p PID` while the "
          "milter takes a load row (20 sessions): in each process (the daemon and its worker "
          "processes) only samples of the thread holding the GIL, i.e. Python CPU (libmilter's "
          "C threads and waits for clamd do not appear). Share of samples; *inclusive* = the "
          "function or anything it calls; *in workers* = share of samples taken in worker "
          "processes.\n")
        for p in profiles:
            w(f"### {targets[p['target']]['label']}, {wls[p['workload']]['label']} "
              f"({p['samples']} samples, {p.get('worker_share', 0.0):.0%} in workers)\n")
            w("| own | function | | inclusive | function |")
            w("|---|---|---|---|---|")
            inc = [x for x in p["inclusive"] if x[1] < 0.999 and not _boot_frame(x[0])][:12]
            for i in range(max(len(p["own"][:12]), len(inc))):
                o = p["own"][i] if i < len(p["own"][:12]) else ("", 0.0)
                c = inc[i] if i < len(inc) else ("", 0.0)
                w(f"| {o[1]:.1%} | `{o[0]}` | | {c[1]:.1%} | `{c[0]}` |" if o[0] else
                  f"| | | | {c[1]:.1%} | `{c[0]}` |")
            w("")

    # --- analysis
    w("## Analysis (computed from this run)\n")
    w(_analysis(res, agg, big, lat, targets))

    # --- how
    w("## How it was run\n")
    w("Everything private, on loopback, started by the script and stopped by PID "
      "(`harness/`): one clamd (`ClamdInstance`, `DisableCache yes`, MaxThreads "
      f"{res['args']['clamd_threads']}; its database: mailwarden's policy signatures "
      "conf/clamav/mailwarden-policy.ndb plus two test hash signatures, the same for every "
      "milter), a test DNS server on 127.0.0.1 (`harness.dns`, empty zone: NXDOMAIN) as the "
      "only nameserver of mailwarden and Rspamd, one Postfix (`PostfixInstance`, a 0755 work "
      "directory under /tmp) with one smtpd listener per target, Postfix's `smtp-sink` as the "
      "relay host for the load, and the project's sink (`harness.sink`) for the byte-for-byte "
      "check. All targets share the Postfix master, queue, qmgr and delivery agents; only "
      "the smtpd listener differs.\n")
    w("- mailwarden: `python -m mailwarden --config F milter` (`Daemon`), shipped defaults "
      "except `milter.release_on_refusal = false` (no Redis here; no message is refused in "
      "the load) and `dns.nameservers` (the loopback DNS server). The client is 127.0.0.1, "
      "inside the default `domains.trusted_networks`, so authentication takes the outbound "
      "path (no DKIM keys configured: nothing to sign); the inbound SPF/DKIM/DMARC cost is "
      "measured separately in benchmarks/milter_auth.md.")
    if cm:
        w("- clamav-milter (Debian package, installed with apt-get): "
          "`clamav-milter -c WORK/clamav-milter/clamav-milter.conf`, in the foreground "
          "(`Foreground yes`), as root without a `User` line, on a unix socket, pointing at "
          "the SAME clamd socket; `OnInfected Reject`, `MaxFileSize 64M` (the 25M default "
          "would skip the 30 MiB message), `AddHeader No` (mailwarden adds none either). "
          "Stopped by its PID like the rest.")
    if rs:
        w("- Rspamd (Debian package, installed with apt-get): " + " ".join(
            (Rspamd.__doc__ or "").split()) + " The proxy hands each message to a normal "
            "worker over 127.0.0.1 (the stock layout). Stopped by its PID (the main process "
            "stops its workers).")
    else:
        w(f"- Rspamd: not run (`--no-rspamd`, or {RSPAMD} missing); the Rspamd figure in the "
          "targets is issue 8's historical number, not from this run.")
    w("- Load: `smtp-source -c -s 20 -m N -f doitac@gmail.com -t vanthu@ninhbinh.gov.vn "
      "-M bench.gmail.com -F FILE 127.0.0.1:PORT` (FILE has LF line ends; smtp-source "
      "sends CRLF). Rounds interleave the targets, in a rotated order each round.")
    w("- Messages: ~20 KB = multipart/alternative, Vietnamese text/plain + text/html as "
      "Python's email package encodes them (base64); attachments = a short text part + "
      "`application/pdf` of seeded random bytes (incompressible, like real PDFs/JPEGs/zips), "
      "base64 in 76-column lines.")
    w("- Sanity, before the load (reply to an EICAR zip / whether a clean 1.4 MB message "
      "reached the project's sink byte for byte):\n")
    w("| target | EICAR in a zip | clean 1.4 MB intact at the sink |")
    w("|---|---|---|")
    for k, v in res["verify"].items():
        w(f"| {targets[k]['label']} | `{v['eicar'][:60]}` | {v['intact']} |")
    w("")
    logs = res.get("milter_logs", {})
    if logs:
        w("mailwarden logs after the run (one EICAR refusal per scanning milter is "
          "expected): " + "; ".join(f"{k}: {v['reject']} reject, {v['defer']} defer, "
                                    f"{v['traceback']} tracebacks" for k, v in logs.items())
          + ".\n")
    w("Machine:\n")
    w("| | |\n|---|---|")
    for k, v in m.items():
        w(f"| {k} | {v} |")
    w("")
    w("Configuration as generated (ports and paths vary per run):\n")
    for name, text in res["configs"].items():
        w(f"<details><summary>{name}</summary>\n\n```\n{text.strip()}\n```\n</details>\n")
    w("Options: `--rounds N` (default 3), `--scale F` (message counts), `--big-reps`, "
      "`--no-clamav-milter`, `--no-rspamd`, `--no-experiments`, `--no-profile`, `--json FILE` "
      "(raw rows), `--keep` (keep the work directory with every log). py-spy is a "
      "benchmark-only tool in the venv (`.venv/bin/pip install py-spy`); without it the "
      "profile section is skipped. Experiments: a patch in `benchmarks/milter_experiments/` "
      "listed in `EXPERIMENTS` is applied to a copy of `mailwarden/` and run as one more "
      "target.\n")
    w("Caveat: this machine is shared — other engineers ran tests and benchmarks during the "
      "run (column *others*, and the load averages above). Rows are interleaved so that "
      "load hits all targets alike, but single figures move by ±10-20 % between runs.\n")
    w("## DKIM/SPF\n")
    w("Inbound verification and outbound signing are measured by their own harness: "
      "benchmarks/milter_auth.md (`python -m benchmarks.milter_auth`).\n")
    return "\n".join(L) + "\n"


def _analysis(res: dict[str, Any], agg: dict[tuple[str, str], dict[str, Any]],
              big: dict[str, dict[str, Any]], lat: dict[str, float],
              targets: dict[str, Any]) -> str:
    L: list[str] = []
    w = L.append
    u = "mw-unix"

    def total(wk: str, k: str) -> float:
        x = agg[(wk, k)]
        return float(x["milter_ms"] + x["clamd_ms"] + x["postfix_ms"] + x["smtp_sink_ms"]
                     + x["sender_ms"] + median([r["dns_ms"] for r in x["rounds"]]))

    w("CPU per message, all processes (milter with its workers, clamd, Postfix, smtp-sink, "
      "smtp-source, DNS server), and the rate it allows on 2 cores (*busy cores* ≈ 2 means "
      "the machine is the limit):\n")
    w("| target | " + " | ".join(f"{res['workloads'][wk]['label']}: total ms (milter, "
                                   "clamd)" for wk in res["workloads"]) + " |")
    w("|---|" + "---|" * len(res["workloads"]))
    for k in targets:
        cells = []
        for wk in res["workloads"]:
            if (wk, k) not in agg:
                cells.append("—")
                continue
            x = agg[(wk, k)]
            cells.append(f"{total(wk, k):.1f} ({x['milter_ms']:.1f}, {x['clamd_ms']:.1f})")
        w(f"| {targets[k]['label']} | " + " | ".join(cells) + " |")
    w("")
    if "mw-inproc" in targets:
        for wk in ("20k", "1.4m"):
            a, b = agg[(wk, u)], agg[(wk, "mw-inproc")]
            w(f"- The worker pool at {res['workloads'][wk]['label']}: {a['x_e2e']:.2f}x with "
              f"it, {b['x_e2e']:.2f}x with `milter.workers = 0`; milter CPU "
              f"{a['milter_ms']:.2f} vs {b['milter_ms']:.2f} ms per message.")
    for key in EXPERIMENTS:
        if key not in targets:
            continue
        for wk in ("20k", "1.4m"):
            a, b = agg[(wk, u)], agg[(wk, key)]
            w(f"- {targets[key]['label']} at {res['workloads'][wk]['label']}: "
              f"{b['x_e2e']:.2f}x (the package as it is: {a['x_e2e']:.2f}x); milter CPU "
              f"{b['milter_ms']:.2f} vs {a['milter_ms']:.2f} ms per message.")
        w(f"- {targets[key]['label']}, one 30 MiB attachment: {big[key]['wall_s']:.2f} s "
          f"(the package as it is: {big[u]['wall_s']:.2f} s).")
    if "mw-noscan" in targets:
        for wk in ("20k", "1.4m"):
            a, b = agg[(wk, u)], agg[(wk, "mw-noscan")]
            w(f"- Scanning off at {res['workloads'][wk]['label']}: {b['x_e2e']:.2f}x "
              f"(with the raw scan {a['x_e2e']:.2f}x; clamd {a['clamd_ms']:.2f} ms per "
              "message).")
    w("")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
