"""Operating it (issue 10): metrics, lock notifications, the report, the health check.

Real Postfix -> real policyd and milter (metrics on loopback HTTP) -> real Redis and
clamd -> sink; `mailwarden notifier` mails lock events through Postfix (or through a
relay that is down, then up); `mailwarden report` reads the daemons' own logs and the
audit stream; its HTML is opened in headless Chromium; `mailwarden health` is run with
clamd stopped and started again.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import procs
from harness.clamd import ClamdInstance, eicar_bytes
from harness.daemons import Daemon, write_config
from harness.dns import DnsServer
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send
from tests.conftest import require

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"
ADMIN = "quantri@ninhbinh.gov.vn"
ROOT = Path(__file__).resolve().parents[2]


def msg(sender: str, to: str, subject: str = "Bao cao", attach: tuple[str, bytes] | None = None
        ) -> bytes:
    m = email.message.EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m["Date"] = "Mon, 23 Nov 2026 08:00:00 +0700"
    m.set_content("Noi dung.\n")
    if attach:
        m.add_attachment(attach[1], maintype="application", subtype="octet-stream",
                         filename=attach[0])
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def pe32() -> bytes:
    pe = bytearray(1024)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe[0x80:0x84] = b"PE\0\0"
    pe[0x98:0x9A] = (0x10B).to_bytes(2, "little")
    return bytes(pe)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics -> {(name, labels): value} (the text exposition format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in metrics.items() if n == name and want <= set(lab))


def cli(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=procs.child_env())


def wait(probe: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def notifications(sink: Sink) -> list[tuple[dict[str, Any], email.message.EmailMessage]]:
    out = []
    for env, data in sink.messages():
        m = email.message_from_bytes(data, policy=email.policy.default)
        if m.get("X-Mailwarden-Event"):
            out.append((env, m))  # type: ignore[arg-type]
    return out


def all_mail(sink: Sink) -> list[tuple[dict[str, Any], email.message.EmailMessage]]:
    return [(env, email.message_from_bytes(data, policy=email.policy.default))  # type: ignore[misc]
            for env, data in sink.messages()]


def queue_empty(pf: PostfixInstance) -> bool:
    return "Mail queue is empty" in pf.queue()


# -- a stack of policy daemons (one per MTA) and notifiers on one Redis -----------------
@dataclass
class Mta:
    postfix: PostfixInstance
    policyd: Daemon
    config: Path
    notifier: Daemon | None = None

    def send(self, login: str | None, rcpts: list[str], message: bytes | None = b"",
             sender: str | None = None) -> Transaction:
        body = msg(sender or login or "x@gmail.com", rcpts[0]) if message == b"" else message
        return send(self.postfix.smtpd_port, sender or login or "x@gmail.com", rcpts, body,
                    login=login)


@dataclass
class Stack:
    redis: RedisInstance
    sink: Sink
    mtas: list[Mta] = field(default_factory=list)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.mtas[0].config, *args)


@pytest.fixture
def ops_factory(postfix_dir: Path, redis_server: RedisInstance, sink: Sink,
                postfix_factory: Callable[..., PostfixInstance]) -> Iterator[Callable[..., Stack]]:
    daemons: list[Daemon] = []

    def make(n_mtas: int = 1, *, notifier_smtp: str | None = None, **over: Any) -> Stack:
        st = Stack(redis_server, sink)
        for i in range(n_mtas):
            d = postfix_dir / f"mta{i}"
            d.mkdir()
            sock = d / "policyd.sock"
            notifier_port, smtpd_port = procs.free_port(), procs.free_port()
            # The notifier hands its mail to this MTA (or to the relay the test names).
            smtp = notifier_smtp or f"inet:127.0.0.1:{smtpd_port}"
            config = write_config(d / "mailwarden.toml", {
                "policyd.listen": f"unix:{sock}", "policyd.socket_mode": "0666",
                "policyd.lock_refresh": 0.2, "policyd.stats_interval": 0.0,
                "policyd.lock_snapshot": "",
                "redis.url": redis_server.url, "logging.level": "info",
                "ratelimit.overrides": {ALICE: {"limit": 5}},
                "notifier.smtp": smtp, "notifier.admins": [ADMIN],
                "notifier.consumer": f"mta{i}",
                "notifier.retry_min": 0.2, "notifier.retry_max": 1.0,
                "notifier.metrics_listen": f"inet:127.0.0.1:{notifier_port}", **over})
            policyd = Daemon("policyd", config, f"unix:{sock}", d / "policyd.log").start()
            daemons.append(policyd)
            pf = postfix_factory(f"postfix{i}", policy=f"unix:{sock}", smtpd_port=smtpd_port)
            notifier = Daemon("notifier", config, f"inet:127.0.0.1:{notifier_port}",
                              d / "notifier.log").start()
            daemons.append(notifier)
            st.mtas.append(Mta(pf, policyd, config, notifier))
        return st

    try:
        yield make
    finally:
        for dmn in reversed(daemons):
            dmn.stop()


def lock_alice(st: Stack, split: bool = False) -> None:
    """Six external recipients against alice's limit of 5: the sixth locks (once)."""
    for i in range(6):
        mta = st.mtas[i % len(st.mtas)] if split else st.mtas[0]
        t = mta.send(ALICE, [f"r{i}@gmail.com"])
        if i < 5:
            assert t.accepted == [f"r{i}@gmail.com"], t
        else:
            assert "Dieu 7.2.b" in t.refused(f"r{i}@gmail.com")


def notifier_health(st: Stack) -> subprocess.CompletedProcess[str]:
    return st.cli("health", "--skip", "clamd", "--skip", "milter")


def assert_one_each(st: Stack, sink: Sink) -> list[email.message.EmailMessage]:
    """Exactly one lock notification to the owner and one to the admin, once everything
    settled: the backlog is empty and no MTA holds mail any more."""
    wait(lambda: len(notifications(sink)) >= 2, "the two notifications")
    wait(lambda: all(queue_empty(m.postfix) for m in st.mtas), "empty queues")
    wait(lambda: "notify_backlog=0;" in notifier_health(st).stdout, "an empty notifier backlog")
    health = notifier_health(st)
    assert health.returncode == 0, health.stdout
    got = notifications(sink)
    rcpts = sorted(r for env, _ in got for r in env["rcpt_to"])
    assert rcpts == sorted([ALICE, ADMIN]), [(e, m["Subject"]) for e, m in got]
    for env, m in got:
        assert env["mail_from"] == "", env  # the null sender: no lock can block it
        assert m["Auto-Submitted"] == "auto-generated"
    return [m for _, m in got]


# -- lock notifications -------------------------------------------------------------------
def test_rate_lock_notifies_owner_and_admin_once(ops_factory: Callable[..., Stack],
                                                 sink: Sink) -> None:
    st = ops_factory()
    lock_alice(st)
    mails = assert_one_each(st, sink)
    body = mails[0].get_content()
    assert mails[0]["Subject"].startswith("[Thư công vụ] Hộp thư alice@ninhbinh.gov.vn bị tạm khóa")
    # Vietnamese first, then English; the count and limit, the articles, the contact.
    assert body.index("TẠM KHÓA GỬI THƯ") < body.index("LOCKED FOR SENDING")
    assert "tới 6" in body and "giới hạn 5" in body
    assert "QD 162/2025/QD-UBND Dieu 7.2.b" in body and "Dieu 7.3" in body
    assert "So Khoa hoc va Cong nghe tinh Ninh Binh" in body
    # The operator unlocks: the owner (only) hears about it.
    out = st.cli("unlock", ALICE, "--reason", "CV 12/SKHCN", "--by", "ops1")
    assert out.returncode == 0, out.stderr
    wait(lambda: len(notifications(sink)) >= 3, "the unlock notification")
    wait(lambda: queue_empty(st.mtas[0].postfix), "empty queue")
    unlock = [(e, m) for e, m in notifications(sink) if "unlock" in m["X-Mailwarden-Event"]]
    assert [e["rcpt_to"] for e, _ in unlock] == [[ALICE]]
    assert "MỞ KHÓA" in unlock[0][1].get_content() and "ops1" in unlock[0][1].get_content()
    assert "notification sent" in st.mtas[0].notifier.log_text()  # type: ignore[union-attr]
    # The daily report goes the same way to the administrators (the systemd timer).
    out = st.cli("report", "--log", str(st.mtas[0].policyd.log), "--mail")
    assert out.returncode == 0, out.stderr
    report = wait(lambda: [m for e, m in all_mail(sink) if "report" in m["Subject"]],
                  "the mailed report")
    assert "ratelimit.external_recipients" in report[0].get_content()
    assert "unlock  alice@ninhbinh.gov.vn" in report[0].get_content()


def test_two_policy_daemons_on_one_redis_notify_once(ops_factory: Callable[..., Stack],
                                                     sink: Sink) -> None:
    """Two MTAs, each with its policy daemon and its notifier, one Redis: alice's sends
    alternate between them; one lock, one notification each to owner and admin."""
    st = ops_factory(n_mtas=2)
    lock_alice(st, split=True)
    assert_one_each(st, sink)
    # Both daemons enforce the lock (published), whichever MTA alice uses.
    for mta in st.mtas:
        assert "Hop thu bi tam khoa" in mta.send(ALICE, [BOB], None).refused(BOB)


def test_relay_down_delays_notifications_not_mail(ops_factory: Callable[..., Stack],
                                                  sink: Sink, tmp_path: Path) -> None:
    relay = Sink(tmp_path / "relay")  # chosen port, not started: the relay is down
    st = ops_factory(notifier_smtp=f"inet:127.0.0.1:{relay.port}")
    started = time.monotonic()
    lock_alice(st)
    # Mail flow is unaffected: policy answers come at once, other mail is delivered.
    t = st.mtas[0].send(BOB, ["y@yahoo.com"])
    assert t.accepted == ["y@yahoo.com"] and t.data is not None and t.data[0] == 250
    assert time.monotonic() - started < 20
    wait(lambda: any("y@yahoo.com" in e["rcpt_to"] for e, _ in sink.messages()),
         "bob's mail delivered")
    notifier = st.mtas[0].notifier
    assert notifier is not None
    wait(lambda: "notification not sent, will retry" in notifier.log_text(), "a failed try")
    health = notifier_health(st)
    assert "notify_backlog=1;" in health.stdout, health.stdout
    relay.start()
    try:
        got = wait(lambda: len(notifications(relay)) >= 2 and notifications(relay),
                   "notifications after the relay came back")
        assert sorted(r for e, _ in got for r in e["rcpt_to"]) == sorted([ALICE, ADMIN])
        wait(lambda: "notify_backlog=0;" in notifier_health(st).stdout, "an empty backlog")
        assert len(notifications(relay)) == 2
    finally:
        relay.stop()


# -- metrics and the report over one run with known decisions ---------------------------
@dataclass
class Run:
    root: Path
    config: Path
    policyd: Daemon
    milter: Daemon
    postfix: PostfixInstance
    policyd_metrics: int
    milter_metrics: int
    sent: dict[str, int]


@pytest.fixture(scope="module")
def known_run(clamd: ClamdInstance) -> Iterator[Run]:
    """Postfix with policyd and the milter, metrics on; a fixed set of decisions."""
    require("postfix", "redis-server", root=True)
    root = Path(tempfile.mkdtemp(prefix="mailwarden-ops-"))
    root.chmod(0o755)
    sink = Sink(root / "sink").start()
    redis = RedisInstance(root / "redis").start()
    # Inbound mail is authenticated in the worker processes: SPF asks this DNS server.
    dns = DnsServer(root / "dns", 'example.org. IN TXT "v=spf1 ip4:198.51.100.0/24 -all"\n'
                    ).start()
    pm, mm = procs.free_port(), procs.free_port()
    config = write_config(root / "mailwarden.toml", {
        "policyd.listen": f"unix:{root}/policyd.sock", "policyd.socket_mode": "0666",
        "policyd.metrics_listen": f"inet:127.0.0.1:{pm}", "policyd.lock_snapshot": "",
        "policyd.lock_refresh": 0.2,
        "milter.listen": f"unix:{root}/milter.sock", "milter.socket_mode": "0666",
        "milter.metrics_listen": f"inet:127.0.0.1:{mm}",
        "antivirus.clamd": clamd.address, "redis.url": redis.url, "logging.level": "info",
        "ratelimit.overrides": {ALICE: {"limit": 3}},
        "domains.trusted_networks": ["127.0.0.1/32"],
        "dns.nameservers": [dns.address], "dns.timeout": 0.5, "dns.attempts": 1})
    policyd = Daemon("policyd", config, f"unix:{root}/policyd.sock", root / "policyd.log")
    milter = Daemon("milter", config, f"unix:{root}/milter.sock", root / "milter.log")
    policyd.start()
    milter.start()
    pf = PostfixInstance(root / "postfix", relay_port=sink.port,
                         policy=f"unix:{root}/policyd.sock",
                         milter=f"unix:{root}/milter.sock").start()

    def go(login: str, rcpts: list[str], m: bytes | None) -> Transaction:
        return send(pf.smtpd_port, login, rcpts, m, login=login)

    try:
        # alice: 3 external recipients pass, the 4th is refused and locks her (policyd);
        # then two more sends are refused as locked.
        for i in range(3):
            assert go(ALICE, [f"a{i}@gmail.com"], msg(ALICE, f"a{i}@gmail.com")).accepted
        assert "Dieu 7.2.b" in go(ALICE, ["a3@gmail.com"], None).refused("a3@gmail.com")
        for rcpt in (BOB, "a4@gmail.com"):
            assert "Hop thu bi tam khoa" in go(ALICE, [rcpt], None).refused(rcpt)
        # bob: 2 clean messages, one executable, one EICAR (the milter at end of data).
        for i in range(2):
            t = go(BOB, [f"b{i}@gmail.com"], msg(BOB, f"b{i}@gmail.com"))
            assert t.data is not None and t.data[0] == 250, t.data
        for name, data in (("hoa-don.pdf", pe32()), ("eicar.txt", eicar_bytes())):
            t = go(BOB, ["c@gmail.com"], msg(BOB, "c@gmail.com", attach=(name, data)))
            assert t.data is not None and t.data[0] == 550, t.data
        # From outside to bob (SPF pass for example.org, looked up by a worker process).
        t = send(pf.smtpd_port, "news@example.org", [BOB], msg("news@example.org", BOB),
                 login="", client_addr="198.51.100.7")
        assert t.data is not None and t.data[0] == 250, t.data
        wait(lambda: queue_empty(pf), "empty queue")
        yield Run(root, config, policyd, milter, pf, pm, mm,
                  {"rcpt": 3 + 1 + 2 + 2 + 2 + 1, "eom": 3 + 2 + 2 + 1, "eom_accepted": 6})
    finally:
        pf.stop()
        milter.stop()
        policyd.stop()
        redis.stop()
        dns.stop()
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_metrics_scraped_match_the_decisions(known_run: Run) -> None:
    p = scrape(known_run.policyd_metrics)
    dec = "mailwarden_decisions_total"
    assert value(p, dec, daemon="policyd", rule="ratelimit.external_recipients",
                 action="reject", stage="RCPT") == 1
    assert value(p, dec, daemon="policyd", rule="account.locked", action="reject",
                 stage="RCPT") == 2
    assert value(p, dec, daemon="policyd") == 3
    assert value(p, "mailwarden_locks_current") == 1
    assert value(p, "mailwarden_lock_events_total", action="lock", kind="rate") == 1
    assert value(p, "mailwarden_policy_answer_seconds_count", stage="RCPT") == \
        known_run.sent["rcpt"]
    assert value(p, "mailwarden_policy_answer_seconds_count", stage="END-OF-MESSAGE") == \
        known_run.sent["eom"]
    assert value(p, "mailwarden_backend_errors_total") == 0
    assert value(p, "mailwarden_build_info", daemon="policyd",
                 profile="ninhbinh-162-2025") == 1

    m = scrape(known_run.milter_metrics)
    assert value(m, dec, daemon="milter", rule="attachment.executable", action="reject",
                 stage="EOM") == 1
    assert value(m, dec, daemon="milter", rule="av.infected", action="reject",
                 stage="EOM") == 1
    assert value(m, dec, daemon="milter", rule="none", action="accept", stage="EOM") == \
        known_run.sent["eom_accepted"]
    eoms = known_run.sent["eom_accepted"] + 2
    assert value(m, "mailwarden_requests_total", daemon="milter") == eoms
    assert value(m, "mailwarden_milter_eom_seconds_count") == eoms
    # Scans ran (where the engine runs them: the worker processes' files are summed).
    assert value(m, "mailwarden_clamd_scan_seconds_count", outcome="infected") >= 1
    assert value(m, "mailwarden_clamd_scan_seconds_count") >= eoms - 1
    # DNS lookups happen in the worker processes only: summed from their files.
    assert value(m, "mailwarden_dns_query_seconds_count", outcome="found") >= 1
    assert value(m, "mailwarden_milter_workers", state="configured") == 2
    assert value(m, "mailwarden_inflight_sessions", daemon="milter") == 0
    assert value(m, "mailwarden_build_info", daemon="milter") == 1


def test_report_counts_the_known_decisions(known_run: Run) -> None:
    out = cli(known_run.config, "report", "--log", str(known_run.policyd.log), "--log",
              str(known_run.milter.log), "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    rules = {r["rule"]: r for r in rep["by_rule"]}
    assert rules["ratelimit.external_recipients"]["reject"] == 1
    assert rules["ratelimit.external_recipients"]["article"] == "QD 162/2025/QD-UBND Dieu 7.2.b"
    assert rules["account.locked"]["reject"] == 2
    assert rules["attachment.executable"]["reject"] == 1
    assert rules["av.infected"]["reject"] == 1
    assert rep["top_senders"][0] == {"address": ALICE, "refusals": 3}
    assert {"address": BOB, "refusals": 2} in rep["top_senders"]
    assert {"address": "c@gmail.com", "refusals": 2} in rep["top_recipients"]
    assert rep["lock_count"] == 1 and rep["locks"][0]["account"] == ALICE
    assert rep["tempfails"] == {}
    text = cli(known_run.config, "report", "--log", str(known_run.policyd.log), "--log",
               str(known_run.milter.log))
    assert text.returncode == 0, text.stderr
    assert re.search(r"ratelimit\.external_recipients\s+QD 162/2025/QD-UBND Dieu 7\.2\.b\s+1",
                     text.stdout), text.stdout
    assert "lock    alice@ninhbinh.gov.vn  rate" in text.stdout


def test_report_html_renders_in_chromium(known_run: Run, tmp_path: Path) -> None:
    require("chromium")
    page = tmp_path / "report.html"
    out = cli(known_run.config, "report", "--log", str(known_run.policyd.log), "--log",
              str(known_run.milter.log), "--html", str(page))
    assert out.returncode == 0, out.stderr
    html_text = page.read_text()
    assert "<script" not in html_text and "http://" not in html_text.replace(
        "http://www.w3.org/2000/svg", "")  # self-contained
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
             "--window-size=1200,2000", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'class="rules"' in dom.stdout and 'class="senders"' in dom.stdout
    assert 'class="locks"' in dom.stdout and dom.stdout.count("<svg") >= 3
    assert "ratelimit.external_recipients" in dom.stdout
    assert "Uncaught" not in dom.stderr and "ERR_FILE_NOT_FOUND" not in dom.stderr
    run = subprocess.run(["chromium", *flags, f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    keep = Path(tempfile.gettempdir()) / "mailwarden-report-screenshot.png"
    shutil.copyfile(shot, keep)  # for a human to look at


def test_milter_counters_under_concurrent_sessions(known_run: Run) -> None:
    """Sessions in parallel (libmilter threads, two worker processes): every message
    counted once."""
    from concurrent.futures import ThreadPoolExecutor

    before = scrape(known_run.milter_metrics)

    def one(i: int) -> int:
        t = send(known_run.postfix.smtpd_port, BOB, [f"p{i}@gmail.com"],
                 msg(BOB, f"p{i}@gmail.com"), login=BOB)
        assert t.data is not None
        return t.data[0]

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(24)))
    assert codes == [250] * 24
    after = scrape(known_run.milter_metrics)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mailwarden_decisions_total", daemon="milter", rule="none",
                 action="accept") == 24
    assert delta("mailwarden_milter_eom_seconds_count") == 24
    assert delta("mailwarden_requests_total", daemon="milter") == 24
    assert delta("mailwarden_clamd_scan_seconds_count") == 24
    assert value(after, "mailwarden_inflight_sessions", daemon="milter") == 0
    p = scrape(known_run.policyd_metrics)
    assert value(p, "mailwarden_decisions_total", daemon="policyd") == 3  # unchanged


# -- health -----------------------------------------------------------------------------
def test_health_critical_without_clamd_ok_when_back(
        postfix_dir: Path, redis_server: RedisInstance, tmp_path: Path) -> None:
    require("clamd", "sigtool")
    av = ClamdInstance(postfix_dir / "clamd")  # our own: this test stops it
    av.start()
    daemons: list[Daemon] = []
    try:
        mp = procs.free_port()
        config = write_config(tmp_path / "mailwarden.toml", {
            "policyd.listen": f"unix:{postfix_dir}/policyd.sock",
            "policyd.lock_snapshot": "",
            "milter.listen": f"unix:{postfix_dir}/milter.sock",
            "antivirus.clamd": av.address, "redis.url": redis_server.url,
            "notifier.smtp": "inet:127.0.0.1:9", "notifier.consumer": "h1",
            "notifier.metrics_listen": f"inet:127.0.0.1:{mp}", "logging.level": "info"})
        for kind, listen in (("policyd", f"unix:{postfix_dir}/policyd.sock"),
                             ("milter", f"unix:{postfix_dir}/milter.sock"),
                             ("notifier", f"inet:127.0.0.1:{mp}")):
            daemons.append(Daemon(kind, config, listen, tmp_path / f"{kind}.log").start())
        ok = cli(config, "health")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("MAILWARDEN OK - all checks passed |")
        av.stop()
        down = cli(config, "health")
        assert down.returncode == 2, down.stdout + down.stderr
        assert down.stdout.startswith("MAILWARDEN CRITICAL - clamd ")
        assert "OK: redis, policyd, milter, notifier" in down.stdout
        av.start()
        back = cli(config, "health")
        assert back.returncode == 0, back.stdout + back.stderr
        daemons[1].stop()  # the milter gone: critical too
        assert cli(config, "health").returncode == 2
    finally:
        for d in reversed(daemons):
            d.stop()
        av.stop()


# -- shipped alert rules -------------------------------------------------------------------
def test_promtool_checks_the_shipped_rules() -> None:
    require("promtool")
    rules = sorted((ROOT / "conf" / "prometheus").glob("*-alerts.yml"))
    assert rules
    out = subprocess.run(["promtool", "check", "rules", *map(str, rules)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
    # The rules' own unit tests: a burst of locks, clamd failing, a daemon down fire.
    out = subprocess.run(["promtool", "test", "rules", "mailwarden-alerts.test.yml"],
                         capture_output=True, text=True, timeout=60,
                         cwd=ROOT / "conf" / "prometheus")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
