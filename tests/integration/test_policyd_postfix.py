"""The rate lock end to end: real Postfix -> real policyd -> real Redis -> sink.

Postfix asks the policy daemon (a child process, like under systemd) at RCPT
and END-OF-MESSAGE; authenticated users are simulated with XCLIENT.
Issue #2, section 3.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn", "carol@ninhbinh.gov.vn"


def msg(to: str = "x@gmail.com", subject: str = "Bao cao") -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\n\r\nNoi dung.\r\n").encode()


@dataclass
class Stack:
    redis: RedisInstance
    policyd: Daemon
    postfix: PostfixInstance
    sink: Sink
    config: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(self.config),
                               *args], capture_output=True, text=True, timeout=60)

    def send(self, login: str | None, rcpts: list[str], message: bytes | None = b"",
             sender: str | None = None) -> Transaction:
        body = msg(rcpts[0]) if message == b"" else message
        return send(self.postfix.smtpd_port, sender or login or "x@gmail.com", rcpts, body,
                    login=login)

    def until_accepted(self, login: str, rcpt: str, timeout_s: float = 10) -> Transaction:
        """Probe RCPT (no DATA) until accepted: a lock change reaches policyd's copy."""
        deadline = time.monotonic() + timeout_s
        while True:
            t = self.send(login, [rcpt], None)
            if t.rcpt[rcpt][0] == 250 or time.monotonic() > deadline:
                return t
            time.sleep(0.05)


@pytest.fixture
def stack_factory(postfix_dir: Path, redis_server: RedisInstance, sink: Sink,
                  postfix_factory: Callable[..., PostfixInstance],
                  ) -> Iterator[Callable[..., Stack]]:
    daemons: list[Daemon] = []

    def make(**over: Any) -> Stack:
        sock = postfix_dir / "policyd.sock"
        config = write_config(postfix_dir / "mailwarden.toml", {
            "policyd.listen": f"unix:{sock}", "policyd.socket_mode": "0666",
            "policyd.lock_refresh": 0.1, "policyd.stats_interval": 0.0,
            "redis.url": redis_server.url, "logging.level": "info", **over})
        policyd = Daemon("policyd", config, f"unix:{sock}", postfix_dir / "policyd.log").start()
        daemons.append(policyd)
        pf = postfix_factory(policy=f"unix:{sock}")
        return Stack(redis_server, policyd, pf, sink, config)

    try:
        yield make
    finally:
        for d in daemons:
            d.stop()


def test_rate_lock_end_to_end(stack_factory: Callable[..., Stack]) -> None:
    st = stack_factory()
    # Internal recipients never count: 300 colleagues in one message.
    internal = [f"u{i}@ninhbinh.gov.vn" for i in range(300)]
    t = st.send(ALICE, internal, msg(BOB))
    assert len(t.accepted) == 300 and t.data is not None and t.data[0] == 250

    # 251 external recipients in one message: 250 pass, the 251st is refused and locks.
    external = [f"r{i}@gmail.com" for i in range(251)]
    t = st.send(ALICE, external, msg())
    assert len(t.accepted) == 250 and t.data is not None and t.data[0] == 250
    refusal = t.refused("r250@gmail.com")
    # Postfix puts "<rcpt>: Recipient address rejected: " before the policy's text.
    assert refusal.startswith("550 5.7.1 <r250@gmail.com>: Recipient address rejected: "
                              "Vuot gioi han 250 nguoi nhan/10m")
    assert "QD 162/2025/QD-UBND Dieu 7.2.b" in refusal

    # Postfix splits the recipients into deliveries of 50, in any order: wait for all of
    # them (a count of deliveries alone can be met by the internal message's first).
    deadline = time.monotonic() + 60
    while True:
        delivered = [r for env, _ in st.sink.messages()
                     for r in env["rcpt_to"]]  # type: ignore[union-attr]
        outside = sorted(r for r in delivered if r.endswith("@gmail.com"))
        if len(outside) >= 250 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert outside == sorted(external[:250])
    # Postfix's own reject line (with the queue id: earlier recipients opened the queue file)
    st.postfix.wait_for_log(r"[0-9A-F]+: reject: RCPT from .*: 550 5\.7\.1 <r250@gmail\.com>")
    assert "rule=ratelimit.external_recipients count=251 limit=250" in st.policyd.log_text()

    # Locked: even an internal send is refused, with why, since when and whom to contact.
    t = st.send(ALICE, [BOB], msg(BOB))
    locked = t.refused(BOB)
    assert locked.startswith("550 5.7.1 ") and "Hop thu bi tam khoa tu " in locked
    assert "So Khoa hoc va Cong nghe" in locked and "Dieu 7.1" in locked
    # Mail to the locked user is still delivered; another user is unaffected.
    assert st.send(None, [ALICE], msg(ALICE), sender="someone@gmail.com").accepted == [ALICE]
    assert st.send(CAROL, ["y@yahoo.com"], msg("y@yahoo.com")).accepted == ["y@yahoo.com"]

    locks = st.cli("locks")
    assert ALICE in locks.stdout and "rate" in locks.stdout, locks.stderr
    status = st.cli("status", ALICE, "--json")
    assert '"locked": true' in status.stdout and '"count": 250' in status.stdout

    # A restarted policyd still enforces the lock (it lives in Redis).
    st.policyd.stop()
    st.policyd.start()
    assert "Hop thu bi tam khoa" in st.send(ALICE, ["z@gmail.com"], None).refused("z@gmail.com")

    # The operator unlocks; sending works again, and the audit shows both events.
    out = st.cli("unlock", ALICE, "--reason", "CV 12/SKHCN verified", "--by", "ops1")
    assert out.returncode == 0, out.stderr
    assert st.until_accepted(ALICE, "z@gmail.com").accepted == ["z@gmail.com"]
    audit = st.cli("audit", "--account", ALICE).stdout
    assert "unlock" in audit and "ops1" in audit and "CV 12/SKHCN verified" in audit


def test_manual_lock_is_enforced_like_a_rate_lock(stack_factory: Callable[..., Stack]) -> None:
    st = stack_factory()
    out = st.cli("lock", BOB, "--reason", "leaked password (ticket 77)", "--by", "ops1")
    assert out.returncode == 0, out.stderr
    t = st.send(BOB, ["x@gmail.com"], None)
    assert "leaked password (ticket 77)" in t.refused("x@gmail.com")
    assert "Dieu 7.2" in t.refused("x@gmail.com")


@pytest.mark.parametrize("policy,code", [("accept", 250), ("defer", 451)])
def test_redis_down_fail_open_or_closed(stack_factory: Callable[..., Stack], policy: str,
                                        code: int) -> None:
    st = stack_factory(**{"policyd.on_redis_error": policy})
    st.redis.stop()
    try:
        t = st.send(ALICE, ["x@gmail.com"])
        assert t.rcpt["x@gmail.com"][0] == code
        if code == 250:
            assert t.data is not None and t.data[0] == 250
            assert len(st.sink.wait_for(1)) == 1
        else:
            assert t.refused("x@gmail.com").startswith("451 4.7.1 ")
        # Mail from outside to our users never depends on Redis.
        inbound = st.send(None, [ALICE], msg(ALICE), sender="someone@gmail.com")
        assert inbound.accepted == [ALICE]
        assert "ratelimit.backend_error" in st.policyd.log_text()
    finally:
        st.redis.start()
    # Redis is back: the daemon reconnects by itself and counts again (a RCPT probe reserves).
    assert st.send(ALICE, ["y@gmail.com"], None).accepted == ["y@gmail.com"]
    assert '"reserved": 1' in st.cli("status", ALICE, "--json").stdout


def test_message_refused_after_rcpt_is_not_counted(stack_factory: Callable[..., Stack]) -> None:
    """Recipients reserved at RCPT of a transaction that never completes are not charged."""
    st = stack_factory(**{"ratelimit.limit": 3})
    for i in range(3):
        st.send(ALICE, [f"a{i}@gmail.com"], None)  # RCPT then RSET: no END-OF-MESSAGE
    status = st.cli("status", ALICE, "--json").stdout
    assert '"count": 0' in status and '"reserved": 3' in status


@pytest.mark.parametrize("form", ["bang", "percent", "bang-at-local"])
def test_bang_path_and_percent_hack_recipients_are_counted(
        stack_factory: Callable[..., Stack], form: str) -> None:
    """Issue 9: Postfix delivers gmail.com!user (swap_bangpath = yes, its default) and
    user%gmail.com@ours outside, so they count: the account locks at the limit."""
    st = stack_factory(**{"ratelimit.limit": 3})
    shape = {"bang": "gmail.com!r{}", "percent": "r{}%gmail.com@ninhbinh.gov.vn",
             "bang-at-local": "gmail.com!r{}@ninhbinh.gov.vn"}[form]
    for i in range(3):
        rcpt = shape.format(i)
        t = st.send(ALICE, [rcpt], msg(rcpt))
        assert t.accepted == [rcpt] and t.data is not None and t.data[0] == 250, t
    rcpt = shape.format(3)
    t = st.send(ALICE, [rcpt], msg(rcpt))
    assert t.accepted == [] and "Vuot gioi han 3 nguoi nhan" in t.refused(rcpt)
    status = st.cli("status", ALICE, "--json").stdout
    assert '"count": 3' in status and '"locked": true' in status
    if form == "bang":  # what Postfix made of it: the outside address
        delivered = [r for env, _ in st.sink.wait_for(3) for r in env["rcpt_to"]]
        assert sorted(delivered) == ["r0@gmail.com", "r1@gmail.com", "r2@gmail.com"]
