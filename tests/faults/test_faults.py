"""The fault suite (issue 13): real Postfix, Redis, clamd, milter and policy daemon on
loopback, with load running, one fault injected per row.

Each row builds a fresh stack, locks one account (alice) before anything else happens,
then runs SENDERS concurrent SMTP sessions in a loop for LOAD_S seconds. Their mail is a
mix of ordinary internal and external messages, messages carrying EICAR, and alice's
attempts. FAULT_AT_S into the load the fault is injected; it is healed (the process
restarted, thawed) HOLD_S later. After the load: a drain (the queue is flushed until it
is empty or DRAIN_S passed), then the counts and the assertions:

* nothing accepted is lost: every message answered 250 is in the sink or still queued;
* nothing unscanned is delivered: no EICAR message reaches the sink;
* the lock holds: alice got no 250 during the row, is refused after it, and is in
  `mailwarden locks` (after a Redis that lost its data, because it was restored).

Run with `make test-faults` (marker `faults`, not part of the default pytest run); the
table of the rows is printed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from harness.clamd import ClamdInstance, eicar_bytes
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.procs import wait_until
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import send
from tests.conftest import require
from tests.faults.conftest import ROWS

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DOMAIN = "ninhbinh.gov.vn"
ALICE = f"alice@{DOMAIN}"  # locked before every fault
SENDERS = 4
LOAD_S = 9.0
FAULT_AT_S = 2.0
HOLD_S = 3.0
DRAIN_S = 90.0
# Redis run as shipped in conf/redis/mailwarden.conf (the settings that matter here).
REDIS_ARGS = ("--appendfsync", "everysec", "--maxmemory-policy", "noeviction")


@dataclass
class Stack:
    root: Path
    redis: RedisInstance
    clamd: ClamdInstance
    sink: Sink
    policyd: Daemon
    milter: Daemon
    postfix: PostfixInstance
    config: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailwarden", "--config",
                               str(self.config), *args], capture_output=True, text=True,
                              timeout=60)

    def locked_accounts(self) -> list[str]:
        r = self.cli("locks", "--json")
        if r.returncode:
            return []
        return [lk["account"] for lk in json.loads(r.stdout)]


@pytest.fixture(scope="module")
def fault_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdInstance]:
    """A clamd of the suite's own: rows kill and freeze it."""
    require("clamd", "sigtool")
    with ClamdInstance(tmp_path_factory.mktemp("fclamd"), max_threads=4) as c:
        yield c


@pytest.fixture
def stack(postfix_dir: Path, fault_clamd: ClamdInstance,
          postfix_factory: Callable[..., PostfixInstance], sink: Sink) -> Iterator[Stack]:
    require("redis-server")
    if not fault_clamd.running:  # a previous row left it dead or frozen
        fault_clamd.stop()
        fault_clamd.start()
    redis = RedisInstance(postfix_dir / "redis", appendonly=True, extra_args=REDIS_ARGS)
    redis.start()
    psock, msock = postfix_dir / "policyd.sock", postfix_dir / "milter.sock"
    config = write_config(postfix_dir / "mailwarden.toml", {
        "policyd.listen": f"unix:{psock}", "policyd.socket_mode": "0666",
        "policyd.stats_interval": 0.0, "policyd.lock_refresh": 1.0,
        "milter.listen": f"unix:{msock}", "milter.socket_mode": "0666",
        "antivirus.clamd": fault_clamd.address, "antivirus.timeout": 3.0,
        "ratelimit.limit": 100000, "redis.url": redis.url, "logging.level": "info"})
    policyd = Daemon("policyd", config, f"unix:{psock}", postfix_dir / "policyd.log")
    milter = Daemon("milter", config, f"unix:{msock}", postfix_dir / "milter.log")
    started: list[Any] = [redis]
    try:
        started.append(policyd.start())
        started.append(milter.start())
        pf = postfix_factory(policy=f"unix:{psock}", milter=f"unix:{msock}")
        s = Stack(postfix_dir, redis, fault_clamd, sink, policyd, milter, pf, config)
        r = s.cli("lock", ALICE, "--reason", "fault suite", "--by", "ops")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: probe_locked(pf.smtpd_port), 30, "alice refused")
        yield s
    finally:
        for p in reversed(started):
            p.stop()


# -- load ------------------------------------------------------------------------------
def message(kind: str, token: str, sender: str, rcpt: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, f"fault suite {kind}"
    m["X-Fault-Token"] = token
    m["Date"] = "Mon, 30 Nov 2026 08:00:00 +0700"
    m.set_content("Bao cao tuan.\n")
    if kind == "eicar":
        m.add_attachment(eicar_bytes(), maintype="application", subtype="octet-stream",
                         filename="hoa-don.com")
    return m.as_bytes().replace(b"\n", b"\r\n")


KINDS = ("internal", "external", "eicar", "locked")


@dataclass
class Outcome:
    kind: str
    token: str
    code: int  # 250, 4xx, 5xx; 0 = no answer (connection lost)


@dataclass
class Load:
    port: int
    row: str
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def session(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            kind = KINDS[(i + n) % len(KINDS)]
            token = f"{self.row}-{n}-{i}"
            sender = ALICE if kind == "locked" else f"u{n}x{i % 50}@{DOMAIN}"
            rcpt = f"r{i}@gmail.com" if kind in ("external", "locked") else f"carol@{DOMAIN}"
            try:
                t = send(self.port, sender, [rcpt], message(kind, token, sender, rcpt),
                         login=sender, timeout=60)
                code = t.data[0] if t.data else next(
                    (c for c, _ in t.rcpt.values()), t.mail[0] if t.mail else 0)
                if t.disconnected and not t.data:
                    code = 0
            except (OSError, RuntimeError):
                code = 0
            with self.lock:
                self.outcomes.append(Outcome(kind, token, code))
            if code == 0:
                time.sleep(0.05)  # smtpd being restarted: do not spin

    def run(self, seconds: float, fault: Callable[[], None]) -> None:
        threads = [threading.Thread(target=self.session, args=(n,), daemon=True)
                   for n in range(SENDERS)]
        for t in threads:
            t.start()
        time.sleep(FAULT_AT_S)
        fault()
        time.sleep(max(0.0, seconds - FAULT_AT_S))
        self.stop.set()
        for t in threads:
            t.join(120)


# -- faults ----------------------------------------------------------------------------
def kill(child: Any) -> None:
    """SIGKILL a procs.Child we started, and reap it."""
    os.kill(child.pid, signal.SIGKILL)
    child.proc.wait(30)
    child.proc = None


def redis_with_data(s: Stack) -> None:
    kill(s.redis)
    time.sleep(HOLD_S)
    s.redis.start()


def redis_without_data(s: Stack) -> None:
    kill(s.redis)
    shutil.rmtree(s.redis.dir / "appendonlydir", ignore_errors=True)
    (s.redis.dir / "dump.rdb").unlink(missing_ok=True)
    time.sleep(HOLD_S)
    s.redis.start()


def clamd_killed(s: Stack) -> None:
    os.kill(s.clamd.pid, signal.SIGKILL)
    time.sleep(HOLD_S)
    s.clamd.stop()
    s.clamd.start()


def clamd_frozen(s: Stack) -> None:
    os.kill(s.clamd.pid, signal.SIGSTOP)
    try:
        time.sleep(HOLD_S + 2)  # past antivirus.timeout (3 s)
    finally:
        os.kill(s.clamd.pid, signal.SIGCONT)


def milter_restarted(s: Stack) -> None:
    kill(s.milter)
    time.sleep(HOLD_S)
    s.milter.start()


def policyd_restarted(s: Stack) -> None:
    kill(s.policyd)
    time.sleep(HOLD_S)
    s.policyd.start()


def postfix_reloaded(s: Stack) -> None:
    s.postfix.reload()


FAULTS: dict[str, Callable[[Stack], None]] = {
    "redis killed, restarted with its data": redis_with_data,
    "redis restarted without its data": redis_without_data,
    "clamd killed": clamd_killed,
    "clamd frozen (SIGSTOP/SIGCONT)": clamd_frozen,
    "milter killed and restarted": milter_restarted,
    "policyd killed and restarted": policyd_restarted,
    "postfix reload": postfix_reloaded,
}


def probe_locked(port: int) -> bool:
    """alice is refused (4xx or 5xx) at RCPT, never 250."""
    try:
        t = send(port, ALICE, ["probe@gmail.com"], None, login=ALICE, timeout=30)
    except (OSError, RuntimeError):
        return False
    codes = [c for c, _ in t.rcpt.values()]
    return bool(codes) and all(c >= 400 for c in codes)


def tokens_in_sink(sink: Sink) -> list[str]:
    out = []
    for _, data in sink.messages():
        m = re.search(rb"^X-Fault-Token: (\S+)", data, re.M)
        if m:
            out.append(m.group(1).decode())
    return out


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault(stack: Stack, name: str) -> None:
    t0 = time.monotonic()
    row = re.sub(r"[^a-z]+", "-", name)[:20]
    load = Load(stack.postfix.smtpd_port, row)
    load.run(LOAD_S, lambda: FAULTS[name](stack))

    # The lock holds after the fault (a Redis that lost its data gets it back).
    assert probe_locked(stack.postfix.smtpd_port), "alice not refused after the fault"
    wait_until(lambda: ALICE in stack.locked_accounts(), 30, "alice in `mailwarden locks`")

    accepted = {o.token for o in load.outcomes if 200 <= o.code < 300}
    # Drain: what Postfix accepted leaves its queue for the sink.
    deadline = time.monotonic() + DRAIN_S
    while True:
        delivered = set(tokens_in_sink(stack.sink))
        queued = len(stack.postfix.queue_ids())
        if accepted <= delivered or time.monotonic() > deadline:
            break
        stack.postfix.flush()
        time.sleep(0.5)
    outcomes = load.outcomes
    eicar = {o.token for o in outcomes if o.kind == "eicar"}
    result = {
        "fault": name, "sent": len(outcomes), "accepted": len(accepted),
        "refused": sum(500 <= o.code < 600 for o in outcomes),
        "deferred": sum(400 <= o.code < 500 or o.code == 0 for o in outcomes),
        "delivered": len(delivered), "queued": queued,
        "eicar_delivered": len(eicar & delivered),
        "locked_accepted": sum(o.kind == "locked" and 200 <= o.code < 300 for o in outcomes),
        "lock_after": "held",
        "seconds": round(time.monotonic() - t0),
    }
    ROWS.append(result)
    print(result)
    lost = accepted - delivered
    assert len(lost) <= queued, f"accepted but neither delivered nor queued: {sorted(lost)}"
    assert result["eicar_delivered"] == 0, "an EICAR message reached the sink"
    assert result["locked_accepted"] == 0, "the locked account got a 250"
    assert accepted, "no message accepted during the row: the load did not run"
    if name == "redis restarted without its data":
        audit = json.loads(stack.cli("audit", "--json").stdout)
        assert any(e["action"] == "restore" and e["account"] == ALICE for e in audit), audit

