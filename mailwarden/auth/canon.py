"""Body canonicalisation for DKIM in linear time (RFC 6376 3.4.3, 3.4.4).

dkimpy 1.1's relaxed body canonicalisation strips trailing whitespace with
`re.sub(b"[\\t ]+\\r\\n", ...)`: on a run of N spaces not followed by CRLF the
regex engine tries every start of the run and scans to its end, O(N^2). One
300,000-space line held a thread for about two minutes (issue 14; figures in
docs/authentication.md). Here the same result is computed in two linear passes:
compress every run of WSP to one space first (each match always succeeds), then
drop the one space left before each CRLF. `install()` puts these functions in
place of dkimpy's (signing and verifying both go through them); it is called
when auth/verify.py or auth/dkim_sign.py is imported.

The result is byte-for-byte dkimpy's (tests/unit/test_auth_canon.py compares
both on generated bodies).
"""

from __future__ import annotations

import re

import dkim.canonicalization as _dkim_canon

_WSP_RUN = re.compile(rb"[\t ]+")


def strip_trailing_lines(body: bytes) -> bytes:
    """RFC 6376 3.4.3: remove all empty lines at the end; end with exactly one CRLF
    (an empty body, or one of only empty lines, becomes CRLF, as in dkimpy)."""
    end = len(body)
    while end >= 2 and body[end - 2:end] == b"\r\n":
        end -= 2
    if end == len(body):  # no CRLF at the end: add one
        return body + b"\r\n"
    return body[:end + 2]  # keep one CRLF (only empty lines: CRLF)


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 in linear time: the same bytes as dkimpy's Relaxed."""
    compressed = _WSP_RUN.sub(b" ", body).replace(b" \r\n", b"\r\n")
    out = strip_trailing_lines(compressed)
    return b"" if out == b"\r\n" else out


def simple_body(body: bytes) -> bytes:
    """RFC 6376 3.4.3 (dkimpy's Simple)."""
    return strip_trailing_lines(body)


_ORIGINAL = (_dkim_canon.Relaxed.canonicalize_body, _dkim_canon.Simple.canonicalize_body)


def install() -> None:
    """Replace dkimpy's body canonicalisation by the linear one (idempotent)."""
    _dkim_canon.Relaxed.canonicalize_body = staticmethod(relaxed_body)
    _dkim_canon.Simple.canonicalize_body = staticmethod(simple_body)


def original_relaxed(body: bytes) -> bytes:
    """dkimpy's own (quadratic) relaxed canonicalisation, for the equivalence tests."""
    return _ORIGINAL[0](body)  # type: ignore[no-any-return]


def original_simple(body: bytes) -> bytes:
    return _ORIGINAL[1](body)  # type: ignore[no-any-return]


install()
