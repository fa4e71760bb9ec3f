"""Sieve scripts (RFC 5228): a lexer and the `redirect` commands in a script. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailwarden.audit.findings import FORWARD, NOT_INSPECTABLE, AuditFinding, is_private
from mailwarden.rules.forwarding import ForwardSettings

# Sieve tags of `redirect` that take an argument (RFC 6009 DSN, RFC 6134 :list).
_TAGS_WITH_ARGUMENT = frozenset({":notify", ":ret", ":by", ":bymode", ":bytimeabsolute",
                                 ":bytimerelative", ":list"})


@dataclass(frozen=True)
class SieveToken:
    kind: str  # "id" | "tag" | "str" | "num" | "punct"
    text: str
    line: int


_SIEVE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIEVE_NUM = re.compile(r"[0-9]+[KkMmGg]?")


def sieve_tokens(text: str) -> list[SieveToken]:
    """RFC 5228 lexer: comments dropped, quoted and text: strings unescaped."""
    out: list[SieveToken] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += text.count("\n", i, end)
            i = end
        elif c == '"':
            start_line, j, buf = line, i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                if text[j] == "\n":
                    line += 1
                buf.append(text[j])
                j += 1
            out.append(SieveToken("str", "".join(buf), start_line))
            i = j + 1
        elif text.startswith("text:", i) and (i + 5 >= n or not text[i + 5].isalnum()):
            start_line = line
            eol = text.find("\n", i)
            if eol < 0:
                break
            i, buf = eol + 1, []
            line += 1
            while i < n:
                eol = text.find("\n", i)
                raw = text[i:] if eol < 0 else text[i:eol]
                i = n if eol < 0 else eol + 1
                line += 1
                if raw.rstrip("\r") == ".":
                    break
                buf.append(raw[1:] if raw.startswith("..") else raw)
            out.append(SieveToken("str", "\n".join(buf), start_line))
        elif c == ":" and (m := _SIEVE_ID.match(text, i + 1)):
            out.append(SieveToken("tag", ":" + m.group(0).lower(), line))
            i = m.end()
        elif m := _SIEVE_ID.match(text, i):
            out.append(SieveToken("id", m.group(0).lower(), line))
            i = m.end()
        elif m := _SIEVE_NUM.match(text, i):
            out.append(SieveToken("num", m.group(0), line))
            i = m.end()
        else:
            out.append(SieveToken("punct", c, line))
            i += 1
    return out


@dataclass(frozen=True)
class SieveRedirect:
    address: str  # "" when it cannot be known statically
    line: int
    tags: tuple[str, ...]
    problem: str = ""  # why the address cannot be known


def sieve_redirects(text: str) -> list[SieveRedirect]:
    """Every `redirect` command of a script, with the address it sends to."""
    tokens = sieve_tokens(text)
    out = []
    for i, tok in enumerate(tokens):
        if tok.kind != "id" or tok.text != "redirect":
            continue
        if i > 0 and not (tokens[i - 1].kind == "punct" and tokens[i - 1].text in ";{}"):
            continue  # an argument or test named "redirect", not the command
        tags: list[str] = []
        address: str | None = None
        j = i + 1
        while j < len(tokens) and not (tokens[j].kind == "punct" and tokens[j].text in ";{}"):
            t = tokens[j]
            if t.kind == "tag":
                tags.append(t.text)
                if t.text in _TAGS_WITH_ARGUMENT:
                    j += 1  # skip the tag's argument
            elif t.kind == "str":
                address = t.text
            j += 1
        if ":list" in tags:
            out.append(SieveRedirect("", tok.line, tuple(tags), "redirect :list (a list name)"))
        elif address is None:
            out.append(SieveRedirect("", tok.line, tuple(tags), "no address argument"))
        elif "${" in address:
            out.append(SieveRedirect("", tok.line, tuple(tags),
                                     f"address built from variables: {address[:80]}"))
        else:
            out.append(SieveRedirect(address.strip().strip("<>"), tok.line, tuple(tags)))
    return out


def sieve_findings(path: str, text: str, owner: str, s: ForwardSettings
                   ) -> list[AuditFinding]:
    """The script `text` at `path`, owned by `owner` -> its redirects to private addresses
    and the redirects whose address cannot be known."""
    out = []
    for r in sieve_redirects(text):
        how = " ".join(("redirect", *r.tags))
        if r.problem:
            out.append(AuditFinding(NOT_INSPECTABLE, "sieve", f"{path}:{r.line}",
                                    owner, detail=r.problem))
        elif is_private(r.address, s):
            out.append(AuditFinding(FORWARD, "sieve", f"{path}:{r.line}", owner,
                                    r.address.lower(), detail=how))
    return out
