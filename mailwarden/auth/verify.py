"""Inbound checks on one message: SPF, every DKIM signature, DMARC.

`authenticate` takes the raw message (header fields + body, as the milter
spooled it) and the envelope, and returns `AuthResults`; `authres.render`
turns those into our Authentication-Results field. DNS goes through the
`Lookup` given (auth/dns.Resolver), never dkimpy's or pyspf's own resolvers.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import dkim
from dkim.util import parse_tag_value

from mailwarden.addresses import split_address
from mailwarden.auth import canon
from mailwarden.auth.dmarc import PublicSuffixes, evaluate_dmarc
from mailwarden.auth.dns import Answer, Lookup, Status
from mailwarden.auth.mailbox import decode_words, display_part, parse_mailbox
from mailwarden.auth.results import AuthResults, DkimCheck, Result, SenderField, SpfCheck
from mailwarden.auth.spf import check_spf
from mailwarden.inspect.headers import HeaderBlock, parse_headers

canon.install()  # linear body canonicalisation for dkimpy (auth/canon.py)

# dkimpy logs every failed key lookup at ERROR through its own logger; our verdicts
# and Authentication-Results already say it, so its logger is kept silent.
_QUIET = logging.Logger("mailwarden.auth.dkimpy", level=logging.CRITICAL + 1)

MAX_HEADER_BYTES = 1024 * 1024


# RFC 5322 3.6: fields that occur at most once. A second one in mail claiming our domain
# is a replay with fields added on top of a signed message (RFC 6376 8.15).
SINGLE_INSTANCE = ("from", "sender", "reply-to", "to", "cc", "subject", "date",
                   "message-id")
SENDER_FIELDS = ("from", "sender", "resent-from")
# The work one DKIM signature may cost: entries in its h= list, and the size of the field.
MAX_SIGNED_FIELDS = 100
MAX_SIGNATURE_BYTES = 8192
_LONG_WSP = re.compile(rb"[ \t\r\n]{64}")
_AT_DOMAIN = re.compile(r"@[\s\"]*([^\s\"<>,;:()\[\]@]+)")


def read_block(message: bytes | Any, limit: int = MAX_HEADER_BYTES) -> HeaderBlock:
    """The top-level header block (fields, and whether it was read to its end)."""
    if hasattr(message, "seek"):
        message.seek(0)
    return parse_headers(message, max_bytes=limit)


def read_headers(raw: bytes, limit: int = MAX_HEADER_BYTES) -> list[tuple[str, str]]:
    """(name, unfolded value) of each top-level header field, in order, read by THE header
    parser (inspect/headers.py) that the MIME walk and the final hop use; the body is not
    read. DKIM verification and signing read the header with dkimpy's own byte-exact
    parser, as canonicalisation (RFC 6376 3.4) requires."""
    return parse_headers(raw, max_bytes=limit).fields


def from_domains(headers: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """Domains of the addresses in the From: field(s), lower-case, in order (the strict
    parse when the field has one mailbox, else what a lenient reading finds)."""
    return tuple(d for f in sender_fields(headers) if f.name == "From" for d in f.claimed)


def _claimed(value: str, strict: str) -> tuple[str, ...]:
    """The domain of a parsed field; for a field that does not parse, every domain a
    reader or a lenient parser may take it as naming."""
    if strict:
        return (strict.lower().rstrip("."),)
    found = []
    for _, address in getaddresses([value]):
        domain = split_address(address)[1]
        if domain:
            found.append(domain.strip('"'))
    for text in (value, decode_words(value)):
        found.extend(m.lower().rstrip(".") for m in _AT_DOMAIN.findall(text[:4000]))
    return tuple(dict.fromkeys(d for d in found if d))


def sender_fields(headers: Sequence[tuple[str, str]]) -> tuple[SenderField, ...]:
    """From:, Sender: and Resent-From: as a reader sees them (auth/mailbox.py)."""
    out = []
    for name, value in headers:
        key = name.strip().lower()
        if key not in SENDER_FIELDS:
            continue
        shown = {"from": "From", "sender": "Sender", "resent-from": "Resent-From"}[key]
        box = parse_mailbox(value)
        if box is None and key == "resent-from" and "," in value:
            # a mailbox-list is legal here: each must parse
            boxes = [parse_mailbox(v) for v in value.split(",")]
            if all(boxes):
                for b in boxes:
                    assert b is not None
                    out.append(SenderField(shown, b.domain, b.display, True,
                                           _claimed("", b.domain)))
                continue
        if box is None:
            out.append(SenderField(shown, "", display_part(value), False,
                                   _claimed(value, "")))
        else:
            out.append(SenderField(shown, box.domain, box.display, True,
                                   _claimed(value, box.domain)))
    return tuple(out)


def duplicated(headers: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """Single-instance fields (RFC 5322 3.6) present more than once."""
    counts = Counter(n.strip().lower() for n, _ in headers)
    return tuple(n for n in SINGLE_INSTANCE if counts[n] > 1)


@dataclass
class Budgeted:
    """A Lookup that answers temperror, without asking, once the deadline has passed."""

    lookup: Lookup
    deadline: float
    clock: Callable[[], float] = time.monotonic
    expired: bool = False

    def query(self, name: str, rdtype: str) -> Answer:
        if self.clock() >= self.deadline:
            self.expired = True
            return Answer(Status.TEMPERROR, error="out of time (auth.budget)")
        return self.lookup.query(name, rdtype)


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
                min_rsa_bits: int = 1024, deadline: float = math.inf,
                clock: Callable[[], float] = time.monotonic) -> tuple[DkimCheck, ...]:
    """One DkimCheck per DKIM-Signature field (the first `max_signatures`).

    Signatures not started before `deadline` are temperror ("out of time"); each one's
    work is bounded (linear canonicalisation, at most MAX_SIGNED_FIELDS entries in h=,
    a field of at most MAX_SIGNATURE_BYTES without long whitespace runs)."""
    try:
        d = dkim.DKIM(message, logger=_QUIET, minkey=min_rsa_bits)
    except dkim.DKIMException as e:
        return (DkimCheck(Result.PERMERROR, "", reason=f"message not parsable: {e}"),)
    fields = [v for n, v in d.headers if n.lower() == b"dkim-signature"]
    out = []
    budgeted = Budgeted(lookup, deadline, clock)
    for idx, value in enumerate(fields[:max_signatures]):
        if clock() >= deadline:
            out.append(DkimCheck(Result.TEMPERROR, **_tags(value),
                                 reason="out of time (auth.budget)"))
            continue
        out.append(_verify_one(d, idx, value, budgeted))
    return tuple(out)


def _tags(value: bytes) -> dict[str, str]:
    try:
        tags = parse_tag_value(re.sub(rb"\r?\n", b"", value[:MAX_SIGNATURE_BYTES]))
    except Exception:  # dkimpy raises its own InvalidTagValueList subclasses
        tags = {}
    return {"domain": _text(tags, b"d").lower(), "selector": _text(tags, b"s"),
            "algorithm": _text(tags, b"a"), "identity": _text(tags, b"i"),
            "header_b": _text(tags, b"b")[:8]}


def _text(tags: dict[bytes, bytes], key: bytes) -> str:
    return re.sub(r"\s+", "", tags.get(key, b"").decode("ascii", "replace"))


def _verify_one(d: dkim.DKIM, idx: int, value: bytes, lookup: Lookup) -> DkimCheck:
    base = _tags(value)
    if len(value) > MAX_SIGNATURE_BYTES or _LONG_WSP.search(value):
        # dkimpy's b= regex backtracks on long whitespace runs: refuse the work
        return DkimCheck(Result.PERMERROR, reason="signature field too long or padded",
                         **base)
    try:
        h_list = parse_tag_value(re.sub(rb"\r?\n", b"", value)).get(b"h", b"")
    except Exception:  # dkimpy raises its own InvalidTagValueList subclasses
        h_list = b""
    if h_list.count(b":") + 1 > MAX_SIGNED_FIELDS:
        return DkimCheck(Result.PERMERROR, reason=f"more than {MAX_SIGNED_FIELDS} "
                         "signed fields (h=)", **base)
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
                 rand: Callable[[], float] = random.random,
                 block: HeaderBlock | None = None, dkim_skipped: str = "",
                 deadline: float = math.inf,
                 clock: Callable[[], float] = time.monotonic) -> AuthResults:
    """SPF on the envelope, DKIM on every signature, DMARC on the From: domain, and the
    sender fields as a reader sees them.

    `block`: the header block when already read (then `message` may be only the header
    block: with `dkim_skipped` set, signatures are not verified: a message over the size
    cap, see docs/authentication.md). Work stops at `deadline`: lookups after it are
    temperrors and `timed_out` names the step."""
    if block is None:
        block = read_block(message)
    headers = block.fields
    sender = mail_from.strip().strip("<>")
    budgeted = Budgeted(lookup, deadline, clock)
    timed_out = ""
    spf: SpfCheck | None = None
    if settings.spf:
        left = deadline - clock()
        if left <= 0:
            timed_out = "spf"
            spf = SpfCheck(Result.TEMPERROR, "mailfrom" if sender else "helo",
                           split_address(sender)[1] if sender else helo.lower(), sender, helo,
                           "out of time (auth.budget)")
        else:
            spf = check_spf(budgeted, client_ip, sender, helo,
                            budget_s=min(settings.spf_budget_s, left))
            if budgeted.expired or (spf.result is Result.TEMPERROR and clock() >= deadline):
                timed_out = "spf"
    checks: tuple[DkimCheck, ...] = ()
    if settings.dkim and not dkim_skipped:
        checks = verify_dkim(message, lookup, max_signatures=settings.max_signatures,
                             min_rsa_bits=settings.min_rsa_bits, deadline=deadline,
                             clock=clock)
        if not timed_out and any("auth.budget" in k.reason for k in checks):
            timed_out = "dkim"
    senders = sender_fields(headers)
    domains = tuple(d for f in senders if f.name == "From" for d in f.claimed)
    dmarc = evaluate_dmarc(budgeted, domains, spf, checks, psl, rand=rand) \
        if settings.dmarc else None
    if budgeted.expired and not timed_out:
        timed_out = "dmarc"
    return AuthResults(client_ip=client_ip, mail_from_domain=split_address(sender)[1],
                       from_domains=domains, spf=spf, dkim=checks, dmarc=dmarc,
                       senders=senders, duplicates=duplicated(headers),
                       headers_complete=not block.over_limit, dkim_skipped=dkim_skipped,
                       timed_out=timed_out)
