"""Issue 14, unit level: strict sender parsing, look-alikes, the budget, big messages,
replays, linear canonicalisation, and fuzzing of the DMARC/SPF record parsers."""

from __future__ import annotations

import io
import time
from email.headerregistry import HeaderRegistry
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.auth import canon, lookalike
from mailwarden.auth.dkim_sign import keygen, load_keys
from mailwarden.auth.dmarc import PublicSuffixes, parse_record
from mailwarden.auth.dns import Answer, StaticLookup, Status
from mailwarden.auth.engine import WARNING_HEADER, Authenticator, AuthSettings
from mailwarden.auth.mailbox import parse_mailbox
from mailwarden.auth.results import Result
from mailwarden.auth.spf import check_spf
from mailwarden.auth.verify import (
    MAX_SIGNED_FIELDS,
    VerifySettings,
    authenticate,
    sender_fields,
    verify_dkim,
)
from mailwarden.rules import authentication as rule
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.verdict import Action

DOMAIN = "ninhbinh.gov.vn"
ID = "mx.ninhbinh.gov.vn"
CITE = "QD 162/2025/QD-UBND Dieu 10.2.d"
OUTSIDE = "203.0.113.66"


def message(from_value: str, *extra: str, body: str = "Noi dung.\r\n") -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return (f"{head}From: {from_value}\r\nTo: x@{DOMAIN}\r\nSubject: thong bao\r\n"
            f"Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <m1@example>\r\n\r\n"
            + body).encode()


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("keys")
    path, _ = keygen(DOMAIN, "mw1", d)
    return load_keys([{"domain": DOMAIN, "selector": "mw1", "key_file": str(path)}])


def auth_settings(*, max_bytes: int = 16 * 1024 * 1024, budget_s: float = 25.0,
                  **rules: Any) -> AuthSettings:
    return AuthSettings(ID, True, VerifySettings(), AuthRuleSettings((DOMAIN,), True, CITE,
                                                                     **rules),
                        PublicSuffixes.builtin(), max_message_bytes=max_bytes,
                        budget_s=budget_s)


def zone(ring: Any) -> StaticLookup:
    return StaticLookup({
        (DOMAIN, "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        (f"skhcn.{DOMAIN}", "TXT"): ["v=spf1 +all"],  # a lax department subdomain
        (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
        ("evil.example", "TXT"): ["v=spf1 ip4:203.0.113.0/24 -all"],
        **{(k.dns_name, "TXT"): [k.txt_value()] for k in ring.keys},
    })


def rules_of(out: Any) -> list[tuple[str, Action]]:
    return [(v.rule, v.action) for v in out.verdicts]


# -- strict sender parsing ---------------------------------------------------------------
@pytest.mark.parametrize("value", [
    '<"giamdoc@ninhbinh.gov.vn">',
    '<giamdoc@"ninhbinh.gov.vn">',
    "giamdoc@evil.example@ninhbinh.gov.vn",
    "=?utf-8?q?giamdoc=40ninhbinh=2Egov=2Evn?=",
    "Giam doc <giamdoc@=?utf-8?q?ninhbinh?=.gov.vn>",
    '"giamdoc@ninhbinh.gov.vn" <>',
    "a@evil.example, giamdoc@ninhbinh.gov.vn",
    "Group: giamdoc@ninhbinh.gov.vn;",
    "<giamdoc@[192.0.2.1]>",
    "<@relay.example:giamdoc@ninhbinh.gov.vn>",
    "",
])
def test_a_field_that_is_not_exactly_one_plain_address_does_not_parse(value: str) -> None:
    assert parse_mailbox(value) is None


@pytest.mark.parametrize("value, domain, display", [
    ("giamdoc@ninhbinh.gov.vn", "ninhbinh.gov.vn", ""),
    ("Giam doc <giamdoc@ninhbinh.gov.vn>", "ninhbinh.gov.vn", "Giam doc"),
    ("=?utf-8?b?R2nDoW0gxJHhu5Fj?= <gd@example.org>", "example.org", "Giám đốc"),
    ('"Nguyen, Van A" <a@example.org> (phong KHCN)', "example.org", "Nguyen, Van A phong KHCN"),
    ("J. Smith <j@example.org>", "example.org", "J. Smith"),
])
def test_plain_mailboxes_parse(value: str, domain: str, display: str) -> None:
    box = parse_mailbox(value)
    assert box is not None and box.domain == domain and box.display == display


def test_unparsable_fields_still_name_the_domains_they_show() -> None:
    fields = sender_fields([("From", '<"giamdoc@ninhbinh.gov.vn">'),
                            ("Sender", "=?utf-8?q?giamdoc=40ninhbinh=2Egov=2Evn?=")])
    assert [(f.name, f.parsed, f.claimed) for f in fields] == [
        ("From", False, (DOMAIN,)), ("Sender", False, (DOMAIN,))]


_ATOM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_+", min_size=1, max_size=12)
_NOISE = st.sampled_from(['"', "<", ">", "@", ",", ";", ":", "(", ")", " ", "\\", "=?",
                          "?=", "[", "]", ".", "ninhbinh.gov.vn", "x@y.z", "\u200b",
                          "=?utf-8?q?a=40ninhbinh.gov.vn?=", "\u0456"])


@st.composite
def from_values(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(_ATOM, _NOISE), min_size=1, max_size=12))
    return "".join(parts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(from_values(), st.text(max_size=60)))
def test_fuzz_what_the_strict_parser_accepts_is_what_a_reader_sees(value: str) -> None:
    """For any From:/Sender: the strict parser accepts, headerregistry (a mail reader's
    parser) sees exactly that one address and that display name, and the checks use it."""
    box = parse_mailbox(value)
    fields = sender_fields([("From", value)])
    assert len(fields) == 1
    if box is None:
        assert not fields[0].parsed
        return
    header = HeaderRegistry()("From", value)
    (seen,) = header.addresses  # type: ignore[attr-defined]
    assert seen.addr_spec.lower() == box.address.lower() or \
        (seen.username, seen.domain.lower()) == (box.local, box.domain.lower())
    assert seen.display_name in box.display
    f = fields[0]
    assert f.parsed and f.claimed == (box.domain.lower().rstrip("."),)
    assert f.display == box.display


# -- look-alikes --------------------------------------------------------------------------
@pytest.mark.parametrize("name, domain", [
    ("zero-width space", "ninhbinh\u200b.gov.vn"),
    ("soft hyphen", "ninh\u00adbinh.gov.vn"),
    ("Cyrillic i", "n\u0456nhbinh.gov.vn"),
    ("its punycode", "xn--nnhbinh-rog.gov.vn"),
    ("fullwidth dots", "ninhbinh\uff0egov\uff0evn"),
    ("ideographic dots", "ninhbinh\u3002gov\u3002vn"),
    ("right-to-left override", "\u202eninhbinh.gov.vn"),
    ("Greek omicron in gov", "ninhbinh.g\u03bfv.vn"),
    ("a diacritic", "ninhb\u00ecnh.gov.vn"),
    ("a subdomain of a look-alike", "skhcn.n\u0456nhbinh.gov.vn"),
])
def test_look_alikes_of_our_domain(name: str, domain: str) -> None:
    assert lookalike.resembles(domain, (DOMAIN,), True) == DOMAIN, name
    assert lookalike.ascii_form(domain) != DOMAIN
    assert lookalike.ascii_form(domain).isascii()


@pytest.mark.parametrize("domain", [DOMAIN, f"skhcn.{DOMAIN}", "ninhthuan.gov.vn",
                                    "gmail.com", f"{DOMAIN}.evil.example", "bộ.vn"])
def test_not_look_alikes(domain: str) -> None:
    assert lookalike.resembles(domain, (DOMAIN,), True) == ""


def test_our_header_never_writes_a_look_alike_as_our_domain(ring: Any) -> None:
    auth = Authenticator(auth_settings(lookalike_reject=False), zone(ring), ring)
    out = auth.process(message("giamdoc@ninhbinh\u200b.gov.vn"), client_ip=OUTSIDE,
                       helo="mx.evil.example", mail_from="x@evil.example", ours=False)
    assert rules_of(out) == [(rule.LOOKALIKE, Action.ACCEPT)]
    ar, mark = out.add_headers
    assert f"header.from={DOMAIN}" not in ar.value and "xn--ninhbinh-" in ar.value
    assert mark.name == WARNING_HEADER and "resembles=ninhbinh.gov.vn" in mark.value
    assert mark.value.isascii() and ar.value.isascii()


# -- the engine: oversize, replays, forged results, subdomains, unqualified senders ------
def test_oversize_message_is_still_checked_on_header_and_envelope(ring: Any) -> None:
    forged = f"Authentication-Results: {ID}; dkim=pass header.d={DOMAIN}; dmarc=pass"
    big = message(f"giamdoc@{DOMAIN}", forged, body="x" * 5000 + "\r\n")
    auth = Authenticator(auth_settings(max_bytes=1000), zone(ring), ring)
    out = auth.process(io.BytesIO(big), client_ip=OUTSIDE, helo="h", mail_from="a@evil.example",
                       ours=False)
    assert rules_of(out) == [(rule.LOCAL_SPOOF, Action.REJECT)]
    assert out.remove_headers == [("Authentication-Results", 1)]
    assert "dkim=none (message of" in out.add_headers[0].value
    assert out.oversize == len(big)


def test_oversize_message_with_our_spf_pass_is_accepted(ring: Any) -> None:
    big = message(f"giamdoc@{DOMAIN}", body="x" * 5000 + "\r\n")
    auth = Authenticator(auth_settings(max_bytes=1000), zone(ring), ring)
    out = auth.process(big, client_ip="192.0.2.7", helo="h", mail_from=f"gd@{DOMAIN}",
                       ours=False)
    assert rules_of(out) == []


def test_several_forged_results_are_removed_by_descending_index(ring: Any) -> None:
    forged = [f"Authentication-Results: {ID}; spf=pass",
              "Authentication-Results: other.example; spf=none",
              f"Authentication-Results: {ID.upper()}; dkim=pass",
              f"Authentication-Results: {ID}; dmarc=pass"]
    auth = Authenticator(auth_settings(), zone(ring), ring)
    out = auth.process(message("a@gmail.com", *forged), client_ip=OUTSIDE, helo="h",
                       mail_from="a@gmail.com", ours=False)
    assert out.remove_headers == [("Authentication-Results", i) for i in (4, 3, 1)]


def test_a_replay_with_fields_added_on_top_is_refused(ring: Any) -> None:
    signed = message(f"giamdoc@{DOMAIN}")
    (sig,) = ring.sign(signed, DOMAIN)
    original = sig.as_bytes() + signed
    auth = Authenticator(auth_settings(), zone(ring), ring)
    out = auth.process(original, client_ip=OUTSIDE, helo="h", mail_from="a@evil.example",
                       ours=False)
    assert rules_of(out) == []  # our own signed mail, forwarded back: fine
    replay = b"Subject: Khan: chuyen tien\r\nReply-To: ketoan@evil.example\r\n" + original
    out = auth.process(replay, client_ip=OUTSIDE, helo="h", mail_from="a@evil.example",
                       ours=False)
    # the over-signed Subject/Reply-To break the signature; the duplicate refuses anyway
    assert out.results is not None and [k.result for k in out.results.dkim] == [Result.FAIL]
    assert (rule.DUPLICATE_HEADER, Action.REJECT) in rules_of(out)


def test_a_lax_subdomain_does_not_vouch_for_the_province(ring: Any) -> None:
    auth = Authenticator(auth_settings(), zone(ring), ring)
    out = auth.process(message(f"giamdoc@{DOMAIN}"), client_ip=OUTSIDE, helo="h",
                       mail_from=f"x@skhcn.{DOMAIN}", ours=False)
    assert rules_of(out) == [(rule.LOCAL_SPOOF, Action.REJECT)]
    relaxed = Authenticator(auth_settings(subdomains_vouch_for_parent=True), zone(ring), ring)
    out = relaxed.process(message(f"giamdoc@{DOMAIN}"), client_ip=OUTSIDE, helo="h",
                          mail_from=f"x@skhcn.{DOMAIN}", ours=False)
    assert rules_of(out) == []


@pytest.mark.parametrize("sender", ["giamdoc", "giamdoc@"])
def test_an_unqualified_envelope_sender_is_our_domain(ring: Any, sender: str) -> None:
    auth = Authenticator(auth_settings(), zone(ring), ring)
    out = auth.process(message("x@evil.example"), client_ip=OUTSIDE, helo="h",
                       mail_from=sender, ours=False)
    assert rules_of(out) == [(rule.LOCAL_SPOOF, Action.REJECT)]
    assert out.verdicts[0].detail["claimed_in"] == "envelope sender"


def test_header_block_over_the_cap_fails_closed(ring: Any) -> None:
    filler = "".join(f"X-Filler-{i}: {'y' * 900}\r\n" for i in range(1200))
    raw = filler.encode() + message(f"giamdoc@{DOMAIN}")
    auth = Authenticator(auth_settings(unparsable_reject=False), zone(ring), ring)
    out = auth.process(raw, client_ip=OUTSIDE, helo="h", mail_from="a@evil.example",
                       ours=False)
    assert rules_of(out)[0] == (rule.UNPARSABLE_FROM, Action.REJECT)


# -- the budget ---------------------------------------------------------------------------
class SlowLookup:
    """Every query costs `cost` seconds of a fake clock."""

    def __init__(self, inner: Any, clock: list[float], cost: float) -> None:
        self.inner, self.clock, self.cost = inner, clock, cost
        self.queries = 0

    def query(self, name: str, rdtype: str) -> Answer:
        self.queries += 1
        self.clock[0] += self.cost
        return self.inner.query(name, rdtype)


def test_slow_lookups_run_out_of_the_budget_and_defer(ring: Any) -> None:
    now = [0.0]
    sigs = b"".join(
        f"DKIM-Signature: v=1; a=rsa-sha256; d=d{i}.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        .encode() for i in range(10))
    lookup = SlowLookup(zone(ring), now, cost=4.6)
    auth = Authenticator(auth_settings(budget_s=10.0), lookup, ring, clock=lambda: now[0])
    out = auth.process(sigs + message("a@example.org"), client_ip=OUTSIDE, helo="h",
                       mail_from="a@example.org", ours=False)
    assert (rule.TIMEOUT, Action.DEFER) in rules_of(out)
    assert lookup.queries <= 4  # SPF, two keys, then nothing more is asked
    assert now[0] <= 10.0 + 4.6


def test_the_callers_deadline_counts_too(ring: Any) -> None:
    now = [100.0]
    auth = Authenticator(auth_settings(), SlowLookup(zone(ring), now, 1.0), ring,
                         clock=lambda: now[0])
    out = auth.process(message("a@example.org"), client_ip=OUTSIDE, helo="h",
                       mail_from="a@example.org", ours=False, deadline=100.5)
    assert (rule.TIMEOUT, Action.DEFER) in rules_of(out)


def test_long_h_lists_and_padded_signatures_are_permerrors(ring: Any) -> None:
    long_h = ":".join(f"x-{i}" for i in range(MAX_SIGNED_FIELDS + 1))
    padded = "v=1; a=rsa-sha256; d=a.example; s=s; h=from; bh=x; b=" + " " * 200 + "y"
    raw = (f"DKIM-Signature: v=1; a=rsa-sha256; d=a.example; s=s; h={long_h}; bh=x; b=y\r\n"
           f"DKIM-Signature: {padded}\r\n").encode() + message("a@example.org")
    checks = verify_dkim(raw, zone(ring))
    assert [(c.result, c.domain) for c in checks] == [(Result.PERMERROR, "a.example")] * 2


def test_canonicalisation_is_linear_and_equal_to_dkimpys() -> None:
    for body in (b"", b"\r\n", b"\r\n\r\n", b"a \t b \r\n\r\n", b"  \r\n x", b"a\r\n \r\n"):
        assert canon.relaxed_body(body) == canon.original_relaxed(body), body
        assert canon.simple_body(body) == canon.original_simple(body), body
    start = time.perf_counter()
    canon.relaxed_body(b" " * 3_000_000)
    assert time.perf_counter() - start < 1.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b" ")),
       st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"\r", b"\n", b"x"]), max_size=40))
def test_fuzz_linear_canonicalisation_matches_dkimpy(noise: bytes, parts: list[bytes]) -> None:
    body = noise + b"".join(parts)
    assert canon.relaxed_body(body) == canon.original_relaxed(body)
    assert canon.simple_body(body) == canon.original_simple(body)


# -- DMARC and SPF records: bad data is a permerror, never an exception -------------------
def test_a_5001_digit_pct_is_a_permerror(ring: Any) -> None:
    lookup = zone(ring)
    lookup.add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; pct=" + "9" * 5001)
    r = authenticate(message("a@example.org"), lookup, client_ip=OUTSIDE, helo="h",
                     mail_from="a@example.org", psl=PublicSuffixes.builtin())
    assert r.dmarc is not None and r.dmarc.result is Result.PERMERROR


_RECORD_PARTS = st.sampled_from(["v=DMARC1", "p=reject", "p=", "sp=none", "pct=", "pct=50",
                                 "pct=" + "9" * 40, "adkim=s", "aspf=", "rua=mailto:a@b",
                                 "=", ";", " ", "\u0665", "v=spf1", "include:", "a:", "mx",
                                 "-all", "~all", "ip4:1.2.3.4/33", "exp=", "redirect=",
                                 "%{i}", "%{l1r+-}", "ptr", "ip6:::1/129", "a/24//64"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_RECORD_PARTS, max_size=10), st.text(max_size=30))
def test_fuzz_dmarc_record_parser(parts: list[str], tail: str) -> None:
    text = "; ".join(parts) + tail
    try:
        parse_record(text)
    except ValueError:
        pass  # DmarcSyntaxError: evaluated as permerror


@settings(max_examples=150, deadline=None)
@given(st.lists(_RECORD_PARTS, max_size=8), st.text(max_size=20))
def test_fuzz_spf_record_never_raises(parts: list[str], tail: str) -> None:
    record = "v=spf1 " + " ".join(parts) + tail
    lookup = StaticLookup({("fuzz.example", "TXT"): [record]})
    check = check_spf(lookup, "192.0.2.1", "a@fuzz.example", "h.example", budget_s=2.0)
    assert check.result in set(Result)


def test_dns_failure_on_our_key_never_weakens_the_spoof_check(ring: Any) -> None:
    key = ring.keys[0]
    raw = message(f"giamdoc@{DOMAIN}")
    (sig,) = ring.sign(raw, DOMAIN)
    lookup = zone(ring)
    lookup.add(key.dns_name, "TXT", Status.TEMPERROR)
    auth = Authenticator(auth_settings(dns_error_defer=False), lookup, ring)
    out = auth.process(b"DKIM-Signature: " + sig.value.encode() + b"\r\n" + raw,
                       client_ip=OUTSIDE, helo="h", mail_from="a@evil.example", ours=False)
    assert rules_of(out) == [(rule.DNS_TEMPERROR, Action.DEFER)]
