"""The audit's only contact with the system: `postconf`/`postmap` subprocesses, globbing
and reading files (capped). Everything it reads goes to the pure parsers."""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator, Sequence

from mailwarden.audit import postfix_maps as maps
from mailwarden.audit.aliases import Names
from mailwarden.audit.findings import (
    NOT_INSPECTABLE,
    AuditError,
    AuditFinding,
    owner_from_path,
)
from mailwarden.audit.forward_files import forward_file_findings
from mailwarden.audit.sieve import sieve_findings
from mailwarden.rules.forwarding import ForwardSettings

MAX_FILE = 1024 * 1024  # bytes read from one .forward / Sieve / texthash / :include: file


def read_text(path: str) -> str:
    """At most MAX_FILE bytes of `path`, as UTF-8 (undecodable bytes replaced)."""
    with open(path, "rb") as f:
        return f.read(MAX_FILE).decode("utf-8", "replace")


def read_include(path: str) -> str | None:
    """An `:include:` file's text, or None when it cannot be read."""
    try:
        return read_text(path)
    except OSError:
        return None


class Postfix:
    """`postconf -c DIR` and `postmap -c DIR` of one Postfix configuration."""

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
        values = maps.postconf_values(names, out.stdout)
        if values is None:
            raise AuditError(f"postconf -c {self.dir}: unexpected output {out.stdout!r}")
        return values

    def dump(self, spec: str) -> list[tuple[str, str]] | str:
        """(key, value) pairs of a map postmap can list, or the reason it cannot."""
        try:
            out = subprocess.run([self.postmap_bin, "-c", self.dir, "-s", spec],
                                 capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"postmap: {e}"
        if out.returncode != 0:
            return maps.postmap_error(out.stderr)
        return maps.postmap_pairs(out.stdout)


def _leaf_findings(param: str, leaf: maps.MapLeaf, pf: Postfix, names: Names,
                   s: ForwardSettings) -> list[AuditFinding]:
    pairs: Sequence[tuple[str, str]]
    if leaf.how == maps.POSTMAP:
        dumped = pf.dump(leaf.spec)
        if isinstance(dumped, str):
            return [maps.unreadable(param, leaf.spec, dumped)]
        pairs = dumped
    elif leaf.how == maps.TEXTHASH:
        try:
            pairs = maps.text_pairs(read_text(leaf.path))
        except OSError as e:
            return [maps.unreadable(param, leaf.spec, str(e))]
    elif leaf.how == maps.PAIRS:
        pairs = leaf.pairs
    else:
        return [maps.unreadable(param, leaf.spec, leaf.detail)]
    return maps.pair_findings(param, leaf.spec, pairs, names, s, read_include)


def audit_postfix(s: ForwardSettings, config_dir: str, *, postconf: str = "postconf",
                  postmap: str = "postmap", timeout_s: float = 30.0) -> list[AuditFinding]:
    pf = Postfix(config_dir, postconf, postmap, timeout_s)
    p = pf.params("virtual_alias_maps", "alias_maps", "myorigin")
    names = maps.postfix_names(p["myorigin"], s)
    out: list[AuditFinding] = []
    for param in ("virtual_alias_maps", "alias_maps"):
        for spec in maps.split_map_list(p[param]):
            for leaf in maps.map_leaves(spec):
                out += _leaf_findings(param, leaf, pf, names, s)
    return out


def files(patterns: Sequence[str], directory_suffixes: tuple[str, ...] = ()
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
    for path, pattern in files(patterns):
        owner = owner_from_path(path, pattern, s)
        try:
            text = read_text(path)
        except OSError as e:
            out.append(AuditFinding(NOT_INSPECTABLE, ".forward", path, detail=str(e)))
            continue
        out += forward_file_findings(path, text, owner, s, read_include)
    return out


def audit_sieve(s: ForwardSettings, patterns: Sequence[str]) -> list[AuditFinding]:
    out = []
    for path, pattern in files(patterns, (".sieve",)):
        owner = owner_from_path(path, pattern, s)
        try:
            text = read_text(path)
        except OSError as e:
            out.append(AuditFinding(NOT_INSPECTABLE, "sieve", path, detail=str(e)))
            continue
        out += sieve_findings(path, text, owner, s)
    return out


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


def has_main_cf(config_dir: str) -> bool:
    return os.path.isfile(os.path.join(config_dir, "main.cf"))
