"""conf/postfix/main.cf.policyd as shipped, loaded into a private Postfix (only the socket
path changed): what it refuses, and that it fails safe when the policy daemon is down."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import send

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SOCKET = "unix:/run/mailwarden/policyd.sock"
ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"


def shipped_main_cf(socket: str) -> dict[str, str]:
    """name -> value of the shipped file (continuation lines joined)."""
    out: dict[str, str] = {}
    name = ""
    for line in (ROOT / "conf" / "postfix" / "main.cf.policyd").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and name:
            out[name] += " " + line.strip()
            continue
        name, _, value = line.partition("=")
        name = name.strip()
        out[name] = value.strip()
    return {k: v.replace(SHIPPED_SOCKET, socket) for k, v in out.items()}


def msg(to: str) -> bytes:
    return (f"From: {ALICE}\r\nTo: {to}\r\nSubject: Bao cao\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\n\r\nNoi dung.\r\n").encode()


def test_shipped_file_parses_and_uses_the_socket() -> None:
    cf = shipped_main_cf("unix:/x.sock")
    assert "check_policy_service { unix:/x.sock," in cf["smtpd_recipient_restrictions"]
    assert cf["smtpd_policy_service_default_action"].startswith("451 ")
    assert not re.search(r"default_action\s*=\s*DUNNO", " ".join(cf.values()))
    assert cf["swap_bangpath"] == "no" and cf["allow_percent_hack"] == "no"


def test_shipped_wiring_refuses_routing_forms_and_fails_safe(
        postfix_dir: Path, redis_server: RedisInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance]) -> None:
    sock = postfix_dir / "policyd.sock"
    config = write_config(postfix_dir / "mailwarden.toml", {
        "policyd.listen": f"unix:{sock}", "policyd.socket_mode": "0666",
        "policyd.stats_interval": 0.0, "redis.url": redis_server.url,
        "policyd.lock_snapshot": str(postfix_dir / "locks.json")})
    policyd = Daemon("policyd", config, f"unix:{sock}", postfix_dir / "policyd.log").start()
    try:
        pf = postfix_factory(main_cf_extra=shipped_main_cf(f"unix:{sock}"))
        port = pf.smtpd_port
        # A bang path with no domain is not fully qualified: refused before it is routed.
        t = send(port, ALICE, ["gmail.com!bob"], None, login=ALICE)
        assert t.rcpt["gmail.com!bob"][0] == 504, t
        # An unqualified envelope sender is refused too.
        t = send(port, "giamdoc", [BOB], None, login="")
        assert t.mail[0] == 504 or t.rcpt[BOB][0] == 504, t
        # Ordinary mail passes.
        assert send(port, ALICE, [BOB], msg(BOB), login=ALICE).data[0] == 250  # type: ignore[index]
        # Lock alice, then stop the policy daemon: Postfix answers 4xx, never 250.
        lock = subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(config),
                               "lock", ALICE, "--reason", "test"], capture_output=True,
                              text=True, timeout=60)
        assert lock.returncode == 0, lock.stderr
        policyd.stop()
        t = send(port, ALICE, ["x@gmail.com"], msg("x@gmail.com"), login=ALICE)
        assert t.rcpt["x@gmail.com"][0] == 451, t
        t = send(port, "carol@ninhbinh.gov.vn", [BOB], msg(BOB), login="carol@ninhbinh.gov.vn")
        assert t.rcpt[BOB][0] == 451, t
        # The daemon is back (systemd restarts it): the client's retry goes through, and
        # the lock still holds.
        policyd = Daemon("policyd", config, f"unix:{sock}", postfix_dir / "policyd.log").start()
        t = send(port, "carol@ninhbinh.gov.vn", [BOB], msg(BOB), login="carol@ninhbinh.gov.vn")
        assert t.data is not None and t.data[0] == 250, t
        t = send(port, ALICE, ["x@gmail.com"], None, login=ALICE)
        assert t.rcpt["x@gmail.com"][0] == 550 and "Hop thu bi tam khoa" in t.rcpt[
            "x@gmail.com"][1], t
    finally:
        policyd.stop()
