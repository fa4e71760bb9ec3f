"""DMARC: record parsing, organizational domains, alignment, policy and pct."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.auth.dmarc import (
    DEFAULT_PSL_PATH,
    DmarcRecord,
    PublicSuffixes,
    aligned,
    evaluate_dmarc,
    parse_record,
)
from mailwarden.auth.dns import StaticLookup, Status
from mailwarden.auth.results import DkimCheck, Result, SpfCheck


@pytest.mark.parametrize(("text", "expected"), [
    ("v=DMARC1; p=reject", DmarcRecord("reject")),
    ("v=DMARC1;p=quarantine;sp=none;pct=25;adkim=s;aspf=s",
     DmarcRecord("quarantine", "none", 25, "s", "s")),
    ("v=DMARC1; p=None; rua=mailto:d@example.org", DmarcRecord("none")),
    ("v=DMARC1; p=bogus; rua=mailto:d@example.org", DmarcRecord("none")),  # 6.6.3
    ("v=DMARC1; p=bogus", None),
    ("v=DMARC1; rua=mailto:d@example.org", DmarcRecord("none")),
    ("v=DMARC1", None),
    ("p=reject; v=DMARC1", None),  # v= must come first
    ("v=spf1 -all", None),
    ("v=DMARC1; p=reject; pct=150; adkim=x; sp=all", DmarcRecord("reject")),
    ("v=DMARC1; p=reject; pct=0", DmarcRecord("reject", pct=0)),
], ids=lambda v: str(v))
def test_record_parsing(text: str, expected: DmarcRecord | None) -> None:
    assert parse_record(text) == expected


BUILTIN = PublicSuffixes.builtin()


@pytest.mark.parametrize(("domain", "org"), [
    ("ninhbinh.gov.vn", "ninhbinh.gov.vn"),
    ("skhcn.ninhbinh.gov.vn", "ninhbinh.gov.vn"),
    ("a.b.skhcn.ninhbinh.gov.vn.", "ninhbinh.gov.vn"),
    ("mail.google.com", "google.com"),
    ("GMAIL.COM", "gmail.com"),
    ("news.bbc.co.uk", "bbc.co.uk"),
    ("gov.vn", "gov.vn"),  # a suffix is its own organizational domain
    ("localhost", "localhost"),
    ("", ""),
])
def test_organizational_domain_with_the_builtin_list(domain: str, org: str) -> None:
    assert BUILTIN.organizational_domain(domain) == org


def test_wildcard_and_exception_rules() -> None:
    psl = PublicSuffixes(["ck", "*.ck", "!www.ck", "com", "*.kawasaki.jp", "jp",
                          "公司.cn", "cn"])
    assert psl.organizational_domain("a.b.example.ck") == "b.example.ck"
    assert psl.organizational_domain("mail.www.ck") == "www.ck"
    assert psl.organizational_domain("x.city.kawasaki.jp") == "x.city.kawasaki.jp"
    assert psl.organizational_domain("shop.example.xn--55qx5d.cn") == "example.xn--55qx5d.cn"


def test_loading_a_list_file(tmp_path: Path) -> None:
    path = tmp_path / "psl.dat"
    rules = [f"s{i}.example" for i in range(150)] + ["example", "// comment", "", "*.w.example"]
    path.write_text("\n".join(rules))
    psl = PublicSuffixes.load(path)
    assert psl.source == str(path)
    assert psl.organizational_domain("a.b.s7.example") == "b.s7.example"
    assert psl.organizational_domain("a.b.c.w.example") == "b.c.w.example"
    short = tmp_path / "short.dat"
    short.write_text("com\nnet\n")
    with pytest.raises(ValueError, match="not a public suffix list"):
        PublicSuffixes.load(short)
    with pytest.raises(FileNotFoundError):
        PublicSuffixes.from_setting(str(tmp_path / "missing.dat"))


def test_default_setting_uses_debians_list_when_installed() -> None:
    psl = PublicSuffixes.from_setting("")
    if DEFAULT_PSL_PATH.is_file():
        assert psl.source == str(DEFAULT_PSL_PATH)
        assert psl.organizational_domain("a.blogspot.com") == "a.blogspot.com"
    else:
        assert psl.source == "built-in"
    assert psl.organizational_domain("skhcn.ninhbinh.gov.vn") == "ninhbinh.gov.vn"


@pytest.mark.parametrize(("a", "b", "mode", "expected"), [
    ("example.org", "example.org", "s", True),
    ("mail.example.org", "example.org", "s", False),
    ("mail.example.org", "example.org", "r", True),
    ("mail.example.org", "news.example.org", "r", True),
    ("example.org", "example.com", "r", False),
    ("a.gov.vn", "b.gov.vn", "r", False),  # different organizations under one suffix
    ("", "example.org", "r", False),
])
def test_alignment(a: str, b: str, mode: str, expected: bool) -> None:
    assert aligned(a, b, mode, BUILTIN) is expected


def spf(result: Result, domain: str) -> SpfCheck:
    return SpfCheck(result, "mailfrom", domain, f"bounce@{domain}", "h.example")


def dkim(result: Result, domain: str) -> DkimCheck:
    return DkimCheck(result, domain, "sel", "rsa-sha256")


ZONE = {
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject"],
    ("_dmarc.strict.example", "TXT"): ["v=DMARC1; p=reject; adkim=s; aspf=s"],
    ("_dmarc.parent.example", "TXT"): ["v=DMARC1; p=none; sp=reject"],
    ("_dmarc.sampled.example", "TXT"): ["v=DMARC1; p=reject; pct=10"],
    ("_dmarc.twice.example", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    ("_dmarc.slow.example", "TXT"): Status.TEMPERROR,
}

CASES = [
    # name, From domains, spf, dkim, result, policy, disposition
    ("aligned DKIM passes", ["example.org"], spf(Result.FAIL, "example.org"),
     [dkim(Result.PASS, "example.org")], Result.PASS, "reject", "none"),
    ("aligned SPF passes", ["example.org"], spf(Result.PASS, "bounces.example.org"),
     [], Result.PASS, "reject", "none"),
    ("unaligned SPF pass fails", ["example.org"], spf(Result.PASS, "mailer.example.net"),
     [dkim(Result.PASS, "mailer.example.net")], Result.FAIL, "reject", "reject"),
    ("strict alignment wants the exact domain", ["strict.example"],
     spf(Result.PASS, "mail.strict.example"), [dkim(Result.PASS, "mail.strict.example")],
     Result.FAIL, "reject", "reject"),
    ("no record is none", ["gmail.com"], spf(Result.NONE, "gmail.com"), [], Result.NONE,
     "", "none"),
    ("subdomain takes sp= from the organizational domain", ["news.parent.example"],
     spf(Result.FAIL, "news.parent.example"), [], Result.FAIL, "reject", "reject"),
    ("the organizational domain itself takes p=", ["parent.example"],
     spf(Result.FAIL, "parent.example"), [], Result.FAIL, "none", "none"),
    ("two records are no policy", ["twice.example"], None, [], Result.NONE, "", "none"),
    ("record lookup temperror", ["slow.example"], None, [], Result.TEMPERROR, "", "none"),
    ("an aligned DKIM temperror is not a fail", ["example.org"],
     spf(Result.FAIL, "example.org"), [dkim(Result.TEMPERROR, "example.org")],
     Result.TEMPERROR, "reject", "none"),
    ("an aligned SPF temperror is not a fail", ["example.org"],
     spf(Result.TEMPERROR, "example.org"), [], Result.TEMPERROR, "reject", "none"),
    ("an unaligned temperror does not save a fail", ["example.org"],
     spf(Result.TEMPERROR, "example.net"), [dkim(Result.FAIL, "example.org")],
     Result.FAIL, "reject", "reject"),
    ("several From domains", ["example.org", "example.net"], None, [], Result.PERMERROR,
     "", "none"),
]


@pytest.mark.parametrize(("name", "froms", "spf_check", "dkim_checks", "result", "policy",
                          "disposition"), CASES, ids=[c[0] for c in CASES])
def test_evaluation(name: str, froms: list[str], spf_check: SpfCheck | None,
                    dkim_checks: list[DkimCheck], result: Result, policy: str,
                    disposition: str) -> None:
    check = evaluate_dmarc(StaticLookup(ZONE), froms, spf_check, dkim_checks, BUILTIN,
                           rand=lambda: 0.0)
    assert check is not None
    assert (check.result, check.policy, check.disposition) == (result, policy, disposition)


def test_no_from_domain_means_no_dmarc() -> None:
    assert evaluate_dmarc(StaticLookup(ZONE), [], None, [], BUILTIN) is None


def test_pct_samples_failing_mail_and_downgrades_the_rest() -> None:
    def run(draw: float) -> str:
        check = evaluate_dmarc(StaticLookup(ZONE), ["sampled.example"],
                               spf(Result.FAIL, "sampled.example"), [], BUILTIN,
                               rand=lambda: draw)
        assert check is not None and check.result is Result.FAIL
        return check.disposition

    assert run(0.05) == "reject"  # inside the 10 %
    assert run(0.10) == "quarantine"  # outside: the next policy down (RFC 7489 6.6.4)
    assert run(0.99) == "quarantine"


def test_subdomain_lookup_falls_back_to_the_organizational_domain_only_when_none() -> None:
    lookup = StaticLookup(ZONE)
    evaluate_dmarc(lookup, ["a.b.example.org"], None, [], BUILTIN)
    assert lookup.asked == [("_dmarc.a.b.example.org", "TXT"), ("_dmarc.example.org", "TXT")]
    lookup = StaticLookup({("_dmarc.a.slow.example", "TXT"): Status.TEMPERROR})
    check = evaluate_dmarc(lookup, ["a.slow.example"], None, [], BUILTIN)
    assert check is not None and check.result is Result.TEMPERROR
    assert lookup.asked == [("_dmarc.a.slow.example", "TXT")]
