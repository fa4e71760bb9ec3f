"""DKIM and SPF end to end (issue #5): real Postfix -> milter -> sink, a real DNS server
on 127.0.0.1 serving the test zones; nothing asks the machine's resolver."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.dns import DnsServer
from harness.postfix import PostfixInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send
from mailwarden.auth.dkim_sign import keygen
from mailwarden.auth.dns import Resolver
from mailwarden.auth.results import Result
from mailwarden.auth.verify import verify_dkim

pytestmark = pytest.mark.integration

LOCAL = "ninhbinh.gov.vn"
ALICE = f"alice@{LOCAL}"
AUTHSERV = "mail.ninhbinh.gov.vn"
OUTSIDE = "203.0.113.66"


def msg(sender: str, to: str, *headers: str, body: str = "Noi dung cong van.\r\n") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"{head}From: {sender}\r\nTo: {to}\r\nSubject: Cong van 12/SKHCN\r\n"
            f"Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <cv12@{LOCAL}>\r\n\r\n"
            + body).encode()


@dataclass
class Stack:
    pf: PostfixInstance
    milter: Daemon
    sink: Sink
    dns: DnsServer

    def send(self, sender: str, rcpt: str, message: bytes, login: str | None) -> Transaction:
        # login "" = XCLIENT without a login: a client from outside at OUTSIDE.
        return send(self.pf.smtpd_port, sender, [rcpt], message, login=login,
                    client_addr=OUTSIDE if login == "" else "10.20.30.40")


@pytest.fixture
def stack(postfix_dir: Path, tmp_path: Path, clamd: ClamdInstance, sink: Sink,
          postfix_factory: Callable[..., PostfixInstance]) -> Iterator[Stack]:
    key, record = keygen(LOCAL, "mail2026", tmp_path / "dkim")
    zone = (f'{LOCAL}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
            f'_dmarc.{LOCAL}. IN TXT "v=DMARC1; p=reject"\n{record}\n')
    dns = DnsServer(tmp_path / "dns", zone).start()
    request_stop = [dns.stop]
    sock = f"unix:{postfix_dir}/milter.sock"
    try:
        config = write_config(postfix_dir / "mailwarden.toml", {
            "milter.listen": sock, "milter.socket_mode": "0666",
            "antivirus.clamd": clamd.address, "milter.release_on_refusal": False,
            "logging.level": "info", "logging.log_accepts": True,
            "domains.trusted_networks": ["127.0.0.1/32"],  # only the harness host itself
            "dns.nameservers": [dns.address], "dns.timeout": 0.3, "dns.attempts": 1,
            "auth.authserv_id": AUTHSERV,
            "dkim.keys": [{"domain": LOCAL, "selector": "mail2026", "key_file": str(key)}]})
        milter = Daemon("milter", config, sock, postfix_dir / "milter.log").start()
        request_stop.insert(0, milter.stop)
        pf = postfix_factory(milter=sock, main_cf_extra={
            # 8-bit to quoted-printable conversion after signing would break signatures
            "disable_mime_output_conversion": "yes"})
        yield Stack(pf, milter, sink, dns)
    finally:
        for stop in request_stop:
            stop()


def data_reply(t: Transaction) -> str:
    assert t.data is not None, t
    return f"{t.data[0]} {t.data[1]}"


def test_signed_by_the_milter_verified_at_the_sink(stack: Stack) -> None:
    t = stack.send(ALICE, "x@gmail.com", msg(ALICE, "x@gmail.com"), login=ALICE)
    assert data_reply(t).startswith("250"), (data_reply(t), stack.milter.log_text())
    [(_, data)] = stack.sink.wait_for(1)
    assert b"DKIM-Signature:" in data, stack.milter.log_text()
    resolver = Resolver([stack.dns.address], timeout_s=0.5, attempts=1)
    checks = verify_dkim(data, resolver)
    assert [c.result for c in checks] == [Result.PASS], checks
    tampered = data.replace(b"Noi dung cong van.", b"Noi dung da sua.")
    assert [c.result for c in verify_dkim(tampered, resolver)] == [Result.FAIL]


def test_spoofed_local_domain_from_outside_is_refused(stack: Stack) -> None:
    t = stack.send(f"giamdoc@{LOCAL}", ALICE, msg(f"giamdoc@{LOCAL}", ALICE), login="")
    reply = data_reply(t)
    assert reply.startswith("550 5.7.1"), reply
    assert "rule=auth.local_spoof" in stack.milter.log_text()
    assert stack.sink.messages() == []


def test_forged_authentication_results_removed_and_ours_added(stack: Stack) -> None:
    forged = f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom=gmail.com"
    t = stack.send("someone@gmail.com", ALICE, msg("someone@gmail.com", ALICE, forged),
                   login="")
    assert data_reply(t).startswith("250")  # gmail.com with no zone: never refused
    [(_, data)] = stack.sink.wait_for(1)
    fields = re.findall(rb"(?im)^Authentication-Results:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", data)
    assert len(fields) == 1, fields
    assert fields[0].startswith(b"Authentication-Results: " + AUTHSERV.encode())
    assert b"spf=none" in fields[0] and b"spf=pass" not in fields[0]
