"""Addresses: listen notation, mailbox normalisation, domain classification."""

from __future__ import annotations

import enum
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


def parse_listen(text: str) -> ListenAddress:
    """Parse "inet:127.0.0.1:10031", "inet:[::1]:10031" or "unix:/run/x.sock"."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path.startswith("/"):
            raise ValueError(f"{text!r}: a unix socket needs an absolute path")
        return ListenAddress("unix", path=path)
    if text.startswith("inet:"):
        rest = text[5:]
        if rest.startswith("["):
            host, sep, port_s = rest[1:].partition("]:")
        else:
            host, sep, port_s = rest.rpartition(":")
        if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"{text!r}: expected inet:HOST:PORT (IPv6 as inet:[::1]:PORT)")
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
