"""`mailwarden forwarding audit`: every configured forward from a local mailbox
to a private address that can be found in the configuration (Dieu 4.5).

Forwards made by Postfix itself (virtual_alias_maps, alias_maps, .forward)
never pass a milter before rewriting, and Sieve `redirect` rules are only
seen when they fire. This lists them ahead of time, so operators can run it
from cron or from the CI of their configuration:

    mailwarden forwarding audit [--postfix-config DIR] [--forward-files GLOB]
                                [--sieve GLOB] [--json] [--strict]

Exit 0: nothing found; 1: at least one forward (or, with --strict, a source
that could not be inspected); 2: usage or Postfix configuration error.

Sources:
* Postfix `virtual_alias_maps` and `alias_maps`, read with `postconf -c DIR`;
  maps of the types `postmap -s` can list (hash, btree, lmdb, cdb, dbm, sdbm)
  are listed with it, `texthash:` files and `inline:`/`static:` values are
  read directly, `proxy:`/`unionmap:` are unwrapped. Other types (ldap,
  mysql, pgsql, sqlite, regexp, pcre, tcp, pipemap, ...) are reported as not
  inspectable.
* `.forward` files (globs from config), including `:include:` files.
* Sieve scripts with `redirect` (globs of files or directories of scripts).
The first `*` of a glob names the mailbox owner (`/home/*/.forward`).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mailwarden.addresses import AddressClass
from mailwarden.rules.forwarding import EXTERNAL_AUTO, ForwardSettings
from mailwarden.settings import AuditSettings

FORWARD = "forward"
NOT_INSPECTABLE = "not-inspectable"

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2

DUMPABLE = ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm")
_MAX_FILE = 1024 * 1024  # bytes read from one .forward / Sieve / texthash file
_MAX_INCLUDE_DEPTH = 3
_INTERNAL_KEYS = ("@", "YP_LAST_MODIFIED", "YP_MASTER_NAME")

# Sieve tags of `redirect` that take an argument (RFC 6009 DSN, RFC 6134 :list).
_TAGS_WITH_ARGUMENT = frozenset({":notify", ":ret", ":by", ":bymode", ":bytimeabsolute",
                                 ":bytimerelative", ":list"})


class AuditError(Exception):
    """The audit cannot run (bad Postfix config directory, postconf missing)."""


@dataclass(frozen=True)
class AuditFinding:
    kind: str  # FORWARD | NOT_INSPECTABLE
    source: str  # "virtual_alias_maps", "alias_maps", ".forward", "sieve"
    location: str  # "hash:/etc/postfix/virtual", "/home/bob/.forward:2"
    mailbox: str = ""  # the local mailbox that forwards ("" when not inspectable)
    target: str = ""  # the private address it forwards to
    rule: str = EXTERNAL_AUTO
    detail: str = ""  # "redirect :copy", why a source is not inspectable, ...

    def line(self) -> str:
        if self.kind == NOT_INSPECTABLE:
            return f"not inspectable: {self.location} ({self.source}): {self.detail}"
        extra = f" {self.detail}" if self.detail else ""
        return (f"{self.rule}: {self.mailbox} -> {self.target}  "
                f"[{self.source} {self.location}{extra}]")


# -- addresses ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Names:
    """How bare names become addresses: Postfix appends $myorigin."""

    myorigin: str

    def full(self, name: str) -> str:
        name = name.strip().strip('"').lstrip("\\")
        return name if "@" in name else f"{name}@{self.myorigin}"


def _is_private(address: str, s: ForwardSettings) -> bool:
    return s.classify(address) is AddressClass.PRIVATE


def _is_local(address: str, s: ForwardSettings) -> bool:
    return s.classify(address) is AddressClass.LOCAL


def split_targets(value: str) -> list[str]:
    """Alias/.forward right-hand side -> entries (commas or spaces; quotes kept whole)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for c in value:
        if c == '"':
            quoted = not quoted
            cur.append(c)
        elif not quoted and (c == "," or c.isspace()):
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if cur:
        out.append("".join(cur))
    return [e for e in out if e]


def _expand_targets(value: str, names: _Names, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(address, note) for every address a right-hand side sends to; :include: files read."""
    for entry in split_targets(value):
        if entry.startswith(("|", '"|')) or entry.startswith(("/", '"/')):
            continue  # a command or a file: delivered here
        if entry.lower().startswith(":include:"):
            path = entry[len(":include:"):]
            if depth >= _MAX_INCLUDE_DEPTH:
                continue
            try:
                text = _read(Path(path))
            except OSError:
                continue
            for line in _logical_lines(text):
                for addr, note in _expand_targets(line, names, depth + 1):
                    yield addr, note or f"via :include:{path}"
            continue
        yield names.full(entry), ""


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(_MAX_FILE).decode("utf-8", "replace")


def _logical_lines(text: str) -> Iterator[str]:
    """Postfix table syntax: '#' comment lines, leading whitespace continues a line."""
    cur = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and cur:
            cur += " " + line.strip()
            continue
        if cur:
            yield cur
        cur = line.strip()
    if cur:
        yield cur


# -- Postfix maps -------------------------------------------------------------------------
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


def _inline_entries(body: str) -> Iterator[tuple[str, str]]:
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


class _Postfix:
    def __init__(self, config_dir: str, postconf: str, postmap: str, timeout_s: float) -> None:
        self.dir = config_dir
        self.postconf_bin = postconf
        self.postmap_bin = postmap
        self.timeout_s = timeout_s

    def params(self, *names: str) -> dict[str, str]:
        try:
            out = subprocess.run([self.postconf_bin, "-c", self.dir, "-hx", *names],
                                 capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AuditError(f"postconf: {e}") from None
        if out.returncode != 0:
            err = out.stderr.strip().splitlines()
            raise AuditError(f"postconf -c {self.dir}: {err[-1] if err else 'failed'}")
        values = out.stdout.splitlines()
        if len(values) != len(names):
            raise AuditError(f"postconf -c {self.dir}: unexpected output {out.stdout!r}")
        return dict(zip(names, values, strict=True))

    def dump(self, spec: str) -> list[tuple[str, str]] | str:
        """(key, value) pairs of a map postmap can list, or the reason it cannot."""
        try:
            out = subprocess.run([self.postmap_bin, "-c", self.dir, "-s", spec],
                                 capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"postmap: {e}"
        if out.returncode != 0:
            err = [ln for ln in out.stderr.splitlines() if "fatal" in ln] or \
                out.stderr.splitlines()
            return err[-1].strip() if err else "postmap -s failed"
        pairs = []
        for line in out.stdout.splitlines():
            key, _, value = line.partition("\t")
            pairs.append((key.rstrip(":"), value))
        return pairs


def _text_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in _logical_lines(text):
        parts = line.split(None, 1)
        key = parts[0].rstrip(":") if parts else ""
        if key:
            pairs.append((key, parts[1] if len(parts) > 1 else ""))
    return pairs


def _map_findings(param: str, spec: str, pf: _Postfix, names: _Names, s: ForwardSettings,
                  depth: int = 0) -> list[AuditFinding]:
    kind, sep, rest = spec.partition(":")
    kind = kind.lower()
    if not sep:
        return [AuditFinding(NOT_INSPECTABLE, param, spec, detail="not a type:name map")]
    if kind in ("proxy", "unionmap") and depth < 4:  # pipemap chains: not a list of maps
        inner = [rest] if kind == "proxy" else split_map_list(rest.strip()[1:-1]
                                                              if rest.strip().startswith("{")
                                                              else rest)
        return [f for i in inner for f in _map_findings(param, i, pf, names, s, depth + 1)]
    pairs: list[tuple[str, str]]
    if kind in DUMPABLE:
        dumped = pf.dump(spec)
        if isinstance(dumped, str):
            return [AuditFinding(NOT_INSPECTABLE, param, spec, detail=dumped)]
        pairs = dumped
    elif kind == "texthash":
        try:
            pairs = _text_pairs(_read(Path(rest)))
        except OSError as e:
            return [AuditFinding(NOT_INSPECTABLE, param, spec, detail=str(e))]
    elif kind == "inline":
        pairs = list(_inline_entries(rest))
    elif kind == "static":
        value = rest.strip()
        value = value[1:-1] if value.startswith("{") and value.endswith("}") else value
        pairs = [("*", value)]
    else:
        return [AuditFinding(NOT_INSPECTABLE, param, spec,
                             detail=f"map type {kind} cannot be listed; check it with its own "
                             "tools")]
    return _pair_findings(param, spec, pairs, names, s)


def _pair_findings(param: str, spec: str, pairs: Sequence[tuple[str, str]], names: _Names,
                   s: ForwardSettings) -> list[AuditFinding]:
    out = []
    for key, value in pairs:
        if key in _INTERNAL_KEYS:
            continue
        if key == "*":
            mailbox = f"*@{names.myorigin} (every address)"
        elif key.startswith("@"):
            mailbox = key  # a catch-all for a whole domain
        else:
            mailbox = names.full(key)
        if key != "*" and not _is_local(mailbox, s):  # "@domain" classifies by its domain
            continue
        for target, note in _expand_targets(value, names):
            if _is_private(target, s):
                out.append(AuditFinding(FORWARD, param, spec, mailbox.lower(), target.lower(),
                                        detail=note))
    return out


def audit_postfix(s: ForwardSettings, config_dir: str, *, postconf: str = "postconf",
                  postmap: str = "postmap", timeout_s: float = 30.0) -> list[AuditFinding]:
    pf = _Postfix(config_dir, postconf, postmap, timeout_s)
    p = pf.params("virtual_alias_maps", "alias_maps", "myorigin")
    names = _Names(p["myorigin"].strip().lower() or (s.local_domains[0] if s.local_domains
                                                     else "localhost"))
    out: list[AuditFinding] = []
    for param in ("virtual_alias_maps", "alias_maps"):
        for spec in split_map_list(p[param]):
            out += _map_findings(param, spec, pf, names, s)
    return out


# -- .forward and Sieve -------------------------------------------------------------------
def owner_from_path(path: str, pattern: str, s: ForwardSettings) -> str:
    """The mailbox a file belongs to: a local domain directory followed by the user
    (/var/vmail/ninhbinh.gov.vn/alice/...), else the part the glob's first wildcard
    matched (/home/*/.forward), with the first local domain appended."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part.lower() in s.local_domains:
            return f"{parts[i + 1]}@{part}".lower()
    pparts = Path(pattern).parts
    for i, pp in enumerate(pparts):
        if any(c in pp for c in "*?[") and i < len(parts) and fnmatch.fnmatch(parts[i], pp):
            user = parts[i]
            head, star, tail = pp.partition("*")
            if star and not any(c in head + tail for c in "*?["):  # "*.sieve" -> the name
                user = user[len(head):len(user) - len(tail)]
            break
    else:
        user = Path(path).parent.name
    domain = s.local_domains[0] if s.local_domains else "localhost"
    return user.lower() if "@" in user else f"{user}@{domain}".lower()


def _files(patterns: Sequence[str], directory_suffixes: tuple[str, ...] = ()
           ) -> Iterator[tuple[str, str]]:
    """(path, pattern) for every regular file a pattern matches, each real file once.
    A matched directory contributes its files ending in `directory_suffixes`."""
    seen: set[str] = set()
    for pattern in patterns:
        for match in sorted(glob.glob(pattern)):
            candidates = [match]
            if os.path.isdir(match):
                candidates = sorted(os.path.join(match, n) for n in os.listdir(match)
                                    if n.endswith(directory_suffixes)) \
                    if directory_suffixes else []
            for c in candidates:
                real = os.path.realpath(c)
                if real in seen or not os.path.isfile(real):
                    continue
                seen.add(real)
                yield c, pattern


def audit_forward_files(s: ForwardSettings, patterns: Sequence[str]) -> list[AuditFinding]:
    out = []
    for path, pattern in _files(patterns):
        owner = owner_from_path(path, pattern, s)
        names = _Names(owner.split("@", 1)[1])
        try:
            text = _read(Path(path))
        except OSError as e:
            out.append(AuditFinding(NOT_INSPECTABLE, ".forward", path, detail=str(e)))
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for target, note in _expand_targets(line, names):
                if _is_private(target, s):
                    out.append(AuditFinding(FORWARD, ".forward", f"{path}:{number}", owner,
                                            target.lower(), detail=note))
    return out


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


def audit_sieve(s: ForwardSettings, patterns: Sequence[str]) -> list[AuditFinding]:
    out = []
    for path, pattern in _files(patterns, (".sieve",)):
        owner = owner_from_path(path, pattern, s)
        try:
            text = _read(Path(path))
        except OSError as e:
            out.append(AuditFinding(NOT_INSPECTABLE, "sieve", path, detail=str(e)))
            continue
        for r in sieve_redirects(text):
            how = " ".join(("redirect", *r.tags))
            if r.problem:
                out.append(AuditFinding(NOT_INSPECTABLE, "sieve", f"{path}:{r.line}",
                                        owner, detail=r.problem))
            elif _is_private(r.address, s):
                out.append(AuditFinding(FORWARD, "sieve", f"{path}:{r.line}", owner,
                                        r.address.lower(), detail=how))
    return out


# -- the command --------------------------------------------------------------------------
def audit(s: ForwardSettings, *, postconf_dir: str | None,
          forward_globs: Sequence[str] = (), sieve_globs: Sequence[str] = (),
          postconf: str = "postconf", postmap: str = "postmap",
          timeout_s: float = 30.0) -> list[AuditFinding]:
    """Every forward from a local mailbox to a private address, and every source
    that could not be inspected. Raises AuditError when Postfix's config cannot be read."""
    out: list[AuditFinding] = []
    if postconf_dir:
        out += audit_postfix(s, postconf_dir, postconf=postconf, postmap=postmap,
                             timeout_s=timeout_s)
    out += audit_forward_files(s, forward_globs)
    out += audit_sieve(s, sieve_globs)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postfix-config", metavar="DIR",
                        help="Postfix config directory read with postconf -c "
                        "(default: forwarding.postfix_config_dir)")
    parser.add_argument("--no-postfix", action="store_true", help="skip the Postfix maps")
    parser.add_argument("--forward-files", action="append", metavar="GLOB",
                        help=".forward files (repeat; default: forwarding.forward_files)")
    parser.add_argument("--sieve", action="append", metavar="GLOB",
                        help="Sieve scripts or directories of them (repeat; default: "
                        "forwarding.sieve_scripts)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--strict", action="store_true",
                        help="a source that could not be inspected also exits 1")


def main(args: argparse.Namespace, s: ForwardSettings, where: AuditSettings) -> int:
    """Exit 0 nothing found, 1 forwards found (or uninspectable with --strict), 2 usage."""
    if not s.local_domains:
        print("mailwarden: forwarding audit: no local domains configured", file=sys.stderr)
        return EXIT_USAGE
    postconf_dir = None if args.no_postfix else (
        args.postfix_config or where.postfix_config_dir)
    forward_globs = args.forward_files if args.forward_files is not None else \
        list(where.forward_files)
    sieve_globs = args.sieve if args.sieve is not None else \
        list(where.sieve_scripts)
    if postconf_dir and not os.path.isfile(os.path.join(postconf_dir, "main.cf")):
        print(f"mailwarden: forwarding audit: {postconf_dir}/main.cf: no such file "
              "(use --postfix-config DIR or --no-postfix)", file=sys.stderr)
        return EXIT_USAGE
    try:
        findings = audit(s, postconf_dir=postconf_dir or None, forward_globs=forward_globs,
                         sieve_globs=sieve_globs)
    except AuditError as e:
        print(f"mailwarden: forwarding audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    forwards = [f for f in findings if f.kind == FORWARD]
    blind = [f for f in findings if f.kind == NOT_INSPECTABLE]
    citation = s.citation
    if args.json:
        print(json.dumps({"citation": citation, "forwards": [asdict(f) for f in forwards],
                          "not_inspectable": [asdict(f) for f in blind]}, indent=2))
    else:
        for f in forwards + blind:
            print(f.line())
        cite = f" ({citation})" if citation else ""
        print(f"{len(forwards)} automatic forward(s) from a local mailbox to a private "
              f"address{cite}; {len(blind)} source(s) not inspectable")
    if forwards or (args.strict and blind):
        return EXIT_FOUND
    return EXIT_OK
