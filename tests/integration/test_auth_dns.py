"""SPF, DKIM, DMARC and the anti-spoofing rule against a real DNS server on loopback.

The server (harness.dns) runs as its own process on a free port of
127.0.0.1, serves the zones each test writes, and is stopped by PID. Every
resolver here names it explicitly: nothing queries the machine's resolver.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import procs
from harness.dns import DnsServer
from mailwarden.auth.dkim_sign import KeyRing, keygen, load_keys
from mailwarden.auth.dmarc import PublicSuffixes
from mailwarden.auth.dns import Resolver, Status
from mailwarden.auth.engine import Authenticator, AuthSettings
from mailwarden.auth.results import Result
from mailwarden.auth.spf import check_spf
from mailwarden.auth.verify import VerifySettings, authenticate, verify_dkim
from mailwarden.rules import authentication as rule
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.verdict import Action

pytestmark = pytest.mark.integration

LOCAL = "ninhbinh.gov.vn"
ID = "mx.ninhbinh.gov.vn"
CITE = "QD 162/2025/QD-UBND Dieu 10.2.d"
OUR_NET_IP = "192.0.2.25"  # listed in ninhbinh.gov.vn's SPF
OUTSIDE_IP = "203.0.113.66"
TIMEOUT = 0.3


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyRing, str]:
    """Keys made as an operator would (keygen), and the records it says to publish."""
    d = tmp_path_factory.mktemp("dkim")
    rsa_path, rsa_record = keygen(LOCAL, "mw2025", d)
    ed_path, ed_record = keygen(LOCAL, "mw2025e", d, algorithm="ed25519-sha256")
    ring = load_keys([
        {"domain": LOCAL, "selector": "mw2025", "key_file": str(rsa_path)},
        {"domain": LOCAL, "selector": "mw2025e", "key_file": str(ed_path),
         "algorithm": "ed25519-sha256"},
    ])
    return ring, rsa_record + "\n" + ed_record


BASE_ZONE = f"""
{LOCAL}.                      IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.{LOCAL}.               IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{LOCAL}"
pass.example.                 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
soft.example.                 IN TXT "v=spf1 ip4:198.51.100.0/24 ~all"
neutral.example.              IN TXT "v=spf1 ?all"
perm.example.                 IN TXT "v=spf1 ip4:198.51.100.0/24 bogus -all"
mxonly.example.               IN TXT "v=spf1 mx -all"
mxonly.example.               IN MX 10 mail.mxonly.example.
mail.mxonly.example.          IN A 198.51.100.77
incl.example.                 IN TXT "v=spf1 include:_spf.incl.example -all"
_spf.incl.example.            IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
inclslow.example.             IN TXT "v=spf1 include:slow.example -all"
mx.helo.example.              IN TXT "v=spf1 a -all"
mx.helo.example.              IN A 198.51.100.9
_dmarc.pass.example.          IN TXT "v=DMARC1; p=reject"
_dmarc.quar.example.          IN TXT "v=DMARC1; p=quarantine"
quar.example.                 IN TXT "v=spf1 -all"
"""
BROKEN = ("broken.example",)
SLOW = ("slow.example", "inclslow.slow.example")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           keys: tuple[KeyRing, str]) -> Iterator[DnsServer]:
    with DnsServer(tmp_path_factory.mktemp("dns")) as s:
        yield s


@pytest.fixture
def dns_zone(server: DnsServer, keys: tuple[KeyRing, str]) -> DnsServer:
    server.set_zone(BASE_ZONE + keys[1], servfail=BROKEN, drop=SLOW)
    return server


@pytest.fixture
def resolver(dns_zone: DnsServer) -> Resolver:
    return Resolver([dns_zone.address], timeout_s=TIMEOUT, attempts=1)


def message(from_addr: str, *extra: str, body: str = "Kinh gui,\r\nNoi dung thu.\r\n") -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return (f"{head}From: {from_addr}\r\nTo: nguoinhan@{LOCAL}\r\nSubject: Thong bao\r\n"
            f"Date: Tue, 02 Jan 2024 08:00:00 +0700\r\nMessage-ID: <t1@example>\r\n"
            f"\r\n{body}").encode()


# -- the server and the resolver ------------------------------------------------

def test_unknown_names_are_none_at_once_and_never_leave_loopback(resolver: Resolver) -> None:
    start = time.monotonic()
    for name in ("gmail.com", "_dmarc.gmail.com", "default._domainkey.gmail.com"):
        answer = resolver.query(name, "TXT")
        assert (answer.status, answer.error) == (Status.NONE, "NXDOMAIN")
    assert time.monotonic() - start < 0.5
    assert resolver.nameservers[0].startswith("127.0.0.1:")


def test_big_answers_come_over_tcp(dns_zone: DnsServer, resolver: Resolver) -> None:
    big = " ".join(f'"{c * 250}"' for c in "abcdef")
    dns_zone.set_zone(f"big.example. IN TXT {big}")
    assert dns_zone.query("big.example", "TXT").flags & 0x0200  # TC over UDP (no EDNS)
    answer = resolver.query("big.example", "TXT")
    assert answer.status is Status.FOUND and len(answer.texts()[0]) == 1500


@pytest.mark.parametrize("name", ["broken.example", "slow.example"],
                         ids=["servfail", "no answer"])
def test_dns_failures_are_temperror_within_the_timeout(resolver: Resolver, name: str) -> None:
    start = time.monotonic()
    answer = resolver.query(name, "TXT")
    assert answer.status is Status.TEMPERROR
    assert time.monotonic() - start < TIMEOUT * 4
    assert resolver.query(name, "TXT").status is Status.TEMPERROR  # never cached as "none"


def test_a_nameserver_that_is_not_there_is_temperror() -> None:
    start = time.monotonic()
    answer = Resolver([f"127.0.0.1:{procs.free_port()}"], timeout_s=TIMEOUT,
                      attempts=2).query("ninhbinh.gov.vn", "TXT")
    assert answer.status is Status.TEMPERROR
    assert time.monotonic() - start < TIMEOUT * 6


def test_answers_are_cached_by_ttl(dns_zone: DnsServer) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    dns_zone.set_zone('ttl.example. 60 IN TXT "one"\n;@negative-ttl 5')
    r = Resolver([dns_zone.address], timeout_s=TIMEOUT, attempts=1, clock=clock)
    assert r.query("ttl.example", "TXT").texts() == [b"one"]
    assert r.query("new.example", "TXT").status is Status.NONE
    dns_zone.set_zone('ttl.example. 60 IN TXT "two"\nnew.example. TXT "here"\n'
                      ";@negative-ttl 5")
    assert r.query("ttl.example", "TXT").texts() == [b"one"]  # from the cache
    assert r.query("new.example", "TXT").status is Status.NONE  # negative answer cached
    clock.now = 6.0  # past the SOA minimum of the negative answer
    assert r.query("new.example", "TXT").texts() == [b"here"]
    assert r.query("ttl.example", "TXT").texts() == [b"one"]
    clock.now = 61.0
    assert r.query("ttl.example", "TXT").texts() == [b"two"]


# -- SPF ------------------------------------------------------------------------

SPF_CASES = [
    ("a@pass.example", "198.51.100.7", "client.example", Result.PASS),
    ("a@pass.example", OUTSIDE_IP, "client.example", Result.FAIL),
    ("a@soft.example", OUTSIDE_IP, "client.example", Result.SOFTFAIL),
    ("a@neutral.example", OUTSIDE_IP, "client.example", Result.NEUTRAL),
    ("a@gmail.com", OUTSIDE_IP, "client.example", Result.NONE),
    ("a@perm.example", "198.51.100.7", "client.example", Result.PERMERROR),
    ("a@broken.example", "198.51.100.7", "client.example", Result.TEMPERROR),
    ("a@slow.example", "198.51.100.7", "client.example", Result.TEMPERROR),
    ("a@inclslow.example", "198.51.100.7", "client.example", Result.TEMPERROR),
    ("a@mxonly.example", "198.51.100.77", "client.example", Result.PASS),
    ("a@mxonly.example", "198.51.100.78", "client.example", Result.FAIL),
    ("a@incl.example", "198.51.100.7", "client.example", Result.PASS),
    ("", "198.51.100.9", "mx.helo.example", Result.PASS),
    ("", OUTSIDE_IP, "mx.helo.example", Result.FAIL),
]


@pytest.mark.parametrize(("sender", "ip", "helo", "expected"), SPF_CASES,
                         ids=[f"{c[3].value}-{c[0] or 'helo:' + c[2]}-{c[1]}" for c in SPF_CASES])
def test_spf(resolver: Resolver, sender: str, ip: str, helo: str, expected: Result) -> None:
    check = check_spf(resolver, ip, sender, helo)
    assert check.result is expected, check.reason
    assert check.identity == ("mailfrom" if sender else "helo")


# -- DKIM -----------------------------------------------------------------------

def test_sign_then_verify_with_the_published_keys(resolver: Resolver,
                                                  keys: tuple[KeyRing, str]) -> None:
    ring = keys[0]
    raw = message(f"Van Thu <vanthu@{LOCAL}>")
    signed = b"".join(f.as_bytes() for f in ring.sign(raw, LOCAL)) + raw
    checks = verify_dkim(signed, resolver)
    assert [(c.result, c.selector, c.algorithm) for c in checks] == [
        (Result.PASS, "mw2025", "rsa-sha256"), (Result.PASS, "mw2025e", "ed25519-sha256")]
    tampered = signed.replace(b"Noi dung thu.", b"Noi dung khac.")
    assert [(c.result, c.reason) for c in verify_dkim(tampered, resolver)] == \
        [(Result.FAIL, "body hash mismatch")] * 2


def test_unpublished_keys_and_dns_failures(dns_zone: DnsServer, resolver: Resolver,
                                           keys: tuple[KeyRing, str]) -> None:
    ring = keys[0]
    raw = message(f"vanthu@{LOCAL}")
    signed = b"".join(f.as_bytes() for f in ring.sign(raw, LOCAL)) + raw
    dns_zone.set_zone(BASE_ZONE, servfail=(f"mw2025._domainkey.{LOCAL}",),
                      drop=(f"mw2025e._domainkey.{LOCAL}",))
    assert [(c.result, c.reason.split(":")[0]) for c in verify_dkim(signed, resolver)] == \
        [(Result.TEMPERROR, "key lookup"), (Result.TEMPERROR, "key lookup")]
    dns_zone.set_zone(BASE_ZONE)
    fresh = Resolver([dns_zone.address], timeout_s=TIMEOUT, attempts=1)
    assert [(c.result, c.reason) for c in verify_dkim(signed, fresh)] == \
        [(Result.PERMERROR, "no key published")] * 2


# -- DMARC ----------------------------------------------------------------------

@pytest.mark.parametrize(("from_domain", "sender", "ip", "result", "disposition"), [
    ("pass.example", "bounce@pass.example", "198.51.100.7", Result.PASS, "none"),
    ("pass.example", "bounce@pass.example", OUTSIDE_IP, Result.FAIL, "reject"),
    ("pass.example", "a@elsewhere.example", "198.51.100.7", Result.FAIL, "reject"),
    ("quar.example", "a@quar.example", OUTSIDE_IP, Result.FAIL, "quarantine"),
    ("gmail.com", "a@gmail.com", OUTSIDE_IP, Result.NONE, "none"),
], ids=["aligned SPF pass", "SPF fail", "unaligned", "quarantine", "no record"])
def test_dmarc(resolver: Resolver, from_domain: str, sender: str, ip: str, result: Result,
               disposition: str) -> None:
    r = authenticate(message(f"x@{from_domain}"), resolver, client_ip=ip, helo="h.example",
                     mail_from=sender, psl=PublicSuffixes.builtin())
    assert r.dmarc is not None
    assert (r.dmarc.result, r.dmarc.disposition) == (result, disposition)


# -- the whole milter step --------------------------------------------------------

def authenticator(resolver: Resolver, ring: KeyRing, **rules: Any) -> Authenticator:
    settings = AuthSettings(ID, True, VerifySettings(spf_budget_s=5.0),
                            AuthRuleSettings((LOCAL,), True, CITE, **rules),
                            PublicSuffixes.from_setting(""))
    return Authenticator(settings, resolver, ring)


def test_spoofed_local_domain_is_refused(resolver: Resolver, keys: tuple[KeyRing, str]) -> None:
    auth = authenticator(resolver, keys[0])
    out = auth.process(message(f"Giam Doc So <giamdoc@{LOCAL}>"), client_ip=OUTSIDE_IP,
                       helo="mail.evil.example", mail_from="noreply@evil.example", ours=False)
    (v,) = out.verdicts
    assert (v.rule, v.action, v.reply[:10]) == (rule.LOCAL_SPOOF, Action.REJECT, "550 5.7.1 ")
    assert CITE in v.reply and v.enforced
    (ar,) = out.add_headers
    assert ar.value.startswith(f"{ID};") and "dmarc=fail (p=reject dis=reject" in ar.value


def test_the_same_message_from_our_user_is_signed_and_then_verifies(
        resolver: Resolver, keys: tuple[KeyRing, str]) -> None:
    auth = authenticator(resolver, keys[0])
    raw = message(f"Giam Doc So <giamdoc@{LOCAL}>")
    ours = auth.process(raw, client_ip="10.20.30.40", helo="pc1.example",
                        mail_from=f"giamdoc@{LOCAL}", ours=True)
    assert ours.verdicts == [] and len(ours.add_headers) == 2
    delivered = b"".join(f.as_bytes() for f in ours.add_headers) + raw
    # Relayed through a forwarder outside our SPF: DKIM still vouches for the domain.
    out = auth.process(delivered, client_ip=OUTSIDE_IP, helo="fwd.example",
                       mail_from=f"giamdoc@{LOCAL}", ours=False)
    assert out.verdicts == []
    assert out.results is not None
    assert out.results.summary() == f"spf=fail dkim=pass:{LOCAL},pass:{LOCAL} dmarc=pass"


def test_forged_authentication_results_are_found_for_removal(
        resolver: Resolver, keys: tuple[KeyRing, str]) -> None:
    raw = message("x@pass.example", "Authentication-Results: mx.google.com; spf=pass",
                  f"Authentication-Results: {ID}; spf=pass smtp.mailfrom=x@pass.example;"
                  " dkim=pass header.d=pass.example; dmarc=pass")
    out = authenticator(resolver, keys[0]).process(
        raw, client_ip="198.51.100.7", helo="h", mail_from="x@pass.example", ours=False)
    assert out.remove_headers == [("Authentication-Results", 2)]
    assert out.verdicts == []


@pytest.mark.parametrize("from_addr", ["someone@gmail.com", "Ho Ten <a.b@mail.gmail.com>"])
def test_gmail_without_any_zone_is_never_refused(resolver: Resolver,
                                                 keys: tuple[KeyRing, str],
                                                 from_addr: str) -> None:
    auth = authenticator(resolver, keys[0], dmarc_reject=True, spf_fail_reject=True)
    raw = message(from_addr, "DKIM-Signature: v=1; a=rsa-sha256; d=gmail.com; s=20230601;"
                  " c=relaxed/relaxed; h=from:to:subject; bh=AAAA; b=BBBB")
    out = auth.process(raw, client_ip=OUTSIDE_IP, helo="mail-wm1.google.com",
                       mail_from="someone@gmail.com", ours=False)
    assert [v for v in out.verdicts if v.action is not Action.ACCEPT] == []
    assert out.results is not None
    assert out.results.spf is not None and out.results.spf.result is Result.NONE
    assert out.results.dmarc is not None and out.results.dmarc.result is Result.NONE


def test_dns_failure_for_our_domain_defers_never_refuses(
        dns_zone: DnsServer, resolver: Resolver, keys: tuple[KeyRing, str]) -> None:
    dns_zone.set_zone(BASE_ZONE, servfail=(LOCAL,))  # our SPF record: SERVFAIL
    raw = message(f"giamdoc@{LOCAL}")
    out = authenticator(resolver, keys[0]).process(
        raw, client_ip=OUTSIDE_IP, helo="h.example", mail_from=f"giamdoc@{LOCAL}", ours=False)
    assert [(v.rule, v.action, v.reply[:10]) for v in out.verdicts] == [
        (rule.DNS_TEMPERROR, Action.DEFER, "451 4.7.1 ")]
    # issue 14: on_dns_error = "accept" never weakens the spoof check of our own domains
    accept = authenticator(resolver, keys[0], dns_error_defer=False).process(
        raw, client_ip=OUTSIDE_IP, helo="h.example", mail_from=f"giamdoc@{LOCAL}", ours=False)
    assert [(v.rule, v.action) for v in accept.verdicts] == [(rule.DNS_TEMPERROR,
                                                              Action.DEFER)]


def test_concurrent_messages_keep_their_own_results(resolver: Resolver,
                                                    keys: tuple[KeyRing, str]) -> None:
    """The milter runs a thread per connection: SPF/DKIM/DMARC must not mix them up."""
    auth = authenticator(resolver, keys[0])
    spoof = (message(f"giamdoc@{LOCAL}"), OUTSIDE_IP, f"giamdoc@{LOCAL}", [rule.LOCAL_SPOOF])
    good = (message("x@pass.example"), "198.51.100.7", "x@pass.example", [])
    gmail = (message("x@gmail.com"), OUTSIDE_IP, "x@gmail.com", [])
    errors: list[str] = []
    barrier = threading.Barrier(12)

    def work(i: int) -> None:
        raw, ip, sender, expected = (spoof, good, gmail)[i % 3]
        barrier.wait()
        for _ in range(10):
            out = auth.process(raw, client_ip=ip, helo="h.example", mail_from=sender,
                               ours=False)
            got = [v.rule for v in out.verdicts]
            if got != expected:
                errors.append(f"{sender}: {got}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_server_that_never_serves_is_stopped(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    s = DnsServer(tmp_path / "dns")
    started: list[int] = []
    real_spawn = procs.spawn

    def spawn(*args: Any, **kwargs: Any) -> Any:
        proc = real_spawn(*args, **kwargs)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(procs, "spawn", spawn)
    monkeypatch.setattr(s, "_serves_serial", lambda: False)
    monkeypatch.setattr(procs, "wait_until", _short_wait(procs.wait_until))
    with pytest.raises(procs.StartError):
        s.start()
    assert s.proc is None and len(started) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(started[0], 0)


def _short_wait(real: Any) -> Any:
    def wait(probe: Any, timeout_s: float, *args: Any, **kwargs: Any) -> None:
        real(probe, min(timeout_s, 1.0), *args, **kwargs)

    return wait


def test_server_is_stopped_by_pid(tmp_path: Path) -> None:
    s = DnsServer(tmp_path / "dns").start()
    assert s.proc is not None
    pid = s.proc.pid
    s.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
