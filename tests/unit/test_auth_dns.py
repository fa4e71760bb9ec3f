"""The resolver's pure parts: nameserver notation, the TTL cache, the static lookup."""

from __future__ import annotations

import threading

import pytest

from mailwarden.auth.dns import (
    Answer,
    Resolver,
    StaticLookup,
    Status,
    TtlCache,
    check_nameservers,
    parse_nameserver,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    (" 10.0.0.53 ", ("10.0.0.53", 53)),
    ("::1", ("::1", 53)),
    ("2001:db8::53", ("2001:db8::53", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:db8::53]", ("2001:db8::53", 53)),
], ids=lambda v: str(v))
def test_nameserver_notation(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("dns.google", "not a host name"),
    ("192.0.2.1:0", "bad port"),
    ("192.0.2.1:65536", "bad port"),
    ("192.0.2.1:dns", "bad port"),
    ("[::1", "expected [IPv6]:PORT"),
    ("[::1]5353", "expected [IPv6]:PORT"),
    ("", "not a host name"),
])
def test_bad_nameservers_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_nameserver(text)


def test_config_check_names_the_bad_entry() -> None:
    check_nameservers(["127.0.0.1:53", "::1"])
    with pytest.raises(ValueError, match=r"'resolver\.lan'"):
        check_nameservers(["127.0.0.1", "resolver.lan"])
    with pytest.raises(ValueError, match="list of strings"):
        check_nameservers([53])  # type: ignore[list-item]


def test_resolver_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        Resolver(["127.0.0.1"], timeout_s=0)
    with pytest.raises(ValueError):
        Resolver(["127.0.0.1"], attempts=0)
    with pytest.raises(ValueError, match="unsupported record type"):
        Resolver(["127.0.0.1"]).query("example.org", "SOA")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FOUND = Answer(Status.FOUND, (b"v=spf1 -all",))


def test_cache_entries_expire_with_their_ttl() -> None:
    clock = FakeClock()
    cache = TtlCache(10, clock)
    cache.put(("a.example", "TXT"), FOUND, 30)
    clock.now += 29.9
    assert cache.get(("a.example", "TXT")) is FOUND
    clock.now += 0.2
    assert cache.get(("a.example", "TXT")) is None
    assert len(cache) == 0  # the expired entry is gone, not just hidden
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_is_bounded_and_keeps_the_recently_used() -> None:
    cache = TtlCache(3, FakeClock())
    for name in ("a", "b", "c"):
        cache.put((name, "TXT"), FOUND, 60)
    assert cache.get(("a", "TXT")) is FOUND  # a is now the most recent
    cache.put(("d", "TXT"), FOUND, 60)
    assert len(cache) == 3
    assert cache.get(("b", "TXT")) is None  # the least recently used went
    assert all(cache.get((n, "TXT")) is FOUND for n in ("a", "c", "d"))


def test_zero_ttl_and_zero_size_cache_nothing() -> None:
    cache = TtlCache(10, FakeClock())
    cache.put(("a", "TXT"), FOUND, 0)
    assert cache.get(("a", "TXT")) is None
    off = TtlCache(0, FakeClock())
    off.put(("a", "TXT"), FOUND, 60)
    assert len(off) == 0


def test_cache_is_safe_across_threads() -> None:
    cache = TtlCache(50, FakeClock())

    def work(n: int) -> None:
        for i in range(500):
            cache.put((f"{n}-{i}", "TXT"), FOUND, 60)
            cache.get((f"{n}-{i - 1}", "TXT"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50


def test_static_lookup_answers_found_none_and_simulated_failures() -> None:
    lookup = StaticLookup({("Example.ORG.", "txt"): ["v=spf1 -all", b"other"],
                           ("broken.example", "TXT"): Status.TEMPERROR})
    lookup.add("mx.example.org", "A", ["192.0.2.25"])
    found = lookup.query("example.org", "TXT")
    assert found.status is Status.FOUND and found.texts() == [b"v=spf1 -all", b"other"]
    assert lookup.query("mx.example.org", "A").records == ("192.0.2.25",)
    assert lookup.query("gmail.com", "TXT").status is Status.NONE
    assert lookup.query("broken.example", "TXT").status is Status.TEMPERROR
    assert lookup.asked[0] == ("example.org", "TXT")
