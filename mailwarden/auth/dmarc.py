"""DMARC (RFC 7489): the From: domain's policy, alignment of SPF and DKIM with it.

The organizational domain (RFC 7489 3.2) needs the public suffix list. Nothing
is downloaded: `PublicSuffixes.load(path)` reads a local copy in the Mozilla
format (Debian's `publicsuffix` package installs
/usr/share/publicsuffix/public_suffix_list.dat); without one, a small built-in
list covers the generic rule (the last label is the suffix) and the
multi-label suffixes mail here most often meets (gov.vn, com.vn, co.uk, ...).
A domain under a suffix the built-in list lacks gets a too-short organizational
domain, which only makes relaxed alignment stricter than it should be, and can
find the DMARC record of the suffix's registry instead of none (docs/authentication.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailwarden.auth.dns import Lookup, Status
from mailwarden.auth.results import DkimCheck, DmarcCheck, Result, SpfCheck

DEFAULT_PSL_PATH = Path("/usr/share/publicsuffix/public_suffix_list.dat")

_BUILTIN_SUFFIXES = (
    # Viet Nam (VNNIC second-level domains)
    "com.vn", "net.vn", "org.vn", "edu.vn", "gov.vn", "ac.vn", "biz.vn", "info.vn",
    "int.vn", "name.vn", "pro.vn", "health.vn",
    # common elsewhere
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk",
    "com.au", "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "govt.nz",
    "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "co.kr", "or.kr", "go.kr", "ac.kr",
    "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "com.tw", "org.tw", "gov.tw",
    "com.hk", "org.hk", "gov.hk", "com.sg", "edu.sg", "gov.sg", "com.my", "gov.my",
    "co.th", "ac.th", "go.th", "in.th", "co.id", "go.id", "ac.id", "or.id",
    "com.ph", "gov.ph", "com.kh", "gov.kh", "com.la", "gov.la", "co.in", "gov.in",
    "ac.in", "net.in", "org.in", "com.br", "gov.br", "com.mx", "com.ar", "co.za",
    "com.tr", "gov.tr", "com.ru", "com.ua", "co.il", "com.sa", "gov.sa", "ac.ae",
    "co.ae", "gov.ae", "eu.com", "us.com", "uk.com",
)


class PublicSuffixes:
    """Public suffix rules: plain, wildcard (*.ck) and exceptions (!www.ck)."""

    def __init__(self, rules: Sequence[str], source: str = "built-in") -> None:
        self.source = source
        self.plain: set[str] = set()
        self.wild: set[str] = set()
        self.exceptions: set[str] = set()
        for raw in rules:
            rule = _ascii(raw.strip().lower().rstrip("."))
            if not rule:
                continue
            if rule.startswith("!"):
                self.exceptions.add(rule[1:])
            elif rule.startswith("*."):
                self.wild.add(rule[2:])
            else:
                self.plain.add(rule)

    @classmethod
    def builtin(cls) -> PublicSuffixes:
        return cls(_BUILTIN_SUFFIXES)

    @classmethod
    def load(cls, path: Path) -> PublicSuffixes:
        """Read a public_suffix_list.dat; OSError/ValueError say what is wrong."""
        text = path.read_text(encoding="utf-8")
        rules = [line.split()[0] for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("//")]
        if len(rules) < 100:
            raise ValueError(f"{path}: only {len(rules)} rules, not a public suffix list")
        return cls(rules, str(path))

    @classmethod
    def from_setting(cls, path: str) -> PublicSuffixes:
        """"" = Debian's list when installed, else built-in; a path = that file, or an error."""
        if path:
            return cls.load(Path(path))
        if DEFAULT_PSL_PATH.is_file():
            return cls.load(DEFAULT_PSL_PATH)
        return cls.builtin()

    def suffix_length(self, labels: list[str]) -> int:
        """How many trailing labels form the public suffix (at least 1)."""
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in self.exceptions:
                return len(labels) - i - 1
            if candidate in self.plain:
                return len(labels) - i
            if i + 1 < len(labels) and ".".join(labels[i + 1:]) in self.wild:
                return len(labels) - i
        return 1

    def organizational_domain(self, domain: str) -> str:
        labels = [x for x in domain.lower().rstrip(".").split(".") if x]
        if not labels:
            return ""
        n = self.suffix_length(labels)
        return ".".join(labels[-min(len(labels), n + 1):])


def _ascii(rule: str) -> str:
    try:
        rule.encode("ascii")
        return rule
    except UnicodeEncodeError:
        prefix = "!" if rule.startswith("!") else "*." if rule.startswith("*.") else ""
        body = rule[len(prefix):]
        try:
            return prefix + body.encode("idna").decode("ascii")
        except UnicodeError:
            return ""


@dataclass(frozen=True)
class DmarcRecord:
    p: str
    sp: str = ""
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


_POLICIES = ("none", "quarantine", "reject")


class DmarcSyntaxError(ValueError):
    """A DMARC record (v=DMARC1) with a malformed tag: DMARC permerror."""


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC TXT record, or None when it is not one (RFC 7489 6.3, 6.6.3).
    Raises DmarcSyntaxError for a DMARC record with a malformed pct=."""
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if i == 0:
            if key != "v" or value != "DMARC1":
                return None
            continue
        if sep and key and key not in tags:
            tags[key] = value
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        if "rua" not in tags:
            return None
        p = "none"  # RFC 7489 6.6.3: a bad p= with a valid rua= is treated as p=none
    sp = tags.get("sp", "").lower()
    pct_s = tags.get("pct", "100")
    # pct must be 1-3 ASCII digits: str.isdigit() accepts other scripts' digits, and int()
    # of a 5,001-digit value raises (int_max_str_digits). Bad DNS data is a permerror,
    # never an exception; a well-formed value over 100 is ignored (100).
    if not (pct_s.isascii() and pct_s.isdigit() and len(pct_s) <= 3):
        raise DmarcSyntaxError(f"pct={pct_s[:20]!r} is not a percentage")
    pct = int(pct_s) if int(pct_s) <= 100 else 100
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(p, sp if sp in _POLICIES else "", pct,
                       adkim if adkim in ("r", "s") else "r",
                       aspf if aspf in ("r", "s") else "r")


def aligned(a: str, b: str, mode: str, psl: PublicSuffixes) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return psl.organizational_domain(a) == psl.organizational_domain(b)


_Fetched = tuple[Status, DmarcRecord | None, str, bool]  # ..., malformed (permerror)


def _fetch(lookup: Lookup, domain: str) -> _Fetched:
    answer = lookup.query(f"_dmarc.{domain}", "TXT")
    if answer.status is not Status.FOUND:
        return answer.status, None, answer.error, False
    texts = [t.decode("ascii", "replace") for t in answer.texts()]
    try:
        records = [r for r in (parse_record(t) for t in texts) if r is not None]
    except DmarcSyntaxError as e:
        return Status.FOUND, None, f"malformed DMARC record: {e}", True
    if len(records) != 1:  # none, or several: no policy (RFC 7489 6.6.3)
        return Status.NONE, None, f"{len(records)} DMARC records", False
    return Status.FOUND, records[0], "", False


def _downgrade(policy: str) -> str:
    return {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")


def evaluate_dmarc(lookup: Lookup, from_domains: Sequence[str], spf: SpfCheck | None,
                   dkim: Sequence[DkimCheck], psl: PublicSuffixes, *,
                   rand: Callable[[], float] = random.random) -> DmarcCheck | None:
    """DMARC for the message's From: domain; None when there is no From: domain.

    A failure that a DNS temperror may have caused (no aligned pass, and an
    aligned SPF or DKIM check ended in temperror) is a DMARC temperror, so a
    p=reject is never applied because DNS was slow.
    """
    distinct = list(dict.fromkeys(d.lower() for d in from_domains if d))
    if not distinct:
        return None
    if len(distinct) > 1:
        return DmarcCheck(Result.PERMERROR, distinct[0],
                          reason="several From: domains")
    from_domain = distinct[0]
    org = psl.organizational_domain(from_domain)
    status, record, error, malformed = _fetch(lookup, from_domain)
    policy_domain = from_domain
    if status is Status.NONE and org and org != from_domain:
        status, record, error, malformed = _fetch(lookup, org)
        policy_domain = org
    if malformed:
        return DmarcCheck(Result.PERMERROR, from_domain, policy_domain, reason=error)
    if status is Status.TEMPERROR:
        return DmarcCheck(Result.TEMPERROR, from_domain, policy_domain,
                          reason=f"DNS {error}")
    if record is None:
        return DmarcCheck(Result.NONE, from_domain, reason="no DMARC record")

    spf_ok = spf is not None and spf.result is Result.PASS and \
        aligned(spf.domain, from_domain, record.aspf, psl)
    dkim_ok = any(k.result is Result.PASS and aligned(k.domain, from_domain, record.adkim, psl)
                  for k in dkim)
    policy = record.sp if policy_domain != from_domain and record.sp else record.p
    if spf_ok or dkim_ok:
        return DmarcCheck(Result.PASS, from_domain, policy_domain, policy, "none",
                          spf_ok, dkim_ok)
    maybe_dns = (spf is not None and spf.result is Result.TEMPERROR and
                 aligned(spf.domain, from_domain, record.aspf, psl)) or \
        any(k.result is Result.TEMPERROR and aligned(k.domain, from_domain, record.adkim, psl)
            for k in dkim)
    if maybe_dns:
        return DmarcCheck(Result.TEMPERROR, from_domain, policy_domain, policy, "none",
                          reason="SPF or DKIM temperror")
    disposition = policy
    if record.pct < 100 and rand() * 100 >= record.pct:
        disposition = _downgrade(policy)  # RFC 7489 6.6.4: outside the sampled pct
    return DmarcCheck(Result.FAIL, from_domain, policy_domain, policy, disposition,
                      reason="no aligned SPF or DKIM pass")
