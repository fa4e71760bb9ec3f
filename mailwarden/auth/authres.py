"""Authentication-Results (RFC 8601): write ours, find forged ones.

Ours is one header field naming the configured authserv-id, with one resinfo
per method (spf, each dkim signature, dmarc). Any incoming field that claims
our authserv-id was not written by us for this message: RFC 8601 5 says to
remove it, and `forged_indices` gives the 1-based positions among the message's
Authentication-Results fields that the milter's chgheader needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailwarden.auth.lookalike import ascii_form
from mailwarden.auth.results import AuthResults, HeaderField, Result

NAME = "Authentication-Results"
_FOLD = "\r\n\t"
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")  # RFC 2045 token
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                     r"[A-Za-z0-9])?)*\.?")


def check_authserv_id(value: str) -> None:
    """Schema check: an authserv-id we can write unquoted (a host name)."""
    if not value or not _DOMAIN.fullmatch(value):
        raise ValueError(f"{value!r}: the authserv-id should be this host's name, "
                         "e.g. mx.ninhbinh.gov.vn")


def _comment(text: str, limit: int = 80) -> str:
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c not in "()\\" else " " for c in text)
    clean = " ".join(clean.split())
    if len(clean) > limit:
        clean = clean[: limit - 3] + "..."
    return f" ({clean})" if clean else ""


def _value(text: str) -> str:
    """A property value: a bare token when possible, else a quoted-string."""
    if _TOKEN.fullmatch(text):
        return text
    safe = "".join(c for c in text if 0x20 <= ord(c) < 0x7F)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _domain(text: str) -> str:
    """A domain as written on the wire: non-ASCII labels as A-labels (never dropped
    characters: a look-alike must not read as our domain here)."""
    if not text.isascii():
        text = ascii_form(text)
    return text if _DOMAIN.fullmatch(text) else _value(text)


def _mailbox(address: str) -> str:
    """smtp.mailfrom: the address when it is a plain dot-atom one, else its domain."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        domain = ascii_form(domain)
    if not _DOMAIN.fullmatch(domain):
        return _value(address)
    if local and _DOT_ATOM.fullmatch(local):
        return f"{local}@{domain}"
    return domain


def render(results: AuthResults | None, authserv_id: str) -> HeaderField:
    """Our Authentication-Results field."""
    parts: list[str] = []
    if results is not None:
        spf = results.spf
        if spf is not None:
            prop = f"smtp.mailfrom={_mailbox(spf.mailfrom)}" if spf.identity == "mailfrom" \
                else f"smtp.helo={_domain(spf.helo)}"
            parts.append(f"spf={spf.result.value}{_comment(spf.reason)} {prop}")
        if results.dkim_skipped:
            parts.append(f"dkim=none{_comment(results.dkim_skipped)}")
        elif not results.dkim:
            parts.append("dkim=none (no signatures)")
        for k in results.dkim:
            props = []
            if k.domain:
                props.append(f"header.d={_domain(k.domain)}")
            if k.selector:
                props.append(f"header.s={_value(k.selector)}")
            if k.algorithm:
                props.append(f"header.a={_value(k.algorithm)}")
            if k.header_b:
                props.append(f"header.b={_value(k.header_b)}")
            reason = k.reason if k.result is not Result.PASS else ""
            parts.append(" ".join([f"dkim={k.result.value}{_comment(reason)}", *props]))
        d = results.dmarc
        if d is not None:
            info = []
            if d.policy:
                info.append(f"p={d.policy} dis={d.disposition}")
            if d.reason and d.result is not Result.PASS:
                info.append(d.reason)
            parts.append(f"dmarc={d.result.value}{_comment(' '.join(info))} "
                         f"header.from={_domain(d.from_domain)}")
    if not parts:
        return HeaderField(NAME, f"{authserv_id}; none")
    return HeaderField(NAME, f"{authserv_id};{_FOLD}" + f";{_FOLD}".join(parts))


def _skip_cfws(text: str, i: int) -> int:
    """Past whitespace and (nested) comments."""
    depth = 0
    while i < len(text):
        c = text[i]
        if depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == "(":
            depth = 1
        elif not c.isspace():
            break
        i += 1
    return i


def authserv_id_of(value: str) -> str:
    """The authserv-id an Authentication-Results value claims ("" if none)."""
    i = _skip_cfws(value, 0)
    if i < len(value) and value[i] == '"':
        out = []
        i += 1
        while i < len(value) and value[i] != '"':
            if value[i] == "\\" and i + 1 < len(value):
                i += 1
            out.append(value[i])
            i += 1
        return "".join(out)
    j = i
    while j < len(value) and not value[j].isspace() and value[j] not in ";(":
        j += 1
    return value[i:j]


def forged_indices(headers: Sequence[tuple[str, str]], authserv_id: str) -> list[int]:
    """1-based positions, among the Authentication-Results fields, of those claiming us."""
    ours = authserv_id.lower().rstrip(".")
    out = []
    n = 0
    for name, value in headers:
        if name.strip().lower() != NAME.lower():
            continue
        n += 1
        if authserv_id_of(value).lower().rstrip(".") == ours:
            out.append(n)
    return out
