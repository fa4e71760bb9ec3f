"""Spoofing under attack (issue 14), end to end: real Postfix -> milter -> sink, a DNS
server on 127.0.0.1 serving the test zones. Attackers connect from 127.0.0.2 (Postfix's
remote header-rewrite context, as an outside client) and XCLIENT ADDR=an outside
address without a login; nothing asks the machine's resolver.

One test per class of attack (refused, or marked and logged where the issue says "by
config"), and the legitimate neighbours still delivered."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest

from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.dns import DnsServer
from harness.postfix import PostfixInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send
from mailwarden.auth.dkim_sign import keygen, load_keys

pytestmark = pytest.mark.integration

LOCAL = "ninhbinh.gov.vn"
ALICE = f"alice@{LOCAL}"
AUTHSERV = "mail.ninhbinh.gov.vn"
OUTSIDE = "203.0.113.66"
OUR_MX = "192.0.2.10"  # inside our SPF record, yet not a trusted network of the milter


def msg(sender: str, to: str = ALICE, *headers: str, body: str = "Noi dung cong van.\r\n",
        subject: str = "Cong van 12/SKHCN", extra_after: tuple[str, ...] = ()) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    tail = "".join(f"{h}\r\n" for h in extra_after)
    return (f"{head}From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <cv12@example.org>\r\n"
            f"{tail}\r\n" + body).encode()


@dataclass
class Stack:
    pf: PostfixInstance
    milter: Daemon
    sink: Sink
    dns: DnsServer
    keydir: Path

    def attack(self, sender: str, message: bytes, rcpt: str = ALICE,
               client: str = OUTSIDE) -> Transaction:
        return send(self.pf.smtpd_port, sender, [rcpt], message, login="", client_addr=client,
                    source_addr="127.0.0.2", helo="mx.evil.example")

    def ours(self, sender: str, message: bytes, rcpt: str) -> Transaction:
        return send(self.pf.smtpd_port, sender, [rcpt], message, login=sender,
                    client_addr="10.20.30.40")

    def log(self) -> str:
        return self.milter.log_text()


def reply(t: Transaction) -> str:
    assert t.data is not None, t
    return f"{t.data[0]} {t.data[1]}"


def refused_by(stack: Stack, t: Transaction, rule: str) -> None:
    text = reply(t)
    assert text.startswith("550 5.7.1"), (text, stack.log()[-3000:])
    assert f"rule={rule}" in stack.log(), stack.log()[-3000:]


def delivered(stack: Stack, t: Transaction, count: int) -> bytes:
    assert reply(t).startswith("250"), (reply(t), stack.log()[-3000:])
    return stack.sink.wait_for(count)[-1][1]


ZONE = """\
{local}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
skhcn.{local}. IN TXT "v=spf1 +all"
_dmarc.{local}. IN TXT "v=DMARC1; p=reject"
evil.example. IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
lists.example.org. IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
partner.example. IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
{records}
;@drop slow._domainkey.{local}.
"""


def make_stack(postfix_dir: Path, tmp_path: Path, clamd: ClamdInstance, sink: Sink,
               postfix_factory: Callable[..., PostfixInstance],
               **config: Any) -> tuple[Stack, list[Callable[[], Any]]]:
    keydir = tmp_path / "dkim"
    key, record = keygen(LOCAL, "mail2026", keydir)
    _, evil_record = keygen("evil.example", "k1", keydir)
    _, slow_record = keygen(LOCAL, "slow", keydir)  # published under a name that never answers
    zone = ZONE.format(local=LOCAL, records=f"{record}\n{evil_record}\n")
    del slow_record
    dns = DnsServer(tmp_path / "dns", zone).start()
    stops: list[Callable[[], Any]] = [dns.stop]
    sock = f"unix:{postfix_dir}/milter.sock"
    cfg = {"milter.listen": sock, "milter.socket_mode": "0666",
           "antivirus.clamd": clamd.address, "milter.release_on_refusal": False,
           "logging.level": "info", "logging.log_accepts": True,
           "domains.trusted_networks": ["127.0.0.1/32"],
           "dns.nameservers": [dns.address], "dns.timeout": 0.3, "dns.attempts": 1,
           "auth.authserv_id": AUTHSERV,
           "dkim.keys": [{"domain": LOCAL, "selector": "mail2026", "key_file": str(key)}],
           **config}
    try:
        milter = Daemon("milter", write_config(postfix_dir / "mailwarden.toml", cfg), sock,
                        postfix_dir / "milter.log").start()
        stops.insert(0, milter.stop)
        pf = postfix_factory(milter=sock, main_cf_extra={
            "disable_mime_output_conversion": "yes"})
    except BaseException:
        for stop in stops:
            stop()
        raise
    return Stack(pf, milter, sink, dns, keydir), stops


@pytest.fixture
def stack_factory(postfix_dir: Path, tmp_path: Path, clamd: ClamdInstance, sink: Sink,
                  postfix_factory: Callable[..., PostfixInstance]) -> Iterator[
                      Callable[..., Stack]]:
    stops: list[Callable[[], Any]] = []

    def make(**config: Any) -> Stack:
        s, more = make_stack(postfix_dir, tmp_path, clamd, sink, postfix_factory, **config)
        stops.extend(more)
        return s

    yield make
    for stop in stops:
        stop()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


def authres_fields(data: bytes) -> list[bytes]:
    return re.findall(rb"(?im)^Authentication-Results:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", data)


# -- 1. over auth.max_message_bytes ------------------------------------------------------
def test_class1_oversize_message_is_still_checked(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(**{"auth.max_message_bytes": 64 * 1024})
    forged = f"Authentication-Results: {AUTHSERV}; dkim=pass header.d={LOCAL}; dmarc=pass"
    big = "x" * 76 + "\r\n"
    body = big * 2000  # ~156 KB, over the cap
    t = stack.attack(f"giamdoc@{LOCAL}", msg(f"giamdoc@{LOCAL}", ALICE, forged, body=body))
    refused_by(stack, t, "auth.local_spoof")
    # the same size from one of our listed servers: accepted, forged result removed, ours on
    t = stack.attack(f"giamdoc@{LOCAL}", msg(f"giamdoc@{LOCAL}", ALICE, forged, body=body),
                     client=OUR_MX)
    data = delivered(stack, t, 1)
    (field,) = authres_fields(data)
    assert field.startswith(f"Authentication-Results: {AUTHSERV}".encode())
    assert b"spf=pass" in field and b"dkim=none (message of" in field


# -- 2. several forged Authentication-Results -----------------------------------------------
def test_class2_every_forged_authentication_results_is_removed(stack: Stack) -> None:
    forged = [f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom=gmail.com",
              f"Authentication-Results: {AUTHSERV.upper()}; dkim=pass header.d=gmail.com",
              "Authentication-Results: mx.partner.example; spf=pass",
              f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from=gmail.com"]
    t = stack.attack("someone@gmail.com", msg("someone@gmail.com", ALICE, *forged))
    data = delivered(stack, t, 1)
    fields = authres_fields(data)
    ours = [f for f in fields if AUTHSERV.encode() in f.split(b";")[0].lower()]
    assert len(ours) == 1 and b"spf=none" in ours[0], fields
    assert any(b"mx.partner.example" in f for f in fields)  # others' results are kept
    assert b"dmarc=pass" not in data and b"dkim=pass" not in data


# -- 3. DKIM replay ------------------------------------------------------------------------
def test_class3_replayed_signature_with_added_fields_is_refused(stack: Stack) -> None:
    t = stack.ours(ALICE, msg(ALICE, "partner@gmail.com"), "partner@gmail.com")
    signed = delivered(stack, t, 1)
    assert b"DKIM-Signature:" in signed
    h = re.search(rb"h=([^;]*);", signed.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" "))
    assert h is not None and h.group(1).replace(b" ", b"").count(b"subject") == 2
    # the signed message as is, forwarded back from outside: still ours by its signature
    t = stack.attack("fwd@evil.example", signed)
    delivered(stack, t, 2)
    replay = (b"Subject: Khan: chuyen khoan ngay\r\nTo: ketoan@ninhbinh.gov.vn\r\n"
              b"Reply-To: ketoan@evil.example\r\n" + signed)
    t = stack.attack("fwd@evil.example", replay)
    refused_by(stack, t, "auth.duplicate_header")
    assert "dkim=fail" in stack.log()  # over-signing broke the signature too


# -- 4. look-alike domains -------------------------------------------------------------------
LOOKALIKES = ["ninhbinh\u200b.gov.vn", "ninh\u00adbinh.gov.vn", "n\u0456nhbinh.gov.vn",
              "xn--nnhbinh-rog.gov.vn", "ninhbinh\uff0egov\uff0evn", "\u202eninhbinh.gov.vn"]


def test_class4_lookalike_sender_domains_are_refused(stack: Stack) -> None:
    for domain in LOOKALIKES:
        t = stack.attack("x@evil.example", msg(f"Giam doc <giamdoc@{domain}>"))
        text = reply(t)
        assert text.startswith("550 5.7.1"), (domain, text, stack.log()[-2000:])
        assert text.isascii(), text
    assert stack.log().count("rule=auth.lookalike") == len(LOOKALIKES)
    assert stack.sink.messages() == []


def test_class4_lookalike_marked_by_config(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(**{"auth.lookalike": "mark"})
    t = stack.attack("x@evil.example", msg("Giam doc <giamdoc@n\u0456nhbinh.gov.vn>"))
    data = delivered(stack, t, 1)
    assert b"X-Mailwarden-Warning: lookalike-domain;" in data
    assert b"resembles=ninhbinh.gov.vn" in data
    (field,) = authres_fields(data)
    assert f"header.from={LOCAL}".encode() not in field  # never our domain for a look-alike
    assert "rule=auth.lookalike" in stack.log()


# -- 5. display names --------------------------------------------------------------------------
def test_class5_display_name_showing_our_address_is_refused(stack: Stack) -> None:
    for from_value in ['"giamdoc@ninhbinh.gov.vn" <x@evil.example>',
                       "=?utf-8?q?giamdoc=40ninhbinh=2Egov=2Evn?= <x@evil.example>",
                       "=?utf-8?b?R2nDoW0gxJHhu5FjIChuaW5oYmluaC5nb3Yudm4p?= <x@evil.example>",
                       '"giamdoc@ninhbinh.gov.vn" <>']:
        t = stack.attack("x@evil.example", msg(from_value))
        assert reply(t).startswith("550 5.7.1"), (from_value, stack.log()[-2000:])
    assert stack.log().count("rule=auth.display_name") == 4
    assert stack.sink.messages() == []


# -- 6. address syntax the lenient parser loses -------------------------------------------------
def test_class6_from_that_is_not_one_address_is_refused(stack: Stack) -> None:
    for from_value in ['<"giamdoc@ninhbinh.gov.vn">', '<giamdoc@"ninhbinh.gov.vn">',
                       "giamdoc@evil.example@ninhbinh.gov.vn",
                       "Giam doc <giamdoc@=?utf-8?q?ninhbinh?=.gov.vn>",
                       "x@evil.example, giamdoc@ninhbinh.gov.vn"]:
        t = stack.attack("x@evil.example", msg(from_value))
        assert reply(t).startswith("550 5.7.1"), (from_value, stack.log()[-2000:])
    assert stack.log().count("rule=auth.unparsable_from") >= 5
    assert stack.sink.messages() == []


# -- 7. Sender: and Resent-From: ------------------------------------------------------------------
def test_class7_sender_and_resent_from_with_our_address_are_checked(stack: Stack) -> None:
    for header in (f"Sender: Van thu <vanthu@{LOCAL}>", f"Resent-From: vanthu@{LOCAL}"):
        t = stack.attack("x@evil.example", msg("Partner <x@evil.example>", ALICE, header))
        refused_by(stack, t, "auth.local_spoof")
    assert "claimed_in=Sender:" in stack.log() or 'claimed_in="Sender:"' in stack.log()
    assert stack.sink.messages() == []


# -- 8. subdomains do not vouch for the parent ---------------------------------------------------
def test_class8_lax_subdomain_does_not_vouch_for_the_province(stack: Stack) -> None:
    t = stack.attack(f"x@skhcn.{LOCAL}", msg(f"giamdoc@{LOCAL}"))
    refused_by(stack, t, "auth.local_spoof")
    # the subdomain's own From: is vouched for by its own (lax) SPF: delivered
    t = stack.attack(f"x@skhcn.{LOCAL}", msg(f"x@skhcn.{LOCAL}"))
    delivered(stack, t, 1)


# -- 9. unqualified envelope sender --------------------------------------------------------------
def test_class9_unqualified_envelope_sender_is_our_domain(stack: Stack) -> None:
    t = stack.attack("giamdoc", msg("Partner <x@evil.example>"))
    refused_by(stack, t, "auth.local_spoof")
    assert "envelope sender" in stack.log()


# -- non-default settings -------------------------------------------------------------------------
def test_from_after_a_megabyte_of_headers_with_uninspectable_accepted(
        stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(**{"attachments.uninspectable": "accept"})
    filler = "".join(f"X-Filler-{i}: {'y' * 900}\r\n" for i in range(1300))  # ~1.2 MB
    late = (filler + f"From: giamdoc@{LOCAL}\r\nTo: {ALICE}\r\nSubject: x\r\n\r\nx\r\n")
    t = stack.attack("x@evil.example", late.encode())
    assert reply(t).startswith("550 5.7.1"), (reply(t), stack.log()[-2000:])
    assert "rule=auth.unparsable_from" in stack.log()


def test_dns_outage_never_weakens_the_spoof_check(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(**{"auth.on_dns_error": "accept"})
    # a signature of our domain with a selector whose key lookup never answers
    ring = load_keys([{"domain": LOCAL, "selector": "slow",
                       "key_file": str(stack.keydir / f"{LOCAL}.slow.key")}])
    raw = msg(f"giamdoc@{LOCAL}")
    (sig,) = ring.sign(raw, LOCAL)
    t = stack.attack("x@evil.example", sig.as_bytes() + raw)
    text = reply(t)
    assert text.startswith("451 4.7.1"), (text, stack.log()[-2000:])
    assert "rule=auth.dns_temperror" in stack.log()


# -- the legitimate neighbours --------------------------------------------------------------------
def test_legitimate_neighbours_are_delivered(stack: Stack) -> None:
    n = 0
    # our authenticated user, to outside and inside
    for rcpt in ("partner@gmail.com", f"bob@{LOCAL}"):
        t = stack.ours(ALICE, msg(f"Alice <{ALICE}>", rcpt), rcpt)
        n += 1
        assert b"DKIM-Signature:" in delivered(stack, t, n)
    # a mailing list that rewrites From: (DMARC mitigation), Reply-To the original author
    t = stack.attack("dept-bounces@lists.example.org", msg(
        '"Alice via Dept" <dept@lists.example.org>', ALICE,
        f"Reply-To: {ALICE}", "List-Id: <dept.lists.example.org>"))
    n += 1
    delivered(stack, t, n)
    # a vacation reply (null sender, Auto-Submitted)
    t = stack.attack("", msg("Bob Partner <bob@partner.example>", ALICE,
                             "Auto-Submitted: auto-replied", subject="Vang mat: Cong van 12"))
    n += 1
    delivered(stack, t, n)
    # a calendar reply
    cal = ("BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nATTENDEE;PARTSTAT=ACCEPTED:"
           "mailto:bob@partner.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    t = stack.attack("bob@partner.example", msg(
        "Bob Partner <bob@partner.example>", ALICE, "MIME-Version: 1.0",
        "Content-Type: text/calendar; method=REPLY; charset=utf-8",
        subject="Accepted: Hop giao ban", body=cal))
    n += 1
    delivered(stack, t, n)
    # a forwarded bounce: a DSN from outside quoting our own message
    dsn = ("--b1\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--b1\r\n"
           "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.partner.example"
           f"\r\n\r\nFinal-Recipient: rfc822; x@partner.example\r\nAction: failed\r\n"
           f"Status: 5.1.1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n"
           f"From: {ALICE}\r\nTo: x@partner.example\r\nSubject: hi\r\n\r\nhi\r\n--b1--\r\n")
    t = stack.attack("", msg("Mail Delivery System <MAILER-DAEMON@mx.partner.example>", ALICE,
                             "MIME-Version: 1.0", "Auto-Submitted: auto-replied",
                             'Content-Type: multipart/report; report-type=delivery-status; '
                             'boundary="b1"', subject="Undelivered Mail Returned to Sender",
                             body=dsn))
    n += 1
    delivered(stack, t, n)


# -- the budget under attack -----------------------------------------------------------
def _evil_ring(stack: Stack) -> Any:
    return load_keys([{"domain": "evil.example", "selector": "k1",
                       "key_file": str(stack.keydir / "evil.example.k1.key")}])


def _timed(fn: Callable[[], Transaction]) -> tuple[Transaction, float]:
    start = time.monotonic()
    t = fn()
    return t, time.monotonic() - start


@pytest.mark.parametrize("kind", ["one-line-of-spaces", "many-signatures"])
def test_attack_messages_answered_within_the_budget_while_others_are_served(
        stack_factory: Callable[..., Stack], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = stack_factory(**{"auth.budget": 10.0})
    ring = _evil_ring(stack)
    if kind == "one-line-of-spaces":
        raw = msg("x@evil.example", body="a" + " " * 300_000 + "b\r\n")
        sigs = b"".join(f.as_bytes() for f in ring.sign(raw, "evil.example"))
    else:
        raw = msg("x@evil.example", *(f"X-H{i}: v" for i in range(100)),
                  body=("y" * 70 + "  \t \r\n") * 4000)
        # ten valid signatures, each over 100 fields (the cap): the most work allowed
        names = [b"from"] + [f"x-h{i}".encode() for i in range(99)]
        key = ring.keys[0]
        sigs = b"".join(dkim.sign(raw, b"k1", b"evil.example", key.private,
                                  canonicalize=(b"relaxed", b"relaxed"),
                                  include_headers=names, linesep=b"\r\n")
                        for _ in range(10))
    results: dict[str, tuple[Transaction, float]] = {}

    def attacker() -> None:
        results["attack"] = _timed(lambda: stack.attack("x@evil.example", sigs + raw))

    thread = threading.Thread(target=attacker)
    thread.start()
    time.sleep(0.05)  # let the attack reach end of data first
    results["other"] = _timed(lambda: stack.ours(ALICE, msg(ALICE, "p@gmail.com"),
                                                  "p@gmail.com"))
    thread.join(120)
    attack, attack_s = results["attack"]
    other, other_s = results["other"]
    assert reply(other).startswith("250"), reply(other)
    assert reply(attack)[:1] in ("2", "4", "5"), reply(attack)
    checks = re.findall(r"auth=\"?spf=\w+ dkim=([^ \"]+)", stack.log())
    assert checks and checks[0].count("pass:evil.example") == (1 if kind ==
                                                                "one-line-of-spaces" else 10)
    assert attack_s < 10.0 + 5.0, attack_s
    assert other_s < 5.0, other_s
    with capsys.disabled():
        print(f"\n[budget] {kind}: attack answered {reply(attack)[:40]!r} in {attack_s:.2f}s "
              f"({len(sigs) + len(raw)} bytes); other session {other_s:.2f}s")
