"""Strict parsing of one mailbox (From:, Sender:, X-Forwarded-For: ...): what a reader sees.

A lenient parser turns `<"giamdoc@ninhbinh.gov.vn">` or `<giamdoc@"ninhbinh.gov.vn">`
into an address with no domain, and a check keyed on the domain then finds
nothing to check (issue 14). Here a field is accepted only when it is exactly
one mailbox of the plain RFC 5322 / RFC 6532 shape:

    [phrase] "<" local "@" domain ">"   or   local "@" domain

with comments and whitespace around; `local` a dot-atom or a quoted string without
"@"; `domain` a dot-atom (UTF-8 allowed); no encoded word in the address, no
domain literal, no route, no group, no second address, no empty `<>`. And a
second parser must agree: Python's `email.headerregistry` (the way mail
programs read it) must see exactly one address, without defects, with the same
address. Anything else is `None`: the caller treats such a field as suspicious
(`auth.unparsable_from`), never as "no address, nothing to check".

`display` is what a reader is shown besides the address: the display name (encoded
words decoded, by headerregistry) and any comments.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from email.errors import HeaderDefect, ObsoleteHeaderDefect
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry

MAX_FIELD = 2000  # longer From:/Sender: values are not parsed (suspicious as such)
_ATEXT_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         "!#$%&'*+-/=?^_`{|}~")
_REGISTRY = HeaderRegistry()


@dataclass(frozen=True)
class Mailbox:
    local: str
    domain: str  # as written (case kept; may be non-ASCII)
    display: str  # display name (decoded) and comments, joined by spaces

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"


class _Fail(Exception):
    pass


def _atext(c: str) -> bool:
    """RFC 5322 atext, plus any non-ASCII character but controls and spaces (RFC 6532:
    UTF-8 in addresses; invisible format characters are kept, for the look-alike check
    to see them)."""
    if c in _ATEXT_ASCII:
        return True
    return ord(c) > 0x7F and unicodedata.category(c) not in ("Cc", "Zs", "Zl", "Zp")


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.comments: list[str] = []

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def cfws(self) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "(":
                self.comment()
            else:
                return

    def comment(self) -> None:
        depth = 0
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                if self.i >= len(self.s):
                    raise _Fail
                out.append(self.s[self.i])
                self.i += 1
            elif c == "(":
                depth += 1
                if depth > 1:
                    out.append(c)
            elif c == ")":
                depth -= 1
                if depth == 0:
                    self.comments.append("".join(out))
                    return
                out.append(c)
            else:
                out.append(c)
        raise _Fail  # unclosed comment

    def atom(self) -> str:
        start = self.i
        while self.i < len(self.s) and _atext(self.s[self.i]):
            self.i += 1
        if self.i == start:
            raise _Fail
        return self.s[start:self.i]

    def dot_atom(self) -> str:
        parts = [self.atom()]
        while self.peek() == ".":
            self.i += 1
            parts.append(self.atom())
        return ".".join(parts)

    def quoted(self) -> str:
        assert self.peek() == '"'
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                if self.i >= len(self.s):
                    raise _Fail
                out.append(self.s[self.i])
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif c in "\r\n":
                raise _Fail
            else:
                out.append(c)
        raise _Fail

    def addr_spec(self) -> tuple[str, str]:
        if self.peek() == '"':
            local = self.quoted()
            if not local or "@" in local or not local.isprintable():
                raise _Fail  # "giamdoc@ninhbinh.gov.vn" as a local part: reads as an address
        else:
            local = self.dot_atom()
        if self.peek() != "@":
            raise _Fail
        self.i += 1
        domain = self.dot_atom()  # a quoted string or [literal] here fails
        if "=?" in local or "=?" in domain:
            raise _Fail  # encoded words are not allowed in an address (RFC 2047 5)
        return local, domain

    def mailbox(self) -> tuple[str, str]:
        self.cfws()
        start = self.i
        # Try addr-spec first; on failure, read a phrase and an angle-addr.
        try:
            local, domain = self.addr_spec()
            self.cfws()
            if self.i == len(self.s):
                return local, domain
        except _Fail:
            pass
        self.i = start
        del self.comments[:]
        words = 0
        while self.i < len(self.s) and self.peek() != "<":
            c = self.peek()
            if c == '"':
                self.quoted()
            elif c == ".":
                self.i += 1
            elif c in " \t\r\n(":
                self.cfws()
                continue
            else:
                self.atom()
            words += 1
        if self.peek() != "<":
            raise _Fail
        self.i += 1
        self.cfws()
        local, domain = self.addr_spec()
        self.cfws()
        if self.peek() != ">":
            raise _Fail
        self.i += 1
        self.cfws()
        if self.i != len(self.s):
            raise _Fail  # a second address, a group, trailing text
        return local, domain


def _same_display(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def decode_words(text: str) -> str:
    """Encoded words (RFC 2047) decoded; the text as is when it has none or they are bad."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (UnicodeError, ValueError, LookupError, TypeError):
        return text


def parse_mailbox(value: str) -> Mailbox | None:
    """Exactly one mailbox, read the same way by both parsers; else None."""
    if not value or len(value) > MAX_FIELD or "\x00" in value:
        return None
    parser = _Parser(value)
    try:
        local, domain = parser.mailbox()
    except (_Fail, RecursionError):
        return None
    try:
        header = _REGISTRY("From", value)
        addresses = header.addresses  # type: ignore[attr-defined]
        defects = [d for d in header.defects
                   if isinstance(d, HeaderDefect) and not isinstance(d, ObsoleteHeaderDefect)]
    except Exception:  # headerregistry raises assorted errors on hostile input
        return None
    if defects or len(addresses) != 1:
        return None
    oracle = addresses[0]
    if oracle.username != local or oracle.domain.lower() != domain.lower():
        return None
    display = oracle.display_name or ""
    shown = " ".join(x for x in (display, *(decode_words(c) for c in parser.comments)) if x)
    return Mailbox(local, domain, shown)


def display_part(value: str) -> str:
    """The text a reader may take for the sender's name, even when the field does not
    parse: everything outside the last angle brackets, encoded words decoded."""
    head, lt, tail = value[:MAX_FIELD].rpartition("<")
    text = head if lt else value[:MAX_FIELD]
    if lt and ">" in tail:
        text += " " + tail.partition(">")[2]
    return decode_words(text)
