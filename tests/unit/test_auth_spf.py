"""SPF through pyspf over a static lookup: every result, the HELO identity, threads."""

from __future__ import annotations

import threading
import time

import pytest
import spf

from mailwarden.auth.dns import Answer, StaticLookup, Status
from mailwarden.auth.results import Result
from mailwarden.auth.spf import _dns_lookup, check_spf

ZONE = {
    ("pass.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("soft.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 ~all"],
    ("neutral.example", "TXT"): ["v=spf1 ?all"],
    ("perm.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 frobnicate -all"],
    ("two.example", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
    ("other.example", "TXT"): ["google-site-verification=abc"],
    ("inc.example", "TXT"): ["v=spf1 include:pass.example mx -all"],
    ("inc.example", "MX"): [(10, "mx.inc.example")],
    ("mx.inc.example", "A"): ["198.51.100.25"],
    ("v6.example", "TXT"): ["v=spf1 ip6:2001:db8::/32 -all"],
    ("slow.example", "TXT"): Status.TEMPERROR,
    ("incslow.example", "TXT"): ["v=spf1 include:slow.example -all"],
    ("mx.helo.example", "TXT"): ["v=spf1 a -all"],
    ("mx.helo.example", "A"): ["203.0.113.9"],
}


@pytest.mark.parametrize(("sender", "ip", "expected"), [
    ("a@pass.example", "192.0.2.7", Result.PASS),
    ("a@pass.example", "203.0.113.1", Result.FAIL),
    ("a@soft.example", "203.0.113.1", Result.SOFTFAIL),
    ("a@neutral.example", "203.0.113.1", Result.NEUTRAL),
    ("a@gmail.com", "203.0.113.1", Result.NONE),  # no record at all
    ("a@other.example", "203.0.113.1", Result.NONE),  # TXT, but not SPF
    ("a@perm.example", "192.0.2.7", Result.PERMERROR),
    ("a@two.example", "192.0.2.7", Result.PERMERROR),  # two SPF records (RFC 7208 4.5)
    ("a@inc.example", "192.0.2.7", Result.PASS),  # through include:
    ("a@inc.example", "198.51.100.25", Result.PASS),  # through mx (MX then A lookups)
    ("a@inc.example", "198.51.100.26", Result.FAIL),
    ("a@v6.example", "2001:db8::25", Result.PASS),
    ("a@v6.example", "::ffff:192.0.2.7", Result.FAIL),  # v4-mapped is checked as IPv4
    ("a@slow.example", "192.0.2.7", Result.TEMPERROR),
    ("a@incslow.example", "192.0.2.7", Result.TEMPERROR),
], ids=lambda v: v.value if isinstance(v, Result) else str(v))
def test_spf_results(sender: str, ip: str, expected: Result) -> None:
    check = check_spf(StaticLookup(ZONE), ip, sender, "client.example")
    assert check.result is expected, check.reason
    assert check.identity == "mailfrom"
    assert check.domain == sender.split("@")[1]


def test_null_sender_is_checked_by_helo() -> None:
    lookup = StaticLookup(ZONE)
    check = check_spf(lookup, "203.0.113.9", "", "mx.helo.example")
    assert (check.result, check.identity, check.domain) == (Result.PASS, "helo", "mx.helo.example")
    assert check_spf(lookup, "203.0.113.8", "<>", "mx.helo.example").result is Result.FAIL


def test_no_client_address_or_no_domain_is_none_without_lookups() -> None:
    lookup = StaticLookup(ZONE)
    assert check_spf(lookup, "unknown", "a@pass.example", "h").result is Result.NONE
    assert check_spf(lookup, "192.0.2.7", "", "").result is Result.NONE
    assert lookup.asked == []


def test_a_lookup_outside_a_check_is_a_temperror_never_the_system_resolver() -> None:
    # pyspf's module-level DNSLookup is ours: without a resolver bound to this
    # thread it refuses instead of asking /etc/resolv.conf's servers.
    assert spf.DNSLookup is _dns_lookup
    with pytest.raises(spf.TempError, match="no resolver"):
        spf.DNSLookup("gmail.com", "TXT", True, 20)


class SlowLookup(StaticLookup):
    """Network latency, so that the threads' checks interleave for real."""

    def query(self, name: str, rdtype: str) -> Answer:
        time.sleep(0.001)
        return super().query(name, rdtype)


def test_concurrent_checks_each_use_their_own_resolver() -> None:
    # Two lookups per check (the record, then its include:), with latency between.
    allow = SlowLookup({("shared.example", "TXT"): ["v=spf1 include:inner.example -all"],
                        ("inner.example", "TXT"): ["v=spf1 +all"]})
    deny = SlowLookup({("shared.example", "TXT"): ["v=spf1 include:inner.example -all"],
                       ("inner.example", "TXT"): ["v=spf1 -all"]})
    seen: list[tuple[str, Result]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def work(name: str, lookup: SlowLookup) -> None:
        barrier.wait()
        for _ in range(10):
            r = check_spf(lookup, "192.0.2.1", "a@shared.example", "h").result
            with lock:
                seen.append((name, r))

    threads = [threading.Thread(target=work, args=("allow", allow) if i % 2 else
                                ("deny", deny)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 160
    assert {r for n, r in seen if n == "allow"} == {Result.PASS}
    assert {r for n, r in seen if n == "deny"} == {Result.FAIL}
