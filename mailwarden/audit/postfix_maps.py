"""Postfix's alias maps as text: map lists, map contents, postconf/postmap output. Pure.

`map_leaves(spec)` says how each map of a `virtual_alias_maps`/`alias_maps` value can
be read (unwrapping `proxy:` and `unionmap:`); `sources` does the reading, and
`pair_findings` turns (key, value) pairs into findings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mailwarden.audit.aliases import Names, ReadInclude, expand_targets, logical_lines
from mailwarden.audit.findings import (
    FORWARD,
    NOT_INSPECTABLE,
    AuditFinding,
    is_local,
    is_private,
)
from mailwarden.rules.forwarding import ForwardSettings

DUMPABLE = ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm")  # what `postmap -s` can list
INTERNAL_KEYS = ("@", "YP_LAST_MODIFIED", "YP_MASTER_NAME")
MAX_NESTING = 4  # proxy:/unionmap: levels unwrapped

# How a map is read (MapLeaf.how).
POSTMAP = "postmap"  # `postmap -s spec`
TEXTHASH = "texthash"  # read the file at `path` and parse it with text_pairs()
PAIRS = "pairs"  # the spec itself holds the entries (inline:, static:)
UNREADABLE = "not-inspectable"  # `detail` says why


@dataclass(frozen=True)
class MapLeaf:
    spec: str  # "hash:/etc/postfix/virtual", the one reported as the location
    how: str
    path: str = ""
    pairs: tuple[tuple[str, str], ...] = ()
    detail: str = ""


def split_map_list(value: str) -> list[str]:
    """"hash:/a, inline:{ x=y, z=w } ldap:/b" -> the map specs, braces kept whole."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for c in value:
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (c == "," or c.isspace()):
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(c)
    if cur:
        out.append("".join(cur))
    return out


def inline_entries(body: str) -> Iterator[tuple[str, str]]:
    """`{ key = value, { key = a, b } }` -> (key, value)."""
    inner = body.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    depth = 0
    cur: list[str] = []
    items: list[str] = []
    for c in inner:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    items.append("".join(cur))
    for item in items:
        item = item.strip()
        if item.startswith("{") and item.endswith("}"):
            item = item[1:-1]
        key, sep, value = item.partition("=")
        if sep and key.strip():
            yield key.strip(), value.strip()


def text_pairs(text: str) -> list[tuple[str, str]]:
    """A texthash:/source table file -> (key, value) pairs."""
    pairs = []
    for line in logical_lines(text):
        parts = line.split(None, 1)
        key = parts[0].rstrip(":") if parts else ""
        if key:
            pairs.append((key, parts[1] if len(parts) > 1 else ""))
    return pairs


def map_leaves(spec: str, depth: int = 0) -> list[MapLeaf]:
    """How to read each map `spec` stands for (proxy:/unionmap: unwrapped)."""
    kind, sep, rest = spec.partition(":")
    kind = kind.lower()
    if not sep:
        return [MapLeaf(spec, UNREADABLE, detail="not a type:name map")]
    if kind in ("proxy", "unionmap") and depth < MAX_NESTING:  # pipemap: not a list of maps
        inner = [rest] if kind == "proxy" else split_map_list(rest.strip()[1:-1]
                                                              if rest.strip().startswith("{")
                                                              else rest)
        return [leaf for i in inner for leaf in map_leaves(i, depth + 1)]
    if kind in DUMPABLE:
        return [MapLeaf(spec, POSTMAP)]
    if kind == "texthash":
        return [MapLeaf(spec, TEXTHASH, path=rest)]
    if kind == "inline":
        return [MapLeaf(spec, PAIRS, pairs=tuple(inline_entries(rest)))]
    if kind == "static":
        value = rest.strip()
        value = value[1:-1] if value.startswith("{") and value.endswith("}") else value
        return [MapLeaf(spec, PAIRS, pairs=(("*", value),))]
    return [MapLeaf(spec, UNREADABLE,
                    detail=f"map type {kind} cannot be listed; check it with its own tools")]


def unreadable(param: str, spec: str, detail: str) -> AuditFinding:
    return AuditFinding(NOT_INSPECTABLE, param, spec, detail=detail)


def pair_findings(param: str, spec: str, pairs: Sequence[tuple[str, str]], names: Names,
                  s: ForwardSettings, read_include: ReadInclude) -> list[AuditFinding]:
    """The entries of one map -> forwards from a local mailbox to a private address."""
    out = []
    for key, value in pairs:
        if key in INTERNAL_KEYS:
            continue
        if key == "*":
            mailbox = f"*@{names.myorigin} (every address)"
        elif key.startswith("@"):
            mailbox = key  # a catch-all for a whole domain
        else:
            mailbox = names.full(key)
        if key != "*" and not is_local(mailbox, s):  # "@domain" classifies by its domain
            continue
        for target, note in expand_targets(value, names, read_include):
            if is_private(target, s):
                out.append(AuditFinding(FORWARD, param, spec, mailbox.lower(), target.lower(),
                                        detail=note))
    return out


def postfix_names(myorigin: str, s: ForwardSettings) -> Names:
    """Bare alias names get $myorigin (postconf's value), else our first local domain."""
    return Names(myorigin.strip().lower() or (s.local_domains[0] if s.local_domains
                                              else "localhost"))


def postconf_values(names: Sequence[str], stdout: str) -> dict[str, str] | None:
    """`postconf -hx NAME...` output -> {name: value}; None when the line count is off."""
    values = stdout.splitlines()
    if len(values) != len(names):
        return None
    return dict(zip(names, values, strict=True))


def postmap_pairs(stdout: str) -> list[tuple[str, str]]:
    """`postmap -s` output ("key<TAB>value" lines) -> (key, value) pairs."""
    pairs = []
    for line in stdout.splitlines():
        key, _, value = line.partition("\t")
        pairs.append((key.rstrip(":"), value))
    return pairs


def postmap_error(stderr: str) -> str:
    """Why `postmap -s` failed, in its own words (its last fatal line)."""
    err = [ln for ln in stderr.splitlines() if "fatal" in ln] or stderr.splitlines()
    return err[-1].strip() if err else "postmap -s failed"
