"""rules/authentication.py: table-driven, one human-readable case per line."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from mailwarden.auth.results import (
    AuthResults,
    DkimCheck,
    DmarcCheck,
    Result,
    SenderField,
    SpfCheck,
)
from mailwarden.rules import authentication as rule
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.verdict import Action

CITE = "QD 162/2025/QD-UBND Dieu 10.2.d"
S = AuthRuleSettings(local_domains=("ninhbinh.gov.vn",), include_subdomains=True,
                     citation=CITE)
P, F, N, T = Result.PASS, Result.FAIL, Result.NONE, Result.TEMPERROR


def spf(result: Result, domain: str, identity: str = "mailfrom") -> SpfCheck:
    return SpfCheck(result, identity, domain, f"x@{domain}" if identity == "mailfrom" else "",
                    "h.example")


def dk(result: Result, domain: str) -> DkimCheck:
    return DkimCheck(result, domain, "sel", "rsa-sha256")


def dmarc(result: Result, domain: str, disposition: str = "none",
          policy: str = "") -> DmarcCheck:
    return DmarcCheck(result, domain, domain, policy or disposition, disposition)


@dataclass
class Case:
    name: str
    mail_from: str
    froms: tuple[str, ...]
    spf: SpfCheck | None
    dkim: tuple[DkimCheck, ...] = ()
    dmarc: DmarcCheck | None = None
    expect: list[tuple[str, Action, bool]] = field(default_factory=list)  # rule, action, monitor
    settings: AuthRuleSettings = S
    more: dict[str, object] = field(default_factory=dict)  # further AuthResults fields


def sender(name: str, domain: str, display: str = "", parsed: bool = True,
           claimed: tuple[str, ...] | None = None) -> SenderField:
    if claimed is None:
        claimed = (domain.lower(),) if domain else ()
    return SenderField(name, domain, display, parsed, claimed)


LOCAL = "ninhbinh.gov.vn"
CASES = [
    # -- spoofing of our own domains -----------------------------------------
    Case("outsider forging our envelope and From, nothing passes", LOCAL, (LOCAL,),
         spf(F, LOCAL), expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("outsider with a foreign envelope and our From: (classic phishing)", "evil.example",
         (LOCAL,), spf(P, "evil.example"),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("our From: on a subdomain is ours too", "evil.example", ("skhcn." + LOCAL,),
         spf(P, "evil.example"), expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("our domain without SPF record and no signature is still refused", LOCAL, (LOCAL,),
         spf(N, LOCAL), expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("SPF softfail of our domain does not authenticate it", LOCAL, (LOCAL,),
         spf(Result.SOFTFAIL, LOCAL), expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("a signature by another domain does not vouch for ours", "evil.example", (LOCAL,),
         spf(P, "evil.example"), (dk(P, "evil.example"),),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("a failed signature of ours does not vouch", "evil.example", (LOCAL,),
         spf(P, "evil.example"), (dk(F, LOCAL),),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("SPF pass for our domain (a server we list)", LOCAL, (LOCAL,), spf(P, LOCAL)),
    Case("valid signature of ours: forwarded mail whose SPF broke", LOCAL, (LOCAL,),
         spf(F, LOCAL), (dk(P, LOCAL),)),
    Case("foreign envelope, our From:, our valid signature (a mailing service we sign for)",
         "esp.example", (LOCAL,), spf(P, "esp.example"), (dk(P, LOCAL),)),
    Case("signature of the parent domain vouches for a subdomain From:", "evil.example",
         ("skhcn." + LOCAL,), spf(P, "evil.example"), (dk(P, LOCAL),)),
    Case("SPF pass of a subdomain envelope does not vouch for the parent From:",
         "skhcn." + LOCAL, (LOCAL,), spf(P, "skhcn." + LOCAL),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("a sibling subdomain's DKIM pass does not vouch either", "evil.example",
         ("skhcn." + LOCAL,), spf(P, "evil.example"), (dk(P, "stp." + LOCAL),),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("subdomains vouch for the parent only when configured", "skhcn." + LOCAL,
         (LOCAL,), spf(P, "skhcn." + LOCAL),
         settings=replace(S, subdomains_vouch_for_parent=True)),
    Case("strict alignment: the parent's signature does not vouch for a subdomain",
         "evil.example", ("skhcn." + LOCAL,), spf(P, "evil.example"), (dk(P, LOCAL),),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)],
         settings=replace(S, strict_alignment=True)),
    Case("strict alignment: the same domain vouches", LOCAL, (LOCAL,), spf(P, LOCAL),
         settings=replace(S, strict_alignment=True)),
    Case("without subdomains a subdomain envelope is not ours at all", "skhcn." + LOCAL,
         ("skhcn." + LOCAL,), spf(F, "skhcn." + LOCAL),
         expect=[(rule.SPF_FAIL, Action.ACCEPT, False)],  # a foreign SPF fail, logged
         settings=replace(S, include_subdomains=False)),
    Case("DNS failure on our own SPF: defer, never 5xx", LOCAL, (LOCAL,), spf(T, LOCAL),
         expect=[(rule.DNS_TEMPERROR, Action.DEFER, False)]),
    Case("DNS failure on our key lookup: defer", "evil.example", (LOCAL,),
         spf(P, "evil.example"), (dk(T, LOCAL),),
         expect=[(rule.DNS_TEMPERROR, Action.DEFER, False)]),
    Case("DNS failure on our own domain, on_dns_error = accept: still deferred", LOCAL,
         (LOCAL,), spf(T, LOCAL), expect=[(rule.DNS_TEMPERROR, Action.DEFER, False)],
         settings=replace(S, dns_error_defer=False)),
    Case("our key lookup times out, on_dns_error = accept: still deferred", "evil.example",
         (LOCAL,), spf(P, "evil.example"), (dk(T, LOCAL),),
         expect=[(rule.DNS_TEMPERROR, Action.DEFER, False)],
         settings=replace(S, dns_error_defer=False)),
    Case("foreign DNS failure, on_dns_error = accept: logged", "example.org",
         ("example.org",), spf(T, "example.org"),
         expect=[(rule.DNS_TEMPERROR, Action.ACCEPT, False)],
         settings=replace(S, dns_error_defer=False, spf_fail_reject=True)),
    Case("monitor mode logs the spoof without refusing", LOCAL, (LOCAL,), spf(F, LOCAL),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, True)], settings=replace(S, enforce=False)),
    # -- what a reader sees (issue 14) ------------------------------------------
    Case("display name shows our address on mail from outside", "evil.example", (),
         spf(P, "evil.example"), more={"senders": (sender(
             "From", "evil.example", "giamdoc@ninhbinh.gov.vn"),)},
         expect=[(rule.DISPLAY_NAME, Action.REJECT, False)]),
    Case("display name shows a look-alike of our domain", "evil.example", (),
         spf(P, "evil.example"), more={"senders": (sender(
             "From", "evil.example", "S\u1edf KHCN (n\u0456nhbinh.gov.vn)"),)},
         expect=[(rule.DISPLAY_NAME, Action.REJECT, False)]),
    Case("display name of a mailing list that rewrites From: is fine", "lists.example",
         (), spf(P, "lists.example"), more={"senders": (sender(
             "From", "lists.example", "Alice via Dept-List"),)}),
    Case("our own address in our own display name: the spoof check decides", LOCAL,
         (LOCAL,), spf(P, LOCAL), more={"senders": (sender(
             "From", LOCAL, "giamdoc@ninhbinh.gov.vn"),)}),
    Case("a From: that is not one address, refused by default", "evil.example", (),
         spf(P, "evil.example"), more={"senders": (sender(
             "From", "", parsed=False, claimed=("evil.example",)),)},
         expect=[(rule.UNPARSABLE_FROM, Action.REJECT, False)]),
    Case("unparsable From: only recorded when configured", "evil.example", (),
         spf(P, "evil.example"), more={"senders": (sender(
             "From", "", parsed=False, claimed=("evil.example",)),)},
         expect=[(rule.UNPARSABLE_FROM, Action.ACCEPT, False)],
         settings=replace(S, unparsable_reject=False)),
    Case("unparsable From: naming our domain is also a spoof", "evil.example", (),
         spf(P, "evil.example"), more={"senders": (sender(
             "From", "", parsed=False, claimed=(LOCAL,)),)},
         expect=[(rule.UNPARSABLE_FROM, Action.REJECT, False),
                 (rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("header block over the cap: refused even when unparsable is only recorded",
         "evil.example", (), spf(P, "evil.example"), more={"headers_complete": False},
         expect=[(rule.UNPARSABLE_FROM, Action.REJECT, False)],
         settings=replace(S, unparsable_reject=False)),
    Case("look-alike sender domain refused", "evil.example", (), spf(P, "evil.example"),
         more={"senders": (sender("From", "n\u0456nhbinh.gov.vn"),)},
         expect=[(rule.LOOKALIKE, Action.REJECT, False)]),
    Case("look-alike sender domain marked when configured", "evil.example", (),
         spf(P, "evil.example"), more={"senders": (sender("From", "ninhbinh\u200b.gov.vn"),)},
         expect=[(rule.LOOKALIKE, Action.ACCEPT, False)],
         settings=replace(S, lookalike_reject=False)),
    Case("Sender: with our address is checked", "evil.example", ("evil.example",),
         spf(P, "evil.example"), more={"senders": (
             sender("From", "evil.example"), sender("Sender", LOCAL))},
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("Resent-From: with our address is checked", "evil.example", ("evil.example",),
         spf(P, "evil.example"), more={"senders": (
             sender("From", "evil.example"), sender("Resent-From", LOCAL))},
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)]),
    Case("duplicated Subject: on mail signed by us, replayed from outside", "evil.example",
         (LOCAL,), spf(P, "evil.example"), (dk(P, LOCAL),),
         more={"duplicates": ("subject", "to")},
         expect=[(rule.DUPLICATE_HEADER, Action.REJECT, False)]),
    Case("duplicated Subject: on foreign mail is its own business", "example.org",
         ("example.org",), spf(P, "example.org"), more={"duplicates": ("subject",)}),
    Case("out of time: deferred", "example.org", ("example.org",), spf(P, "example.org"),
         (dk(T, "example.org"),), more={"timed_out": "dkim"},
         expect=[(rule.TIMEOUT, Action.DEFER, False)]),
    Case("out of time yet spoofed: the refusal comes first", "evil.example", (LOCAL,),
         spf(P, "evil.example"), more={"timed_out": "dkim"},
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False), (rule.TIMEOUT, Action.DEFER,
                                                             False)]),
    # -- foreign domains -----------------------------------------------------
    Case("gmail.com with no records at all", "gmail.com", ("gmail.com",), spf(N, "gmail.com"),
         dmarc=dmarc(N, "gmail.com"),
         settings=replace(S, dmarc_reject=True, spf_fail_reject=True)),
    Case("null sender bounce from outside", "", ("mailer-daemon.example",),
         spf(N, "mx.example", "helo")),
    Case("foreign SPF fail is logged by default", "example.org", ("example.org",),
         spf(F, "example.org"), expect=[(rule.SPF_FAIL, Action.ACCEPT, False)]),
    Case("foreign SPF fail refused when configured", "example.org", ("example.org",),
         spf(F, "example.org"), expect=[(rule.SPF_FAIL, Action.REJECT, False)],
         settings=replace(S, spf_fail_reject=True)),
    Case("foreign SPF softfail is nothing", "example.org", ("example.org",),
         spf(Result.SOFTFAIL, "example.org")),
    Case("foreign SPF temperror, only recorded", "example.org", ("example.org",),
         spf(T, "example.org"), expect=[(rule.DNS_TEMPERROR, Action.ACCEPT, False)]),
    Case("foreign SPF temperror defers when SPF fail would refuse", "example.org",
         ("example.org",), spf(T, "example.org"),
         expect=[(rule.DNS_TEMPERROR, Action.DEFER, False)],
         settings=replace(S, spf_fail_reject=True)),
    Case("DMARC p=reject fail: monitor by default", "evil.example", ("example.org",),
         spf(P, "evil.example"), dmarc=dmarc(F, "example.org", "reject"),
         expect=[(rule.DMARC_REJECT, Action.REJECT, True)]),
    Case("DMARC p=reject fail honoured when switched on", "evil.example", ("example.org",),
         spf(P, "evil.example"), dmarc=dmarc(F, "example.org", "reject"),
         expect=[(rule.DMARC_REJECT, Action.REJECT, False)],
         settings=replace(S, dmarc_reject=True)),
    Case("DMARC fail sampled down to quarantine is not refused", "evil.example",
         ("example.org",), spf(P, "evil.example"),
         dmarc=dmarc(F, "example.org", "quarantine", policy="reject"),
         settings=replace(S, dmarc_reject=True)),
    Case("DMARC p=none fail is nothing", "evil.example", ("example.org",),
         spf(P, "evil.example"), dmarc=dmarc(F, "example.org", "none")),
    Case("DMARC pass", "example.org", ("example.org",), spf(P, "example.org"),
         dmarc=dmarc(P, "example.org", "none", policy="reject"),
         settings=replace(S, dmarc_reject=True)),
    Case("DMARC temperror defers only when p=reject is honoured", "example.org",
         ("example.org",), spf(N, "example.org"), dmarc=dmarc(T, "example.org"),
         expect=[(rule.DNS_TEMPERROR, Action.DEFER, False)],
         settings=replace(S, dmarc_reject=True)),
    Case("DMARC temperror otherwise recorded", "example.org", ("example.org",),
         spf(N, "example.org"), dmarc=dmarc(T, "example.org"),
         expect=[(rule.DNS_TEMPERROR, Action.ACCEPT, False)]),
    Case("DMARC of our own From: domain is the spoof rule's business", "evil.example",
         (LOCAL,), spf(P, "evil.example"), dmarc=dmarc(F, LOCAL, "reject"),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False)],
         settings=replace(S, dmarc_reject=True)),
    Case("spoof and SPF fail of a foreign envelope: both reasons", "example.org", (LOCAL,),
         spf(F, "example.org"),
         expect=[(rule.LOCAL_SPOOF, Action.REJECT, False),
                 (rule.SPF_FAIL, Action.REJECT, False)],
         settings=replace(S, spf_fail_reject=True)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    r = AuthResults("203.0.113.5", case.mail_from, case.froms, case.spf, case.dkim, case.dmarc,
                    **case.more)  # type: ignore[arg-type]
    verdicts = rule.decide(r, case.settings)
    assert [(v.rule, v.action, v.monitor) for v in verdicts] == case.expect
    for v in verdicts:
        assert v.article == CITE
        assert v.smtp_code in (250, 451, 550)
        assert v.reply.isascii()
        if v.action is Action.REJECT:
            assert v.reply.startswith("550 5.7.1 ") and CITE in v.text
        if v.rule == rule.DNS_TEMPERROR:
            assert v.action is not Action.REJECT


def test_spoof_text_names_the_domain_and_the_article() -> None:
    r = AuthResults("203.0.113.5", "evil.example", (LOCAL,), spf(P, "evil.example"))
    (v,) = rule.decide(r, S)
    assert v.reply == (
        "550 5.7.1 Thu mao danh ten mien ninhbinh.gov.vn: khong co SPF pass hay chu ky DKIM "
        "hop le cua ninhbinh.gov.vn (QD 162/2025/QD-UBND Dieu 10.2.d). Message claims to be "
        "from ninhbinh.gov.vn but is not authenticated by SPF or DKIM")
    assert v.detail == {"domain": LOCAL, "claimed_in": "From:",
                        "checks": "spf=pass dkim=none"}


def test_every_rule_id_has_cases_on_both_sides() -> None:
    """Each rule id refuses/defers/logs in some case and stays silent in another."""
    fired = {v[0] for c in CASES for v in c.expect}
    assert fired == set(rule.RULE_IDS)
    for rid in rule.RULE_IDS:
        assert any(rid not in {v[0] for v in c.expect} for c in CASES)
