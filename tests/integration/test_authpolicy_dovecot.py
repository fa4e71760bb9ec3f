"""Locked = no login, 12 failed logins lock, failing addresses slow down: a real Dovecot
(private instance, passwd-file users) asks a real `mailwarden authpolicy` (a child
process, like under systemd) backed by a real Redis; logins are made with imaplib.
Issue #11.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import Daemon, write_config
from harness.dovecot import DovecotInstance
from harness.postfix import PostfixInstance
from harness.procs import free_port
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import send
from tests.conftest import require

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"
GOOD = "MatKhau$789"
USERS = {ALICE: GOOD, BOB: "Bob#Pass2025", **{f"u{i}@ninhbinh.gov.vn": f"U{i}!pass99"
                                             for i in range(6)}}
API_KEY = "s3cret-test-key"


@dataclass
class Logins:
    redis: RedisInstance
    authpolicy: Daemon
    dovecot: DovecotInstance
    config: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(self.config),
                               *args], capture_output=True, text=True, timeout=60)

    def status(self, account: str) -> dict[str, Any]:
        out = self.cli("status", account, "--json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def login(self, user: str, password: str, source: str = "127.0.0.1") -> tuple[bool, str]:
        return self.dovecot.imap_login(user, password, source=source)

    def wait_log(self, text: str, timeout_s: float = 10.0) -> None:
        """Dovecot sends `report` after answering the client: wait for its log line."""
        deadline = time.monotonic() + timeout_s
        while text not in self.authpolicy.log_text():
            assert time.monotonic() < deadline, f"{text!r} not logged:\n" + \
                self.authpolicy.log_text()[-3000:]
            time.sleep(0.02)


@pytest.fixture
def logins_factory(tmp_path: Path, postfix_dir: Path, redis_server: RedisInstance,
                   ) -> Iterator[Callable[..., Logins]]:
    require("dovecot", root=True)
    started: list[Any] = []

    def make(reject_on_fail: bool = False, policy_timeout_ms: int = 2000,
             **over: Any) -> Logins:
        port = free_port()
        config = write_config(tmp_path / "mailwarden.toml", {
            "authpolicy.listen": f"inet:127.0.0.1:{port}", "authpolicy.api_key": API_KEY,
            "redis.url": redis_server.url, "logging.level": "info",
            # Per-address delays are exercised on their own below: here they would only
            # slow the tests down.
            "authpolicy.address_free_failures": 100, **over})
        daemon = Daemon("authpolicy", config, f"inet:127.0.0.1:{port}",
                        tmp_path / "authpolicy.log").start()
        started.append(daemon)
        dovecot = DovecotInstance(postfix_dir / "dovecot", users=USERS,
                                  policy_url=f"http://127.0.0.1:{port}/",
                                  api_header=f"X-API-Key: {API_KEY}",
                                  reject_on_fail=reject_on_fail,
                                  policy_timeout_ms=policy_timeout_ms).start()
        started.append(dovecot)
        return Logins(redis_server, daemon, dovecot, config)

    try:
        yield make
    finally:
        for child in reversed(started):
            child.stop()


def wrong(i: int) -> str:
    return f"wrong-{i}"


def test_eleven_failures_then_the_right_password_logs_in_and_resets(
        logins_factory: Callable[..., Logins]) -> None:
    st = logins_factory()
    for i in range(11):
        ok, why = st.login(ALICE, wrong(i))
        assert not ok and "AUTHENTICATIONFAILED" in why
    st.wait_log("count=11 status=counted")
    assert st.status(ALICE)["failed_logins"] == 11
    ok, why = st.login(ALICE, GOOD)
    assert ok, why
    st.wait_log("cleared=11")
    s = st.status(ALICE)
    assert s["failed_logins"] == 0 and s["locked"] is False
    # The run starts again from zero: 11 more failures still do not lock.
    for i in range(11):
        assert not st.login(ALICE, wrong(100 + i))[0]
    st.wait_log("count=11 status=counted")
    assert st.login(ALICE, GOOD)[0]
    assert "no locked accounts" in st.cli("locks").stdout


def test_twelve_failures_lock_until_an_operator_unlocks(
        logins_factory: Callable[..., Logins]) -> None:
    st = logins_factory()
    for i in range(12):
        assert not st.login(ALICE, wrong(i))[0]
    st.wait_log("rule=account.failed_logins count=12 limit=12 locked=yes")
    ok, why = st.login(ALICE, GOOD)  # the right password: refused, and told why
    assert not ok
    assert "[ALERT] Hop thu bi tam khoa" in why and "failed-logins" in why, why
    assert "QD 162/2025/QD-UBND Dieu 7.1" in why and "So Khoa hoc va Cong nghe" in why
    assert "rule=account.login_locked kind=failed-logins" in st.authpolicy.log_text()
    # Other accounts are untouched; the lock is listed with its kind, count and article.
    assert st.login(BOB, USERS[BOB])[0]
    locks = st.cli("locks", "--json")
    (lock,) = json.loads(locks.stdout)
    assert lock["account"] == ALICE and lock["kind"] == "failed-logins"
    assert lock["count"] == 12 and lock["by"] == "authpolicy"
    # A restarted daemon still refuses (the lock lives in Redis).
    st.authpolicy.stop()
    st.authpolicy.start()
    assert not st.login(ALICE, GOOD)[0]

    out = st.cli("unlock", ALICE, "--reason", "CV 45/SKHCN verified", "--by", "ops1")
    assert out.returncode == 0, out.stdout + out.stderr
    ok, why = st.login(ALICE, GOOD)
    assert ok, why
    audit = json.loads(st.cli("audit", "--account", ALICE, "--json").stdout)
    assert [e["action"] for e in audit[:2]] == ["unlock", "lock"]
    assert audit[1]["kind"] == "failed-logins" and audit[1]["count"] == "12"
    assert audit[1]["by"] == "authpolicy" and audit[0]["by"] == "ops1"
    text = st.cli("audit", "--account", ALICE).stdout
    assert "kind=failed-logins count=12" in text


def test_a_repeated_wrong_password_counts_once(logins_factory: Callable[..., Logins]) -> None:
    """A phone retrying an old password is one mistake, not twelve (Dovecot's nonced,
    truncated hash of the password tells them apart)."""
    st = logins_factory()
    for _ in range(15):
        assert not st.login(ALICE, "old-password")[0]
    st.wait_log("status=repeat")
    assert st.status(ALICE)["failed_logins"] == 1
    assert "no locked accounts" in st.cli("locks").stdout
    assert st.login(ALICE, GOOD)[0]


def test_a_rate_locked_account_cannot_log_in_and_still_receives(
        tmp_path: Path, postfix_dir: Path, redis_server: RedisInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance],
        logins_factory: Callable[..., Logins]) -> None:
    sock = postfix_dir / "policyd.sock"
    st = logins_factory(**{"policyd.listen": f"unix:{sock}", "policyd.socket_mode": "0666",
                           "policyd.lock_refresh": 0.1, "policyd.stats_interval": 0.0,
                           "ratelimit.limit": 5})
    policyd = Daemon("policyd", st.config, f"unix:{sock}", tmp_path / "policyd.log").start()
    try:
        pf = postfix_factory(policy=f"unix:{sock}")
        assert st.login(ALICE, GOOD)[0]
        rcpts = [f"r{i}@gmail.com" for i in range(6)]
        body = (f"From: {ALICE}\r\nTo: r0@gmail.com\r\nSubject: x\r\n\r\nx\r\n").encode()
        t = send(pf.smtpd_port, ALICE, rcpts, body, login=ALICE)
        assert len(t.accepted) == 5 and "Vuot gioi han 5" in t.refused("r5@gmail.com")
        ok, why = st.login(ALICE, GOOD)
        assert not ok and "[ALERT] Hop thu bi tam khoa" in why and "(rate:" in why, why
        # Mail to the locked mailbox is still delivered.
        inbound = b"From: x@gmail.com\r\nTo: alice@ninhbinh.gov.vn\r\nSubject: hi\r\n\r\nhi\r\n"
        t = send(pf.smtpd_port, "x@gmail.com", [ALICE], inbound, login="")
        assert t.accepted == [ALICE] and t.data is not None and t.data[0] == 250
        deadline = time.monotonic() + 30
        while not any(ALICE in env["rcpt_to"] for env, _ in sink.messages()):  # type: ignore[operator]
            assert time.monotonic() < deadline, "mail to the locked account not delivered"
            time.sleep(0.05)
        # The send was recorded as the account's last use (mailwarden inactive).
        rows = json.loads(st.cli("inactive", "--days", "0", "--json").stdout)
        (row,) = [r for r in rows if r["account"] == ALICE]
        assert row["last_send"] != "never" and row["last_login"] != "never"
        assert row["locked"] == "rate"
        # Unlocked, the owner logs in again.
        assert st.cli("unlock", ALICE, "--reason", "ok", "--by", "ops1").returncode == 0
        assert st.login(ALICE, GOOD)[0]
    finally:
        policyd.stop()


def test_with_the_daemon_stopped_dovecot_follows_reject_on_fail(
        logins_factory: Callable[..., Logins]) -> None:
    """Shipped: auth_policy_reject_on_fail = no. A dead policy server costs no logins, and
    the failures Dovecot could not report lock nothing afterwards."""
    st = logins_factory(policy_timeout_ms=500)
    st.authpolicy.stop()
    assert st.login(ALICE, GOOD)[0]
    for i in range(13):
        ok, why = st.login(ALICE, wrong(i))
        assert not ok and "AUTHENTICATIONFAILED" in why
    st.authpolicy.start()
    assert st.status(ALICE)["failed_logins"] == 0
    assert "no locked accounts" in st.cli("locks").stdout
    assert st.login(ALICE, GOOD)[0]
    assert "policy server" in st.dovecot.log_text() or "Policy" in st.dovecot.log_text()


def test_with_reject_on_fail_a_dead_daemon_refuses_every_login(
        logins_factory: Callable[..., Logins]) -> None:
    """The other documented choice: no login at all while the policy server is down."""
    st = logins_factory(reject_on_fail=True, policy_timeout_ms=500)
    assert st.login(ALICE, GOOD)[0]
    st.authpolicy.stop()
    ok, why = st.login(ALICE, GOOD)
    assert not ok and "AUTHENTICATIONFAILED" in why, why
    st.authpolicy.start()
    assert st.login(ALICE, GOOD)[0]
    assert "no locked accounts" in st.cli("locks").stdout


def test_a_wrong_api_key_is_refused(logins_factory: Callable[..., Logins]) -> None:
    import urllib.error
    import urllib.request

    st = logins_factory()
    url = f"http://127.0.0.1:{st.authpolicy.listen.port}/?command=allow"
    req = urllib.request.Request(url, data=b'{"login": "alice@ninhbinh.gov.vn"}',
                                 headers={"X-API-Key": "nope"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310 - http://127.0.0.1
    assert e.value.code == 401
    e.value.close()
    big = urllib.request.Request(url, data=b"{" + b" " * 100_000 + b"}",
                                 headers={"X-API-Key": API_KEY}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(big, timeout=5)  # noqa: S310 - http://127.0.0.1
    assert e.value.code == 413
    e.value.close()


def test_failures_over_many_accounts_from_one_address_slow_it_and_lock_nobody(
        logins_factory: Callable[..., Logins]) -> None:
    """One address guessing across accounts: delayed after 2 failures, refused once it
    failed against 4 accounts; no account is locked, nobody else is slowed down."""
    st = logins_factory(**{"authpolicy.address_free_failures": 2,
                           "authpolicy.address_max_delay": 2.0,
                           "authpolicy.address_max_accounts": 4})
    took = []
    for i in range(4):
        t0 = time.monotonic()
        assert not st.login(f"u{i}@ninhbinh.gov.vn", "guess", source="127.0.0.2")[0]
        took.append(time.monotonic() - t0)
        st.wait_log(f"address_accounts={i + 1}")
    assert took[0] < 1.0 and took[1] < 1.0  # the free failures
    assert took[2] >= 1.0 and took[3] >= 2.0, took  # then 1s, 2s (Dovecot tarpits)
    assert ": delay: LOGIN from imap[127.0.0.2]: rule=account.login_throttled" in \
        st.authpolicy.log_text()
    # Past the cap: refused before authentication, even with the right password, and
    # nothing it does counts towards any account.
    ok, why = st.login("u4@ninhbinh.gov.vn", USERS["u4@ninhbinh.gov.vn"], source="127.0.0.2")
    assert not ok and "Too many failed logins from your address" in why, why
    assert st.status("u4@ninhbinh.gov.vn")["failed_logins"] == 0
    for i in range(4):
        assert st.status(f"u{i}@ninhbinh.gov.vn")["failed_logins"] == 1
    assert "no locked accounts" in st.cli("locks").stdout
    # Another address is not slowed down, and the owners log in from it.
    t0 = time.monotonic()
    assert st.login("u0@ninhbinh.gov.vn", USERS["u0@ninhbinh.gov.vn"], source="127.0.0.3")[0]
    assert time.monotonic() - t0 < 1.0
