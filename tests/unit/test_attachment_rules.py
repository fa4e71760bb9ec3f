"""rules/attachments.py and rules/antivirus.py: findings and scan outcomes to verdicts."""

from __future__ import annotations

import pytest

from mailwarden.config import load_config
from mailwarden.inspect import Finding, FindingKind, MessageModel
from mailwarden.rules import antivirus, attachments
from mailwarden.settings import ContentSettings, Settings
from mailwarden.verdict import Action

MB = 1024 * 1024


def settings(**over: object) -> ContentSettings:
    return Settings.from_config(load_config(None, dict(over))).content


S = settings()


def model(*findings: Finding, total: int = 0) -> MessageModel:
    return MessageModel(findings=list(findings), total_attachment_bytes=total)


@pytest.mark.parametrize("finding,rule,code,article", [
    pytest.param(Finding(FindingKind.EXECUTABLE, "hoa-don.pdf.exe", "pe32"),
                 "attachment.executable", "550 5.7.1", "Dieu 4.2", id="executable"),
    pytest.param(Finding(FindingKind.ENCRYPTED_ARCHIVE, "baocao.zip", "zipcrypto"),
                 "attachment.encrypted_archive", "550 5.7.1", "Dieu 4.2", id="encrypted-zip"),
    pytest.param(Finding(FindingKind.UNINSPECTABLE, "bomb.zip", "expanded-limit"),
                 "attachment.uninspectable", "550 5.7.1", "Dieu 4.2", id="zip-bomb"),
])
def test_findings_refuse(finding: Finding, rule: str, code: str, article: str) -> None:
    [v] = attachments.decide(model(finding), S.attachments)
    assert (v.rule, v.reply[:9], v.action) == (rule, code, Action.REJECT)
    assert v.article.endswith(article) and v.article.startswith("QD 162/2025/QD-UBND")
    assert finding.file in v.text and v.text.isascii()
    assert v.detail["detected"] == finding.detected


def test_encrypted_document_is_logged_by_default_and_refused_when_configured() -> None:
    f = Finding(FindingKind.ENCRYPTED_DOCUMENT, "luong.xlsx", "office-encrypted")
    [logged] = attachments.decide(model(f), S.attachments)
    assert logged.action is Action.ACCEPT and not logged.enforced
    [refused] = attachments.decide(model(f), settings(
        **{"attachments.encrypted_documents": "reject"}).attachments)
    assert refused.action is Action.REJECT


@pytest.mark.parametrize("policy,action", [("reject", Action.REJECT), ("defer", Action.DEFER),
                                           ("accept", Action.ACCEPT)])
def test_uninspectable_policy(policy: str, action: Action) -> None:
    f = Finding(FindingKind.UNINSPECTABLE, "deep.zip", "depth-limit")
    [v] = attachments.decide(model(f), settings(**{"attachments.uninspectable": policy})
                             .attachments)
    assert v.action is action


def test_size_cap_edge_from_the_profile() -> None:
    assert attachments.decide(model(total=30 * MB), S.attachments) == []
    [v] = attachments.decide(model(total=30 * MB + 1), S.attachments)
    assert v.reply.startswith("552 5.3.4") and "Dieu 8.1.b" in v.text
    assert "30.0 MB" in v.text


def test_size_cap_follows_the_profile() -> None:
    hanam = settings(**{"profile.name": "hanam-27-2023"})
    [v] = attachments.decide(model(total=21 * MB), hanam.attachments)
    assert "20.0 MB" in v.text and v.article.startswith("QD 27/2023")


def test_announced_size_refused_only_when_it_can_never_pass() -> None:
    limit = attachments.largest_passable(S.attachments)
    # 30 MB in base64 with CRLF every 76 characters, plus the configured overhead
    assert limit == 43_046_806 + 4 * MB
    assert attachments.decide_announced_size(limit, S.attachments) == []
    [v] = attachments.decide_announced_size(limit + 1, S.attachments)
    assert v.reply.startswith("552 5.3.4")


def test_monitor_mode_logs_but_does_not_enforce() -> None:
    mon = settings(**{"attachments.mode": "monitor"})
    [v] = attachments.decide(model(Finding(FindingKind.EXECUTABLE, "a.exe", "pe32")),
                             mon.attachments)
    assert v.monitor and not v.enforced


def test_reply_file_name_is_ascii_bounded_and_has_no_percent_or_quotes() -> None:
    name = attachments.reply_name('Hóa đơn "100%" ' + "x" * 100 + ".exe")
    assert name.isascii() and len(name) <= 60 and '"' not in name


@pytest.mark.parametrize("status,expected", [
    ("clean", None), ("infected", "550 5.7.1"), ("error", "451 4.7.1")])
def test_antivirus_outcomes(status: str, expected: str | None) -> None:
    found = antivirus.decide(antivirus.ScanResult(
        status, signature="Eicar-Test-Signature", error="connect: refused", part="a.zip"),
        S.antivirus)
    v = found[0] if found else None
    assert (v.reply[:9] if v else None) == expected
    if status == "infected":
        assert v is not None and "Eicar-Test-Signature" in v.text and "Dieu 4.2" in v.article


def test_clamd_error_can_be_accepted_by_config() -> None:
    s = settings(**{"antivirus.on_clamd_error": "accept"})
    [v] = antivirus.decide(antivirus.ScanResult("error", error="timeout"), s.antivirus)
    assert v.action is Action.ACCEPT and v.detail["policy"] == "accept"


def test_executable_extension_list_is_configurable() -> None:
    assert ".exe" in S.limits.executable_extensions
    assert ".net" in S.limits.executable_extensions  # 28/2020 Dieu 2.7
    only = settings(**{"attachments.executable_extensions": [".EXE"],
                       "attachments.extra_executable_extensions": []})
    assert only.limits.executable_extensions == frozenset({".exe"})
