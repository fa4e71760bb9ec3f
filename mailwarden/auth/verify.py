"""Inbound checks on one message: SPF, every DKIM signature, DMARC.

`authenticate` takes the raw message (header fields + body, as the milter
spooled it) and the envelope, and returns `AuthResults`; `authres.render`
turns those into our Authentication-Results field. DNS goes through the
`Lookup` given (auth/dns.Resolver), never dkimpy's or pyspf's own resolvers.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import dkim
from dkim.util import parse_tag_value

from mailwarden.addresses import split_address
from mailwarden.auth.dmarc import PublicSuffixes, evaluate_dmarc
from mailwarden.auth.dns import Lookup, Status
from mailwarden.auth.results import AuthResults, DkimCheck, Result, SpfCheck
from mailwarden.auth.spf import check_spf
from mailwarden.inspect.headers import parse_headers

# dkimpy logs every failed key lookup at ERROR through its own logger; our verdicts
# and Authentication-Results already say it, so its logger is kept silent.
_QUIET = logging.Logger("mailwarden.auth.dkimpy", level=logging.CRITICAL + 1)

MAX_HEADER_BYTES = 1024 * 1024


def read_headers(raw: bytes, limit: int = MAX_HEADER_BYTES) -> list[tuple[str, str]]:
    """(name, unfolded value) of each top-level header field, in order, read by THE header
    parser (inspect/headers.py) that the MIME walk and the final hop use; the body is not
    read. DKIM verification and signing read the header with dkimpy's own byte-exact
    parser, as canonicalisation (RFC 6376 3.4) requires."""
    return parse_headers(raw, max_bytes=limit).fields


def from_domains(headers: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """Domains of the addresses in the From: field(s), lower-case, in order."""
    values = [v for n, v in headers if n.lower() == "from"]
    domains = []
    for _, address in getaddresses(values):
        domain = split_address(address)[1]
        if domain:
            domains.append(domain)
    return tuple(domains)


@dataclass
class _KeyFetch:
    """dkimpy's dnsfunc, remembering what the lookup found (dkimpy hides it)."""

    lookup: Lookup
    temperror: str = ""
    missing: bool = False
    bad_key: str = ""

    def __call__(self, name: Any, timeout: Any = 5) -> bytes | None:
        qname = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        answer = self.lookup.query(qname, "TXT")
        if answer.status is Status.TEMPERROR:
            self.temperror = answer.error or "temporary DNS failure"
            raise dkim.DnsTimeoutError(self.temperror)
        texts = answer.texts()
        if not texts:
            self.missing = True
            return None
        chosen = next((t for t in texts if b"p=" in t), texts[0])
        try:
            dkim.evaluate_pk(qname, chosen)
        except (dkim.DKIMException, ValueError) as e:
            self.bad_key = str(e)[:120]
        return chosen


def verify_dkim(message: bytes, lookup: Lookup, *, max_signatures: int = 10,
                min_rsa_bits: int = 1024) -> tuple[DkimCheck, ...]:
    """One DkimCheck per DKIM-Signature field (the first `max_signatures`)."""
    try:
        d = dkim.DKIM(message, logger=_QUIET, minkey=min_rsa_bits)
    except dkim.DKIMException as e:
        return (DkimCheck(Result.PERMERROR, "", reason=f"message not parsable: {e}"),)
    fields = [v for n, v in d.headers if n.lower() == b"dkim-signature"]
    out = []
    for idx, value in enumerate(fields[:max_signatures]):
        out.append(_verify_one(d, idx, value, lookup))
    return tuple(out)


def _text(tags: dict[bytes, bytes], key: bytes) -> str:
    return re.sub(r"\s+", "", tags.get(key, b"").decode("ascii", "replace"))


def _verify_one(d: dkim.DKIM, idx: int, value: bytes, lookup: Lookup) -> DkimCheck:
    try:
        tags = parse_tag_value(re.sub(rb"\r?\n", b"", value))
    except Exception:  # dkimpy raises its own InvalidTagValueList subclasses
        tags = {}
    base = {"domain": _text(tags, b"d").lower(), "selector": _text(tags, b"s"),
            "algorithm": _text(tags, b"a"), "identity": _text(tags, b"i"),
            "header_b": _text(tags, b"b")[:8]}
    fetch = _KeyFetch(lookup)
    try:
        prep = d.verify_headerprep(idx)
        if not prep:
            return DkimCheck(Result.PERMERROR, reason="signature not found", **base)
        sig, include_headers, sigheaders = prep
    except dkim.DKIMException as e:
        return DkimCheck(Result.PERMERROR, reason=f"bad signature: {e}", **base)
    try:
        ok = d.verify_sig(sig, include_headers, sigheaders[idx], fetch)
    except dkim.ValidationError as e:  # the body hash did not match
        return DkimCheck(Result.FAIL, reason=str(e).split(" (")[0], **base)
    except dkim.DKIMException as e:  # key too small, unknown key type, ...
        return DkimCheck(Result.PERMERROR, reason=str(e)[:120], **base)
    if ok:
        return DkimCheck(Result.PASS, **base)
    if fetch.temperror:
        return DkimCheck(Result.TEMPERROR, reason=f"key lookup: {fetch.temperror}", **base)
    if fetch.missing:
        return DkimCheck(Result.PERMERROR, reason="no key published", **base)
    if fetch.bad_key:
        return DkimCheck(Result.PERMERROR, reason=f"bad key: {fetch.bad_key}", **base)
    return DkimCheck(Result.FAIL, reason="signature did not verify", **base)


@dataclass(frozen=True)
class VerifySettings:
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    spf_budget_s: float = 20.0
    max_signatures: int = 10
    min_rsa_bits: int = 1024  # RFC 8301: verifiers must accept 1024-bit keys


def authenticate(message: bytes, lookup: Lookup, *, client_ip: str, helo: str,
                 mail_from: str, psl: PublicSuffixes,
                 settings: VerifySettings = VerifySettings(),
                 rand: Callable[[], float] = random.random) -> AuthResults:
    """SPF on the envelope, DKIM on every signature, DMARC on the From: domain."""
    headers = read_headers(message)
    sender = mail_from.strip().strip("<>")
    spf: SpfCheck | None = None
    if settings.spf:
        spf = check_spf(lookup, client_ip, sender, helo, budget_s=settings.spf_budget_s)
    checks: tuple[DkimCheck, ...] = ()
    if settings.dkim:
        checks = verify_dkim(message, lookup, max_signatures=settings.max_signatures,
                             min_rsa_bits=settings.min_rsa_bits)
    domains = from_domains(headers)
    dmarc = evaluate_dmarc(lookup, domains, spf, checks, psl, rand=rand) \
        if settings.dmarc else None
    return AuthResults(client_ip=client_ip, mail_from_domain=split_address(sender)[1],
                       from_domains=domains, spf=spf, dkim=checks, dmarc=dmarc)
