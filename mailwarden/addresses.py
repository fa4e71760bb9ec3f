"""Addresses: listen notation, mailbox normalisation, domain classification."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass


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
