"""Every text that comes from the message (or an operator) reaches an SMTP reply only
through verdict.reply_safe, and the adapters guarantee one printable-ASCII line."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from mailwarden.auth.results import AuthResults, DkimCheck, DmarcCheck, Result, SpfCheck
from mailwarden.rules import authentication as auth_rule
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.verdict import Action, Verdict, reject

NASTY = "a\r\nb\x00c\x1b%s%n\u1ec5\"x"  # CR, LF, NUL, ESC, printf-ish %, non-ASCII, quote
S = AuthRuleSettings(local_domains=("ninhbinh.gov.vn",), include_subdomains=True,
                     citation="QD 162/2025/QD-UBND Dieu 10.2.d", dmarc_reject=True,
                     spf_fail_reject=True)


def printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in text)


def _spoof() -> AuthResults:
    return AuthResults("203.0.113.5", "evil.example", (f"{NASTY}.ninhbinh.gov.vn",),
                       SpfCheck(Result.NONE, "mailfrom", "evil.example", "x@evil.example",
                                "h.example"))


def _spf_fail() -> AuthResults:
    return AuthResults(f"203.0.113.5{NASTY}", NASTY, (),
                       SpfCheck(Result.FAIL, "mailfrom", NASTY, f"x@{NASTY}", "h.example"))


def _dmarc_fail() -> AuthResults:
    return AuthResults("203.0.113.5", "evil.example", (NASTY,), None,
                       (DkimCheck(Result.FAIL, NASTY, "sel", "rsa-sha256"),),
                       DmarcCheck(Result.FAIL, NASTY, NASTY, "reject", "reject"))


@pytest.mark.parametrize("results,rule_id", [
    pytest.param(_spoof, auth_rule.LOCAL_SPOOF, id="anti-spoofing From: domain"),
    pytest.param(_spf_fail, auth_rule.SPF_FAIL, id="SPF fail domain and client"),
    pytest.param(_dmarc_fail, auth_rule.DMARC_REJECT, id="DMARC From: domain"),
])
def test_auth_refusal_text_is_printable_ascii(results: Any, rule_id: str) -> None:
    verdicts = [v for v in auth_rule.decide(results(), S) if v.rule == rule_id]
    assert verdicts, "the rule must refuse this case"
    v = verdicts[0]
    assert v.enforced and printable_ascii(v.reply), v.reply
    assert "%" not in v.text and '"' not in v.text
    # The log line still gets the domain exactly (escaped there, in logs.py).
    assert NASTY in v.detail.get("domain", "") + v.detail.get("client", "")


class _FakeRuntime:
    log_accepts = False
    releaser = None

    def count(self, key: str) -> None:
        pass


def test_milter_setreply_never_gets_a_raw_percent_or_newline(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from mailwarden.milter import app

    monkeypatch.setattr(app, "RUNTIME", _FakeRuntime())
    m = app.WardenMilter()
    calls: list[tuple[str, ...]] = []
    m.setreply = lambda *a: calls.append(a)  # type: ignore[method-assign]
    # A rule that forgot reply_safe: the adapter still sends one safe line.
    v = reject("auth.local_spoof", f"100% sure {NASTY} %% end\n" + "y" * 2000)
    with caplog.at_level(logging.INFO, logger="mailwarden.milter"):
        assert m._apply([v], "EOM") == app.Milter.REJECT
    ((code, xcode, text),) = calls
    assert (code, xcode) == ("550", "5.7.1")
    assert printable_ascii(text) and len(text) < 1000
    # every "%" is doubled: removing the pairs leaves none
    assert "%" not in text.replace("%%", "")
    assert text.startswith('100%% sure a??b?c?%%s%%n?"x %%%% end?yyy')


def test_policyd_reply_is_one_printable_line(caplog: pytest.LogCaptureFixture) -> None:
    from mailwarden.clock import FakeClock
    from mailwarden.config import load_config
    from mailwarden.policyd.lockcache import LockCache
    from mailwarden.policyd.service import PolicyService

    service = PolicyService(load_config(None, {}), SimpleNamespace(),  # type: ignore[arg-type]
                            FakeClock(), LockCache())
    v = Verdict(Action.REJECT, "account.locked", 550, "5.7.1", f"locked {NASTY}\naction=DUNNO")
    with caplog.at_level(logging.INFO, logger="mailwarden.policyd"):
        reply = service._refuse({"client_address": "10.0.0.1"}, "RCPT", v)
    assert reply == '550 5.7.1 locked a??b?c?%s%n?"x?action=DUNNO'
    assert len(caplog.records) == 1


def test_attachment_texts_are_printable_ascii() -> None:
    from mailwarden.config import load_config
    from mailwarden.inspect import Finding, FindingKind, MessageModel
    from mailwarden.rules import attachments
    from mailwarden.settings import Settings

    s = Settings.from_config(load_config(None)).content.attachments
    findings = [Finding(kind, f"{NASTY}.zip/{NASTY}.exe", f"tok{NASTY}")
                for kind in FindingKind]
    verdicts = attachments.decide(MessageModel(findings=findings), s)
    assert verdicts
    for v in verdicts:
        assert printable_ascii(v.reply), v.reply  # "%" in a file name: the milter doubles it
        assert "tok%" not in v.text


def test_from_header_as_sent_to_spoofing_reply() -> None:
    """A From: domain with NUL, ESC, '%' and 8-bit bytes, read from the raw
    message the way authentication reads it, gives a printable-ASCII refusal."""
    from mailwarden.auth.verify import from_domains, read_headers

    raw = (b"From: <x@ev\x00i\x1bl%s\xc3\xa9\xff.ninhbinh.gov.vn>\r\n"
           b"Subject: hi\r\n\r\nbody\r\n")
    domains = from_domains(read_headers(raw))
    assert domains and domains[0].endswith(".ninhbinh.gov.vn")
    r = AuthResults("203.0.113.5", "evil.example", domains,
                    SpfCheck(Result.NONE, "mailfrom", "evil.example", "x@evil.example", "h"))
    (v,) = [v for v in auth_rule.decide(r, S) if v.rule == auth_rule.LOCAL_SPOOF]
    assert printable_ascii(v.reply) and "%" not in v.text, v.reply
    assert v.detail["domain"] == domains[0]  # exact in the log line (escaped there)
