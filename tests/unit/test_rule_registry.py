"""verdict.RULES: every rule id is registered, documented, cites its own profile field,
and has a sample input that produces it next to a neighbour that does not."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from mailwarden import failure
from mailwarden.auth.results import (
    AuthResults,
    DkimCheck,
    DmarcCheck,
    Result,
    SenderField,
    SpfCheck,
)
from mailwarden.config import load_config
from mailwarden.engine.core import Analysis, evaluate
from mailwarden.inspect import Finding, FindingKind, MessageModel
from mailwarden.profiles import Profile
from mailwarden.rules import (
    accounts,
    antivirus,
    attachments,
    authentication,
    forwarding,
    ratelock,
)
from mailwarden.rules.accounts import AllowInputs, FailureInputs, InactiveInputs
from mailwarden.rules.forwarding import ForwardInputs
from mailwarden.rules.ratelock import LockInfo, RateInputs
from mailwarden.settings import Settings, accounts_from, cite
from mailwarden.verdict import RULES, Action, Verdict, rules_markdown

ROOT = Path(__file__).resolve().parents[2]
CFG = load_config(None)
S = Settings.from_config(CFG)
Sample = Callable[[], list[Verdict]]

LOCAL = "ninhbinh.gov.vn"
SPOOFED = AuthResults("203.0.113.5", "evil.example", (LOCAL,),
                      SpfCheck(Result.PASS, "mailfrom", "evil.example", "x@evil.example", "h"))
SIGNED = AuthResults("203.0.113.5", LOCAL, (LOCAL,), None,
                     (DkimCheck(Result.PASS, LOCAL, "s", "rsa-sha256"),))


def _auth(**kw: object) -> AuthResults:
    base: dict[str, object] = {"client_ip": "203.0.113.5", "mail_from_domain": "example.org",
                               "from_domains": ("example.org",), "spf": None}
    base.update(kw)
    return AuthResults(**base)  # type: ignore[arg-type]


def _dmarc(result: Result) -> AuthResults:
    return _auth(dmarc=DmarcCheck(result, "example.org", "example.org", "reject", "reject"))


def _spf(result: Result) -> AuthResults:
    return _auth(spf=SpfCheck(result, "mailfrom", "example.org", "x@example.org", "h"))


def _auth_rules(**over: object) -> Settings:
    return Settings.from_config(load_config(None, dict(over)))


def _finding(kind: FindingKind, detected: str = "pe32") -> list[Verdict]:
    return attachments.decide(MessageModel(findings=[Finding(kind, "a.bin", detected)]),
                              S.content.attachments)


def _fwd(headers: list[tuple[str, str]], rcpt: str, sender: str = "a@ninhbinh.gov.vn",
         client: str = "127.0.0.1") -> list[Verdict]:
    return forwarding.decide(ForwardInputs(headers=headers, mail_from=sender, recipients=(rcpt,),
                                           client_addr=client), S.content.forwarding)


def _clock(step: float) -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: next(ticks) * step


def _content(step: float) -> list[Verdict]:
    """The engine on a plain message, without a scan (its own timeout would decide); the
    analysis (a worker's in the milter) found nothing, and each clock reading is `step`
    seconds after the last."""
    msg = io.BytesIO(b"From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n")
    return evaluate(msg, replace(S.content, scan=False), clock=_clock(step),
                    analyser=lambda message, envelope, deadline: Analysis()).verdicts


LOCK = LockInfo("a@ninhbinh.gov.vn", "over 250", 0.0, "rate")
ACC = accounts_from(CFG, S.ours)

# rule id -> (sample that produces it, neighbour that does not)
SAMPLES: dict[str, tuple[Sample, Sample]] = {
    "ratelimit.external_recipients": (
        lambda: ratelock.decide(RateInputs("a@ninhbinh.gov.vn", over=True, count=251,
                                           locked_now=True), S.rate),
        lambda: ratelock.decide(RateInputs("a@ninhbinh.gov.vn", count=250), S.rate)),
    "account.locked": (
        lambda: ratelock.decide(RateInputs("a@ninhbinh.gov.vn", lock=LOCK), S.rate),
        lambda: ratelock.decide(RateInputs("b@ninhbinh.gov.vn"), S.rate)),
    "ratelimit.backend_error": (
        lambda: [ratelock.backend_error("ConnectionError", defer=True)],
        lambda: ratelock.decide(RateInputs("a@ninhbinh.gov.vn", count=3), S.rate)),
    "attachment.executable": (lambda: _finding(FindingKind.EXECUTABLE),
                              lambda: attachments.decide(MessageModel(), S.content.attachments)),
    "attachment.encrypted_archive": (lambda: _finding(FindingKind.ENCRYPTED_ARCHIVE, "zipcrypto"),
                                     lambda: _finding(FindingKind.EXECUTABLE)),
    "attachment.encrypted_document": (
        lambda: _finding(FindingKind.ENCRYPTED_DOCUMENT, "ooxml-encrypted"),
        lambda: _finding(FindingKind.ENCRYPTED_ARCHIVE, "zipcrypto")),
    "attachment.uninspectable": (lambda: _finding(FindingKind.UNINSPECTABLE, "depth-limit"),
                                 lambda: _finding(FindingKind.EXECUTABLE)),
    "attachment.size": (
        lambda: attachments.decide(MessageModel(total_attachment_bytes=S.content.attachments
                                                .max_bytes + 1), S.content.attachments),
        lambda: attachments.decide(MessageModel(total_attachment_bytes=S.content.attachments
                                                .max_bytes), S.content.attachments)),
    "av.infected": (
        lambda: antivirus.decide(antivirus.ScanResult("infected", "Eicar"), S.content.antivirus),
        lambda: antivirus.decide(antivirus.ScanResult("clean"), S.content.antivirus)),
    "av.unavailable": (
        lambda: antivirus.decide(antivirus.ScanResult("error", error="refused"),
                                 S.content.antivirus),
        lambda: antivirus.decide(antivirus.ScanResult("infected", "Eicar"),
                                 S.content.antivirus)),
    "forward.external_auto": (
        lambda: _fwd([("Auto-Submitted", "auto-forwarded")], "x@gmail.com"),
        lambda: _fwd([("Auto-Submitted", "auto-forwarded")], "x@hanoi.gov.vn")),
    "forward.inbound_auto": (
        lambda: _fwd([("X-Forwarded-For", "alice@gmail.com bob@ninhbinh.gov.vn")],
                     "bob@ninhbinh.gov.vn", sender="alice@gmail.com", client="203.0.113.9"),
        lambda: _fwd([("Subject", "hello")], "bob@ninhbinh.gov.vn", sender="alice@gmail.com",
                     client="203.0.113.9")),
    "auth.local_spoof": (lambda: authentication.decide(SPOOFED, S.auth_rules),
                         lambda: authentication.decide(SIGNED, S.auth_rules)),
    "auth.dmarc_reject": (
        lambda: authentication.decide(_dmarc(Result.FAIL), _auth_rules(
            **{"auth.dmarc_reject": True}).auth_rules),
        lambda: authentication.decide(_dmarc(Result.PASS), _auth_rules(
            **{"auth.dmarc_reject": True}).auth_rules)),
    "auth.spf_fail": (lambda: authentication.decide(_spf(Result.FAIL), S.auth_rules),
                      lambda: authentication.decide(_spf(Result.SOFTFAIL), S.auth_rules)),
    "auth.dns_temperror": (
        lambda: authentication.decide(_dmarc(Result.TEMPERROR), _auth_rules(
            **{"auth.dmarc_reject": True}).auth_rules),
        lambda: authentication.decide(_dmarc(Result.NONE), S.auth_rules)),
    "auth.unparsable_from": (
        lambda: authentication.decide(_auth(senders=(SenderField(
            "From", "", '<"giamdoc@ninhbinh.gov.vn">', False, (LOCAL,)),)), S.auth_rules),
        lambda: authentication.decide(_auth(senders=(SenderField(
            "From", "example.org", "", True, ("example.org",)),)), S.auth_rules)),
    "auth.display_name": (
        lambda: authentication.decide(_auth(senders=(SenderField(
            "From", "example.org", "giamdoc@ninhbinh.gov.vn", True, ("example.org",)),)),
            S.auth_rules),
        lambda: authentication.decide(_auth(senders=(SenderField(
            "From", "example.org", "Alice via Dept-List", True, ("example.org",)),)),
            S.auth_rules)),
    "auth.lookalike": (
        lambda: authentication.decide(_auth(senders=(SenderField(
            "From", "n\u0456nhbinh.gov.vn", "", True, ("n\u0456nhbinh.gov.vn",)),)),
            S.auth_rules),
        lambda: authentication.decide(_auth(senders=(SenderField(
            "From", "ninhthuan.gov.vn", "", True, ("ninhthuan.gov.vn",)),)), S.auth_rules)),
    "auth.duplicate_header": (
        lambda: authentication.decide(replace(SIGNED, duplicates=("subject",)), S.auth_rules),
        lambda: authentication.decide(SIGNED, S.auth_rules)),
    "auth.timeout": (
        lambda: authentication.decide(_auth(timed_out="dkim"), S.auth_rules),
        lambda: authentication.decide(_auth(), S.auth_rules)),
    "account.login_locked": (
        lambda: accounts.decide_allow(AllowInputs("a@ninhbinh.gov.vn", "", lock=LOCK), ACC),
        lambda: accounts.decide_allow(AllowInputs("a@ninhbinh.gov.vn", ""), ACC)),
    "account.failed_logins": (
        lambda: accounts.decide_failure(FailureInputs("a@ninhbinh.gov.vn", "locked_now", 12),
                                        ACC),
        lambda: accounts.decide_failure(FailureInputs("a@ninhbinh.gov.vn", "counted", 11),
                                        ACC)),
    "account.login_throttled": (
        lambda: accounts.decide_allow(AllowInputs("a@ninhbinh.gov.vn", "203.0.113.7/32",
                                                  address_failures=4), ACC),
        lambda: accounts.decide_allow(AllowInputs("a@ninhbinh.gov.vn", "203.0.113.7/32",
                                                  address_failures=1), ACC)),
    "account.inactive": (
        lambda: accounts.decide_inactive(InactiveInputs(
            "a@ninhbinh.gov.vn", 1_700_000_000.0, None, 1_690_000_000.0, 1_760_000_000.0,
            days=90), ACC),
        lambda: accounts.decide_inactive(InactiveInputs(
            "a@ninhbinh.gov.vn", 1_759_000_000.0, None, 1_690_000_000.0, 1_760_000_000.0,
            days=90), ACC)),
    # the budget (120s) is gone when each clock reading is 200 s after the last
    "content.timeout": (lambda: _content(200.0), lambda: _content(0.001)),
    "internal.error": (lambda: [failure.internal_error(RuntimeError("x"), "defer")],
                       lambda: _content(0.001)),
}


def test_every_registered_rule_has_samples_and_nothing_else() -> None:
    assert set(SAMPLES) == set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_sample_produces_the_rule_and_the_neighbour_does_not(rule: str) -> None:
    positive, negative = SAMPLES[rule]
    produced = positive()
    assert rule in {v.rule for v in produced}, produced
    assert rule not in {v.rule for v in negative()}
    for v in produced:
        assert v.reply.isascii() and "\n" not in v.reply
        assert (v.action is Action.ACCEPT) == (v.smtp_code == 250)


@pytest.mark.parametrize("rule", sorted(r for r in RULES if RULES[r].article))
def test_each_rule_cites_its_own_profile_field(rule: str) -> None:
    (v,) = [v for v in SAMPLES[rule][0]() if v.rule == rule]
    expected = {cite(CFG, rule)}
    if rule == "account.locked":  # a rate lock here; an operator lock cites its own field
        expected = {CFG.profile.cite(CFG.profile.lock_article)}
    assert v.article in expected, (rule, v.article)
    assert RULES[rule].article in Profile.__dataclass_fields__


def test_every_rule_module_declares_only_registered_ids() -> None:
    for module in (antivirus, attachments, authentication, forwarding, ratelock, accounts):
        assert set(module.RULE_IDS) <= set(RULES), module.__name__


def test_authentication_cites_its_own_article_not_the_antivirus_one() -> None:
    """Issue 9: a profile whose auth and antivirus articles differ cites the auth one."""
    for name in ("ninhbinh-162-2025", "hanam-27-2023", "ninhbinh-28-2020",
                 "tiengiang-51-2016", "tuyenquang-12-2013"):
        cfg = load_config(None, {"profile.name": name})
        ours = cfg.profile.local_domains[0]
        spoofed = replace(SPOOFED, from_domains=(ours,))
        [v] = authentication.decide(spoofed, Settings.from_config(cfg).auth_rules)
        assert v.article == cfg.profile.cite(cfg.profile.auth_article), name
        assert cfg.profile.auth_article != cfg.profile.antivirus_article, name


def test_rules_doc_is_generated_from_the_registry() -> None:
    doc = (ROOT / "docs" / "rules.md").read_text()
    assert doc == rules_markdown(), "docs/rules.md drifted: run `mailwarden config rules`"
    for rule in RULES:
        assert f"| `{rule}` |" in doc
