"""Automatic forwarding refused end to end (issue #4): real Postfix with the shipped
final-hop layout, the mailwarden milter on both passes, a real clamd, the sink."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import procs
from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send
from tests.integration.test_final_hop import layout

pytestmark = pytest.mark.integration

ALICE = "alice@ninhbinh.gov.vn"


def msg(to: str, *headers: str, sender: str = "friend@yahoo.com") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"{head}From: {sender}\r\nTo: {to}\r\nSubject: Giay moi hop\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\n\r\nNoi dung.\r\n").encode()


@dataclass
class Stack:
    pf: PostfixInstance
    milter: Daemon
    sink: Sink

    def send(self, mail_from: str, rcpt: str, message: bytes, *,
             outside: bool = False) -> Transaction:
        """From 127.0.0.1 (a trusted host: ours), or through XCLIENT from an outside
        address that is in no trusted list (mail arriving from the Internet)."""
        if outside:
            return send(self.pf.smtpd_port, mail_from, [rcpt], message, login="",
                        client_addr="203.0.113.9", client_name="mx.gmail.example")
        return send(self.pf.smtpd_port, mail_from, [rcpt], message, login=None)


@pytest.fixture
def stack(postfix_dir: Path, clamd: ClamdInstance, sink: Sink,
          postfix_factory: Callable[..., PostfixInstance]) -> Iterator[Stack]:
    sock = f"unix:{postfix_dir}/milter.sock"
    config = write_config(postfix_dir / "mailwarden.toml", {
        "milter.listen": sock, "milter.socket_mode": "0666", "antivirus.clamd": clamd.address,
        "milter.release_on_refusal": False, "logging.level": "info"})
    milter = Daemon("milter", config, sock, postfix_dir / "milter.log").start()
    hop_port = procs.free_port()
    main, master = layout(hop_port, milter=sock)
    (postfix_dir / "virtual").write_text("user@ninhbinh.gov.vn   someone@gmail.com\n"
                                         "bob@ninhbinh.gov.vn    carol@ninhbinh.gov.vn\n")
    main["virtual_alias_maps"] = f"texthash:{postfix_dir}/virtual"
    try:
        pf = postfix_factory(milter=sock, main_cf_extra=main, master_cf_extra=master)
        procs.wait_until(procs.tcp_ready("127.0.0.1", hop_port), 20, "final hop",
                         log=pf.maillog)
        yield Stack(pf, milter, sink)
    finally:
        milter.stop()


def data_reply(t: Transaction) -> str:
    assert t.data is not None, t
    return f"{t.data[0]} {t.data[1]}"


def test_sieve_redirect_to_private_domain_refused(stack: Stack) -> None:
    t = stack.send("friend@yahoo.com", "me@gmail.com",
                   msg("alice@ninhbinh.gov.vn", f"X-Sieve-Redirected-From: {ALICE}"))
    reply = data_reply(t)
    assert reply.startswith("550 5.7.1") and ALICE in reply and "Dieu 4.5" in reply
    assert "rule=forward.external_auto" in stack.milter.log_text()


def test_sieve_redirect_to_another_state_mailbox_delivered(stack: Stack) -> None:
    t = stack.send("friend@yahoo.com", "lan@hanoi.gov.vn",
                   msg("alice@ninhbinh.gov.vn", f"X-Sieve-Redirected-From: {ALICE}"))
    assert data_reply(t).startswith("250")
    [(env, _)] = stack.sink.wait_for(1)
    assert env["rcpt_to"] == ["lan@hanoi.gov.vn"]


def test_virtual_alias_forward_refused_at_the_final_hop_with_a_bounce(stack: Stack) -> None:
    t = stack.send(ALICE, "user@ninhbinh.gov.vn", msg("user@ninhbinh.gov.vn", sender=ALICE))
    assert data_reply(t).startswith("250")  # first pass: a local recipient, fine
    stack.pf.wait_for_log(r"milter-reject: END-OF-MESSAGE from .*5\.7\.1 .*Dieu 4\.5")
    msgs = stack.sink.wait_for(1)
    bounces = [(env, data) for env, data in msgs if env["mail_from"] == ""]
    assert len(bounces) == 1, [env for env, _ in msgs]
    env, data = bounces[0]
    assert env["rcpt_to"] == [ALICE]
    assert b"someone@gmail.com" in data and b"Dieu 4.5" in data
    assert all(env["rcpt_to"] != ["someone@gmail.com"] for env, _ in msgs)


def test_virtual_alias_to_local_mailbox_delivered(stack: Stack) -> None:
    t = stack.send(ALICE, "bob@ninhbinh.gov.vn", msg("bob@ninhbinh.gov.vn", sender=ALICE))
    assert data_reply(t).startswith("250")
    [(env, _)] = stack.sink.wait_for(1)
    assert env["rcpt_to"] == ["carol@ninhbinh.gov.vn"]


def test_inbound_gmail_autoforward_refused(stack: Stack) -> None:
    caf = "someone+caf_=alice=ninhbinh.gov.vn@gmail.com"
    t = stack.send(caf, ALICE, msg(ALICE, "X-Forwarded-To: alice@ninhbinh.gov.vn",
                                   "X-Forwarded-For: someone@gmail.com alice@ninhbinh.gov.vn",
                                   sender="news@example.org"), outside=True)
    reply = data_reply(t)
    assert reply.startswith("550 5.7.1") and "Dieu 4.5" in reply
    assert "rule=forward.inbound_auto" in stack.milter.log_text()


def test_ordinary_gmail_message_delivered(stack: Stack) -> None:
    t = stack.send("someone@gmail.com", ALICE, msg(ALICE, sender="someone@gmail.com"),
                   outside=True)
    assert data_reply(t).startswith("250")
    [(env, _)] = stack.sink.wait_for(1)
    assert env["rcpt_to"] == [ALICE]


def test_forwarding_audit_cli_on_a_postfix_config(stack: Stack, postfix_dir: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mailwarden", "--config",
                          str(postfix_dir / "mailwarden.toml"), "forwarding", "audit", "--json",
                          "--postfix-config", str(stack.pf.config_dir), "--forward-files",
                          str(postfix_dir / "none"), "--sieve", str(postfix_dir / "none")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    found = json.loads(out.stdout)
    text = json.dumps(found)
    assert "user@ninhbinh.gov.vn" in text and "someone@gmail.com" in text
    assert "carol@ninhbinh.gov.vn" not in text


@pytest.mark.parametrize("header", ["Auto-Submitted: auto-forwarded",
                                    "X-MS-Exchange-Organization-AutoForwarded: true"])
def test_trusted_relay_host_auto_forward_refused_with_shipped_defaults(
        stack: Stack, header: str) -> None:
    """Issue 9: a mailbox server relaying without SASL (a host in the default
    domains.trusted_networks, not in forwarding.mailbox_hosts) is ours: its declared
    auto-forward to gmail.com is refused; the same to another state agency passes."""
    t = stack.send(ALICE, "x@gmail.com", msg("x@gmail.com", header, sender=ALICE))
    reply = data_reply(t)
    assert reply.startswith("550 5.7.1") and "Dieu 4.5" in reply
    t = stack.send(ALICE, "lan@hanoi.gov.vn", msg("lan@hanoi.gov.vn", header, sender=ALICE))
    assert data_reply(t).startswith("250")
    delivered = stack.sink.wait_for(1)
    assert [env["rcpt_to"] for env, _ in delivered] == [["lan@hanoi.gov.vn"]]
