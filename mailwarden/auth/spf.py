"""SPF (RFC 7208) with pyspf, over our resolver.

pyspf looks names up through its module-level `spf.DNSLookup`. We replace it
once, at import, by a dispatcher that uses the resolver bound to the current
thread (a ContextVar set around each check), so concurrent milter threads
never share state and pyspf can never fall back to the system resolver: with no
resolver bound, a lookup is a temperror.
"""

from __future__ import annotations

import contextvars
import ipaddress
from typing import Any

import spf

from mailwarden.addresses import split_address
from mailwarden.auth.dns import Lookup, Status
from mailwarden.auth.results import Result, SpfCheck

_current: contextvars.ContextVar[Lookup | None] = contextvars.ContextVar(
    "mailwarden_spf_resolver", default=None)


def _dns_lookup(name: str, qtype: str, strict: Any = True,
                timeout: Any = None) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: [((name, type), value), ...] or raise TempError."""
    lookup = _current.get()
    if lookup is None:
        raise spf.TempError("DNS: no resolver configured")
    rdtype = "TXT" if qtype == "SPF" else qtype
    if rdtype not in ("TXT", "A", "AAAA", "MX", "PTR"):
        return []
    answer = lookup.query(name, rdtype)
    if answer.status is Status.TEMPERROR:
        raise spf.TempError(f"DNS {answer.error or 'temporary failure'} for {name} {rdtype}")
    if rdtype == "TXT":
        # pyspf joins each value's strings: one joined string per record is the same.
        return [((name, qtype), [text]) for text in answer.texts()]
    return [((name, qtype), value) for value in answer.records]


spf.DNSLookup = _dns_lookup


def check_spf(lookup: Lookup, client_ip: str, mail_from: str, helo: str, *,
              budget_s: float = 20.0) -> SpfCheck:
    """The SPF result for the envelope sender, or for HELO when the sender is null.

    `budget_s` bounds the whole evaluation (pyspf's querytime; RFC 7208 4.6.4
    suggests at least 20 s); running out is a temperror.
    """
    sender = mail_from.strip().strip("<>")
    helo = helo.strip().rstrip(".")
    identity = "mailfrom" if sender else "helo"
    domain = split_address(sender)[1] if sender else helo.lower()
    if sender and "@" not in sender:
        domain = sender.lower()

    def made(result: Result, reason: str) -> SpfCheck:
        return SpfCheck(result, identity, domain, sender, helo, reason)

    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        return made(Result.NONE, f"no client address ({client_ip or 'unknown'})")
    if not domain:
        return made(Result.NONE, "no sender domain and no HELO name")
    token = _current.set(lookup)
    try:
        q = spf.query(i=client_ip, s=sender, h=helo, querytime=budget_s)
        result, _code, explanation = q.check()
    except spf.TempError as e:  # raised outside check() on some paths
        return made(Result.TEMPERROR, str(e))
    except (spf.PermError, ValueError, UnicodeError) as e:
        return made(Result.PERMERROR, str(e))
    finally:
        _current.reset(token)
    try:
        value = Result(result)
    except ValueError:
        return made(Result.PERMERROR, f"unexpected SPF result {result!r}")
    return made(value, str(explanation))
