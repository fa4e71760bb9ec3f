"""Several MTAs, one truth (issue 12): two private Postfix instances, each with its own
`mailwarden policyd`, share one Redis.

The window is one window across them, a lock made through one MTA is enforced by the
other at once (the lock channel: `policyd.lock_refresh` is set to an hour here, so only
pub/sub can carry it), an unlock reaches both at once, and the audit trail is one trail
with one entry per lock.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"
LIMIT = 5


def msg(to: str) -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\nSubject: Bao cao\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\n\r\nNoi dung.\r\n").encode()


def until(port: int, rcpt: str, want: Callable[[Transaction], bool],
          timeout_s: float = 5.0) -> tuple[Transaction, float]:
    """Probe RCPT (no DATA) on one MTA until `want`; (the last transaction, seconds)."""
    t0 = time.monotonic()
    while True:
        t = send(port, ALICE, [rcpt], None, login=ALICE)
        if want(t) or time.monotonic() - t0 > timeout_s:
            return t, time.monotonic() - t0
        time.sleep(0.01)


def test_two_mtas_share_one_window_and_one_lock(
        postfix_dir: Path, redis_server: RedisInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance]) -> None:
    daemons: list[Daemon] = []
    mtas: list[PostfixInstance] = []
    config = postfix_dir / "cli.toml"
    try:
        for name in ("mta1", "mta2"):
            sock = postfix_dir / f"{name}-policyd.sock"
            cfg = write_config(postfix_dir / f"{name}.toml", {
                "policyd.listen": f"unix:{sock}", "policyd.socket_mode": "0666",
                "policyd.lock_refresh": 3600.0, "policyd.stats_interval": 0.0,
                "ratelimit.limit": LIMIT, "redis.url": redis_server.url,
                "logging.level": "info"})
            daemons.append(Daemon("policyd", cfg, f"unix:{sock}",
                                  postfix_dir / f"{name}-policyd.log").start())
            mtas.append(postfix_factory(name=name, policy=f"unix:{sock}"))
            config = cfg
        ports = [m.smtpd_port for m in mtas]

        # A sender alternating between the two MTAs: LIMIT external recipients pass ...
        for i in range(LIMIT):
            rcpt = f"r{i}@gmail.com"
            t = send(ports[i % 2], ALICE, [rcpt], msg(rcpt), login=ALICE)
            assert t.accepted == [rcpt] and t.data is not None and t.data[0] == 250, (i, t)
        # ... and the limit+1-th overall is refused and locks, on whichever MTA it comes.
        rcpt = f"r{LIMIT}@gmail.com"
        t = send(ports[LIMIT % 2], ALICE, [rcpt], msg(rcpt), login=ALICE)
        assert t.accepted == [] and f"Vuot gioi han {LIMIT} nguoi nhan" in t.refused(rcpt)
        locker = daemons[LIMIT % 2]
        assert f"count={LIMIT + 1} limit={LIMIT}" in locker.log_text()

        # The lock holds on both at once. An internal recipient is decided from each
        # daemon's own lock list (no Redis call): the other daemon has it from pub/sub.
        for port in ports:
            t, took = until(port, BOB, lambda t: t.accepted == [], timeout_s=2.0)
            assert "Hop thu bi tam khoa" in t.refused(BOB), (port, t)
            print(f"lock seen on 127.0.0.1:{port} after {took * 1000:.0f} ms")
        other = daemons[(LIMIT + 1) % 2]
        assert f'lock list: lock "{ALICE}"' in other.log_text()

        # One trail: exactly one lock event in the audit, whatever MTA saw what.
        cli = [sys.executable, "-m", "mailwarden", "--config", str(config)]
        audit = subprocess.run([*cli, "audit", "--account", ALICE, "--json"],
                               capture_output=True, text=True, timeout=60)
        assert audit.returncode == 0, audit.stderr
        assert audit.stdout.count('"action": "lock"') == 1, audit.stdout

        # An unlock restores both at once.
        out = subprocess.run([*cli, "unlock", ALICE, "--reason", "verified", "--by", "ops1"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for port in ports:
            t, took = until(port, BOB, lambda t: t.accepted == [BOB], timeout_s=2.0)
            assert t.accepted == [BOB], (port, t)
            print(f"unlock seen on 127.0.0.1:{port} after {took * 1000:.0f} ms")
        t = send(ports[1], ALICE, ["again@gmail.com"], msg("again@gmail.com"), login=ALICE)
        assert t.accepted == ["again@gmail.com"]
    finally:
        for d in daemons:
            d.stop()
