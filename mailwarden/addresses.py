"""Addresses: listen notation, mailbox normalisation, domain classification, and
the one definition of which mail is "ours"."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ListenAddress:
    """A socket address in Postfix's notation: inet:HOST:PORT or unix:/PATH."""

    family: str  # "inet" | "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"

    def libmilter(self) -> str:
        """libmilter spells these inet:PORT@HOST, inet6:PORT@HOST, unix:PATH."""
        if self.family == "unix":
            return f"unix:{self.path}"
        fam = "inet6" if ":" in self.host else "inet"
        return f"{fam}:{self.port}@{self.host}"


# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
UNIX_PATH_MAX = 107


def parse_listen(text: str) -> ListenAddress:
    """THE parser of socket addresses in Postfix notation, for every socket we listen on
    or connect to (policyd.listen, milter.listen, antivirus.clamd):

        unix:/PATH         absolute, at most 107 bytes (sun_path), no NUL
        inet:HOST:PORT     HOST a name or an IPv4 address; PORT 1..65535
        inet:[V6]:PORT     an IPv6 address, always in brackets

    Raises ValueError with a message fit for a config error (`'text': what is wrong`).
    """
    kind, sep, rest = text.partition(":")
    if kind == "unix" and sep:
        if not rest.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket needs an absolute path (unix:/PATH)")
        if "\0" in rest:
            raise ValueError(f"{text!r}: NUL in the socket path")
        if len(rest.encode("utf-8", "surrogateescape")) > UNIX_PATH_MAX:
            raise ValueError(f"{text!r}: unix socket path longer than {UNIX_PATH_MAX} bytes")
        return ListenAddress("unix", path=rest)
    if kind == "inet" and sep:
        if rest.startswith("["):
            host, closed, tail = rest[1:].partition("]")
            if not closed or not tail.startswith(":"):
                raise ValueError(f"{text!r}: expected inet:[IPv6]:PORT")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
            port_s = tail[1:]
        else:
            host, colon, port_s = rest.rpartition(":")
            if not colon or not host:
                raise ValueError(f"{text!r}: expected inet:HOST:PORT (IPv6 as inet:[::1]:PORT)")
            if ":" in host:
                raise ValueError(f"{text!r}: write IPv6 addresses in brackets, inet:[::1]:PORT")
        if not (port_s.isascii() and port_s.isdigit()) or not 0 < int(port_s) < 65536:
            raise ValueError(f"{text!r}: port must be a number 1..65535")
        return ListenAddress("inet", host=host, port=int(port_s))
    raise ValueError(f"{text!r}: expected inet:HOST:PORT or unix:/PATH (Postfix notation)")


def split_address(address: str) -> tuple[str, str]:
    """("local", "domain") of an address, domain lower-cased; <> and spaces stripped."""
    addr = address.strip().strip("<>").strip()
    local, sep, domain = addr.rpartition("@")
    if not sep:
        return addr, ""
    return local, domain.lower().rstrip(".")


def routed_domains(address: str) -> tuple[str, ...]:
    """Every domain Postfix may deliver `address` to, lower-cased.

    Besides the domain after the last "@", Postfix routes on the local part when the
    domain is its own: "user%gmail.com@here" (allow_percent_hack), "gmail.com!user@here"
    and a bare "gmail.com!user" (swap_bangpath, default yes) and a quoted
    "\"user@gmail.com\"@here" all end at gmail.com. An address is provably local only
    when every domain here is local; a bare "user" has none (Postfix appends
    $myorigin, ours).
    """
    local, domain = split_address(address)
    local = local.strip('"')
    found = [domain] if domain else []
    # Postfix peels "@" first, then "%", then "!" (trivial-rewrite's resolve order);
    # taking every candidate rather than the exact order keeps this fail-safe.
    for part in local.replace("%", "@").split("@")[1:]:
        found.append(part.split("!")[0])
    head, bang, _ = local.partition("!")
    if bang:
        found.append(head.rpartition("@")[2].rpartition("%")[2])
    return tuple(dict.fromkeys(d.lower().rstrip(".") for d in found if d))


def mailbox_key(address: str, delimiter: str = "+") -> str:
    """The mailbox an address delivers to: lower-case, without +extension.

    user+tag@Example.ORG and USER@example.org are one mailbox for counting.
    """
    local, domain = split_address(address)
    if delimiter:
        # Postfix: any of the delimiter characters starts the extension.
        cut = min((i for i in (local.find(c) for c in delimiter) if i > 0), default=-1)
        if cut > 0:
            local = local[:cut]
    local = local.lower()
    return f"{local}@{domain}" if domain else local


def in_domains(domain: str, domains: tuple[str, ...], subdomains: bool) -> bool:
    """Is `domain` one of `domains` (or, with `subdomains`, below one, on a label boundary)?"""
    domain = domain.lower().rstrip(".")
    for d in domains:
        if domain == d or (subdomains and domain.endswith("." + d)):
            return True
    return False


class AddressClass(enum.Enum):
    LOCAL = "local"  # the province's own domains
    STATE = "state"  # another state agency (*.gov.vn or allow-listed)
    PRIVATE = "private"  # everything else


def classify_domain(domain: str, local: tuple[str, ...], subdomains: bool,
                    state_suffixes: tuple[str, ...] = ("gov.vn",),
                    state_allow: tuple[str, ...] = ()) -> AddressClass:
    if in_domains(domain, local, subdomains):
        return AddressClass.LOCAL
    if in_domains(domain, state_allow, True) or in_domains(domain, state_suffixes, True):
        return AddressClass.STATE
    return AddressClass.PRIVATE


def in_networks(client_addr: str, networks: Iterable[Network]) -> bool:
    """Is this client address (as Postfix or a milter gives it) inside one of `networks`?"""
    try:
        ip = ipaddress.ip_address(client_addr.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in n for n in networks)


@dataclass(frozen=True)
class Ours:
    """Which domains, clients and mail are ours: the one definition every rule uses.

    Mail is ours (sent by the province) when the client logged in, or is one of our
    trusted hosts, or -- whatever the client -- Postfix agreed to relay it to a domain
    outside `local_domains` and `relay_domains`: Postfix relays only for clients it
    trusts (permit_mynetworks, permit_sasl_authenticated), so an outside domain among
    the accepted recipients proves the client is one of ours.
    """

    local_domains: tuple[str, ...]
    include_subdomains: bool = True
    recipient_delimiter: str = "+"
    trusted_networks: tuple[Network, ...] = ()
    relay_domains: tuple[str, ...] = ()  # accepted from anyone, yet not ours

    def is_local_domain(self, domain: str) -> bool:
        return in_domains(domain, self.local_domains, self.include_subdomains)

    def is_local_address(self, address: str) -> bool:
        """Provably delivered inside: every domain Postfix could route it to is ours."""
        domains = routed_domains(address)
        return all(self.is_local_domain(d) for d in domains)

    def is_external_recipient(self, address: str) -> bool:
        """Delivered outside our domains (bang paths and percent hacks included)."""
        return not self.is_local_address(address)

    def trusted_client(self, client_addr: str) -> bool:
        return in_networks(client_addr, self.trusted_networks)

    def relayed_outside(self, recipients: Iterable[str]) -> bool:
        """Did Postfix accept a recipient outside every domain it takes from anyone?"""
        for r in recipients:
            domains = routed_domains(r)
            if any(not self.is_local_domain(d) and not in_domains(d, self.relay_domains, True)
                   for d in domains):
                return True
        return False

    def sent_by_us(self, *, authenticated: bool, client_addr: str,
                   recipients: Iterable[str] = ()) -> bool:
        return (authenticated or self.trusted_client(client_addr)
                or self.relayed_outside(recipients))
