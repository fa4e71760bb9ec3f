"""The DNS resolver SPF, DKIM and DMARC share: configurable, cached, three outcomes.

Built on dnspython. Nameservers are configured ("IP", "IP:PORT", "[IPv6]:PORT");
none configured means the system's /etc/resolv.conf. Every answer is one of:

* FOUND: records of the asked type (TXT strings joined, addresses as text, MX as
  (preference, exchange), PTR names without the final dot);
* NONE: NXDOMAIN, or the name exists without records of that type, or the name
  cannot exist (a label over 63 octets ...). For SPF/DKIM/DMARC that means "no record";
* TEMPERROR: a timeout, SERVFAIL, REFUSED or no nameserver answering. Never a
  reason for a permanent refusal.

Answers are cached by their TTL (capped by `max_ttl_s`; negative answers for
`negative_ttl_s` or the zone's SOA minimum, whichever is smaller; temporary
errors never), in a bounded LRU shared by every thread. One `query` costs at most
about `timeout_s * attempts` per nameserver.
"""

from __future__ import annotations

import enum
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mailwarden import metrics

Record = bytes | str | tuple[int, str]
RDTYPES = ("TXT", "A", "AAAA", "MX", "PTR")


class Status(enum.Enum):
    FOUND = "found"
    NONE = "none"
    TEMPERROR = "temperror"


@dataclass(frozen=True)
class Answer:
    status: Status
    records: tuple[Record, ...] = ()
    error: str = ""  # why NONE or TEMPERROR, for logs and Authentication-Results comments

    def texts(self) -> list[bytes]:
        """TXT records, each one's strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [r for r in self.records if isinstance(r, bytes)]


class Lookup(Protocol):
    """What the checks need from DNS; `Resolver` is the real one, tests may pass others."""

    def query(self, name: str, rdtype: str) -> Answer: ...


def parse_nameserver(text: str) -> tuple[str, int]:
    """ "192.0.2.1" -> (ip, 53); "192.0.2.1:5353", "::1", "[::1]:5353" likewise."""
    raw = text.strip()
    host, port = raw, 53
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        if rest:
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, _, port_s = raw.partition(":")
        port = _port(port_s, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: a nameserver is an IP address (IP, IP:PORT or "
                         "[IPv6]:PORT), not a host name") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r}: bad port {text!r}")
    return int(text)


def check_nameservers(value: Sequence[str]) -> None:
    """Schema check for the config: every entry parses."""
    for item in value:
        if not isinstance(item, str):
            raise ValueError("must be a list of strings")
        parse_nameserver(item)


class TtlCache:
    """A bounded LRU of answers, each with its own expiry; safe across threads."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> Answer | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] <= self.clock():
                if item is not None:
                    del self._items[key]
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: tuple[str, str], answer: Answer, ttl_s: float) -> None:
        if ttl_s <= 0 or self.size <= 0:
            return
        with self._lock:
            self._items[key] = (self.clock() + ttl_s, answer)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Resolver:
    """dnspython underneath; thread-safe (one resolution object per call)."""

    def __init__(self, nameservers: Sequence[str] = (), *, timeout_s: float = 2.0,
                 attempts: int = 2, cache_size: int = 10_000, max_ttl_s: float = 3600.0,
                 negative_ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0 or attempts < 1:
            raise ValueError("timeout_s must be > 0 and attempts >= 1")
        servers = [parse_nameserver(n) for n in nameservers]
        if servers:
            self._res = dns.resolver.Resolver(configure=False)
            self._res.nameservers = [dns.nameserver.Do53Nameserver(ip, port)
                                     for ip, port in servers]
        else:  # the system's resolv.conf: production only, tests always configure servers
            self._res = dns.resolver.Resolver(configure=True)
        self._res.cache = None  # ours below, with negative answers and a size bound
        self._res.retry_servfail = False  # SERVFAIL drops that server for this query
        self._res.use_edns(0, 0, 1232)
        self._res.timeout = timeout_s
        self._res.lifetime = timeout_s * attempts * max(1, len(self._res.nameservers))
        self.nameservers = tuple(f"{ip}:{port}" for ip, port in servers)
        self.max_ttl_s = max_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.cache = TtlCache(cache_size, clock)
        self._wall = time.time

    def query(self, name: str, rdtype: str) -> Answer:
        rdtype = rdtype.upper()
        if rdtype not in RDTYPES:
            raise ValueError(f"unsupported record type {rdtype}")
        key = (name.lower().rstrip("."), rdtype)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        started = time.monotonic()
        answer, ttl = self._resolve(key[0], rdtype)
        metrics.dns_query(time.monotonic() - started, answer.status.value)
        self.cache.put(key, answer, ttl)
        return answer

    def txt(self, name: str) -> Answer:
        return self.query(name, "TXT")

    def _resolve(self, name: str, rdtype: str) -> tuple[Answer, float]:
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError) as e:
            return Answer(Status.NONE, error=f"invalid name: {e}"), 0.0
        try:
            result = self._res.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN as e:
            return Answer(Status.NONE, error="NXDOMAIN"), self._negative_ttl(e)
        except dns.resolver.NoAnswer as e:
            return Answer(Status.NONE, error="no records"), self._negative_ttl(e)
        except dns.resolver.LifetimeTimeout:
            return Answer(Status.TEMPERROR, error="timeout"), 0.0
        except dns.resolver.NoNameservers as e:
            return Answer(Status.TEMPERROR, error=_servfail_text(e)), 0.0
        except dns.exception.DNSException as e:  # YXDOMAIN, malformed answers, ...
            return Answer(Status.TEMPERROR, error=f"{type(e).__name__}: {e}"[:200]), 0.0
        records = tuple(_record(rd, rdtype) for rd in result)
        ttl = min(max(0.0, result.expiration - self._wall()), self.max_ttl_s)
        return Answer(Status.FOUND, records), ttl

    def _negative_ttl(self, e: dns.exception.DNSException) -> float:
        ttl = self.negative_ttl_s
        try:
            response = e.response() if isinstance(  # type: ignore[no-untyped-call]
                e, dns.resolver.NoAnswer) else None
            if isinstance(e, dns.resolver.NXDOMAIN):
                responses = e.responses()  # type: ignore[no-untyped-call]
                response = next(iter(responses.values()), None)
        except (KeyError, AttributeError, TypeError):
            response = None
        if isinstance(response, dns.message.Message):
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    soa = next(iter(rrset))
                    ttl = min(ttl, rrset.ttl, soa.minimum)
        return ttl


def _servfail_text(e: dns.resolver.NoNameservers) -> str:
    text = str(e)
    return "SERVFAIL" if "SERVFAIL" in text else f"no nameserver answered: {text}"[:200]


def _record(rd: object, rdtype: str) -> Record:
    if rdtype == "TXT":
        return b"".join(rd.strings)  # type: ignore[attr-defined]
    if rdtype in ("A", "AAAA"):
        return str(rd.address)  # type: ignore[attr-defined]
    if rdtype == "MX":
        return (int(rd.preference), rd.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return str(rd.target.to_text(omit_final_dot=True))  # type: ignore[attr-defined]


class StaticLookup:
    """A Lookup over fixed data, for unit tests and offline checks; never touches the network.

    `records` maps (name, type) to records (TXT as str or bytes, one entry per record) or
    to a Status (TEMPERROR to simulate a DNS failure); anything else is NONE.
    """

    def __init__(self, records: dict[tuple[str, str], Sequence[Record] | Status] | None = None
                 ) -> None:
        self.records: dict[tuple[str, str], Sequence[Record] | Status] = {}
        self.asked: list[tuple[str, str]] = []
        for (name, rdtype), value in (records or {}).items():
            self.add(name, rdtype, value)

    def add(self, name: str, rdtype: str, value: Sequence[Record] | Status | str) -> None:
        if isinstance(value, str):
            value = [value]
        self.records[(name.lower().rstrip("."), rdtype.upper())] = value

    def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype.upper())
        self.asked.append(key)
        value = self.records.get(key)
        if value is None:
            return Answer(Status.NONE, error="NXDOMAIN")
        if isinstance(value, Status):
            return Answer(value, error=f"simulated {value.value}")
        records = tuple(v.encode() if isinstance(v, str) and key[1] == "TXT" else v
                        for v in value)
        return Answer(Status.FOUND, records)
