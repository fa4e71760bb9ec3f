"""The engine directly (issue 8): an injected scanner and clock, no clamd, no sleep.

Raw-message scan, one deadline per message (issue 13), budget deferral, infected beats
error, policy signatures -> attachment rules, decide once, and the clamd gate's
concurrency bound and circuit breaker.
"""

from __future__ import annotations

import io
import threading
from email.message import EmailMessage
from typing import Any, BinaryIO

import pytest

from mailwarden.clients import clamd
from mailwarden.config import load_config
from mailwarden.engine import Analysis, Envelope, ScanGate, evaluate
from mailwarden.engine.core import RAW_LABEL
from mailwarden.settings import Settings
from mailwarden.verdict import Action, defer

CLEAN = clamd.ScanOutcome(clamd.ScanStatus.CLEAN)
ENV = Envelope(mail_from="a@ninhbinh.gov.vn", recipients=("b@ninhbinh.gov.vn",),
               client_addr="10.0.0.5", authenticated=True)


def content(**over: Any) -> Any:
    return Settings.from_config(load_config(None, over)).content


def message(*attachments: tuple[str, bytes]) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@ninhbinh.gov.vn", "b@ninhbinh.gov.vn", "Bao cao"
    m.set_content("Kinh gui.\n")
    for name, data in attachments:
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m.as_bytes()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeScanner:
    """Records each call; returns `outcome`; may move the clock."""

    def __init__(self, outcome: clamd.ScanOutcome = CLEAN, clock: Clock | None = None,
                 takes_s: float = 0.0) -> None:
        self.outcome, self.clock, self.takes_s = outcome, clock, takes_s
        self.calls: list[tuple[bytes, float, str]] = []

    def __call__(self, fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        self.calls.append((fp.read(), timeout_s, label))
        if self.clock is not None:
            self.clock.t += self.takes_s
        return self.outcome


def infected(sig: str) -> clamd.ScanOutcome:
    return clamd.ScanOutcome(clamd.ScanStatus.INFECTED, signature=sig)


def test_clamd_always_gets_the_whole_raw_message_once() -> None:
    raw = message(("bao-cao.pdf", b"%PDF-1.4\n" + b"x" * 5000))
    scanner = FakeScanner()
    result = evaluate(io.BytesIO(raw), content(), scanner=scanner, envelope=ENV)
    assert result.decisive is None
    [(data, timeout_s, label)] = scanner.calls
    assert data == raw and label == RAW_LABEL and timeout_s == 60.0


def test_scan_gets_what_is_left_of_the_message_budget() -> None:
    clock = Clock()
    seen: list[float] = []

    def analyser(fp: BinaryIO, env: Envelope | None, deadline: float) -> Analysis:
        clock.t += 110.0  # of milter.content_budget = 120s
        return Analysis()

    def scanner(fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        seen.append(timeout_s)
        return CLEAN

    evaluate(io.BytesIO(message()), content(), scanner=scanner, envelope=ENV,
             analyser=analyser, clock=clock)
    assert seen == [pytest.approx(10.0)]


def test_budget_spent_is_a_deferral_never_a_pass() -> None:
    clock = Clock()
    scanner = FakeScanner(clock=clock, takes_s=200.0)
    result = evaluate(io.BytesIO(message()), content(), scanner=scanner, envelope=ENV,
                      clock=clock)
    v = result.decisive
    assert v is not None and v.rule == "content.timeout" and v.action is Action.DEFER


def test_no_time_left_for_the_scan_is_av_unavailable() -> None:
    clock = Clock()

    def analyser(fp: BinaryIO, env: Envelope | None, deadline: float) -> Analysis:
        clock.t = deadline + 1
        return Analysis()

    scanner = FakeScanner()
    result = evaluate(io.BytesIO(message()), content(), scanner=scanner, envelope=ENV,
                      analyser=analyser, clock=clock)
    assert scanner.calls == []
    assert result.decisive is not None and result.decisive.rule == "av.unavailable"


def test_infected_beats_a_deferral_of_the_analysis() -> None:
    def analyser(fp: BinaryIO, env: Envelope | None, deadline: float) -> Analysis:
        return Analysis(verdicts=[defer("auth.dns_temperror", "dns", error="SERVFAIL")])

    result = evaluate(io.BytesIO(message()), content(), envelope=ENV, analyser=analyser,
                      scanner=FakeScanner(infected("Eicar-Test-Signature.UNOFFICIAL")))
    v = result.decisive
    assert v is not None and v.rule == "av.infected" and v.action is Action.REJECT
    assert [x.rule for x in result.verdicts] == ["auth.dns_temperror", "av.infected"]


@pytest.mark.parametrize("signature,rule,action", [
    pytest.param("MailWarden.Executable.PE.UNOFFICIAL", "attachment.executable",
                 Action.REJECT, id="pe"),
    pytest.param("MailWarden.Executable.ELF.UNOFFICIAL", "attachment.executable",
                 Action.REJECT, id="elf"),
    pytest.param("MailWarden.Executable.MachO.UNOFFICIAL", "attachment.executable",
                 Action.REJECT, id="macho"),
    pytest.param("Heuristics.Encrypted.Zip", "attachment.encrypted_archive", Action.REJECT,
                 id="encrypted-zip"),
    pytest.param("Heuristics.Encrypted.7Zip", "attachment.encrypted_archive", Action.REJECT,
                 id="encrypted-7z"),
    pytest.param("Heuristics.Encrypted.PDF", "attachment.encrypted_document", Action.ACCEPT,
                 id="encrypted-pdf-logged"),
    pytest.param("Win.Trojan.Agent-1", "av.infected", Action.REJECT, id="virus"),
])
def test_policy_signatures_are_the_attachment_rules(signature: str, rule: str,
                                                    action: Action) -> None:
    s = content()
    result = evaluate(io.BytesIO(message()), s, envelope=ENV,
                      scanner=FakeScanner(infected(signature)))
    [v] = result.verdicts
    assert (v.rule, v.action) == (rule, action)
    if rule == "attachment.executable":
        assert v.article == s.attachments.executable_citation != ""
        assert v.detail["detected"] == "clamav:" + signature.removesuffix(".UNOFFICIAL")
    if rule == "av.infected":
        assert v.article == s.antivirus.citation


def test_policy_detection_follows_the_attachment_mode() -> None:
    result = evaluate(io.BytesIO(message()), content(**{"attachments.mode": "monitor"}),
                      envelope=ENV,
                      scanner=FakeScanner(infected("MailWarden.Executable.PE.UNOFFICIAL")))
    assert result.decisive is None and result.verdicts[0].monitor


def test_decide_once_a_refused_message_is_not_scanned() -> None:
    scanner = FakeScanner()
    result = evaluate(io.BytesIO(message(("setup.exe", b"MZ" + b"\0" * 100))), content(),
                      scanner=scanner, envelope=ENV)
    assert result.decisive is not None and result.decisive.rule == "attachment.executable"
    assert scanner.calls == [] and result.scan_skipped


def _uninspectable(fp: BinaryIO, env: Envelope | None, deadline: float) -> Analysis:
    from mailwarden.inspect import Finding, FindingKind, MessageModel
    from mailwarden.rules import attachments

    model = MessageModel(findings=[Finding(FindingKind.UNINSPECTABLE, "x.zip",
                                           "entry-limit")])
    return Analysis(verdicts=attachments.decide(model, content().attachments), model=model)


def test_uninspectable_gets_only_a_short_scan_and_its_timeout_changes_nothing() -> None:
    scanner = FakeScanner(clamd.ScanOutcome(clamd.ScanStatus.ERROR, error="timeout after 5s"))
    result = evaluate(io.BytesIO(message()), content(), scanner=scanner, envelope=ENV,
                      analyser=_uninspectable)
    [(_, timeout_s, _)] = scanner.calls
    assert timeout_s == pytest.approx(5.0, abs=0.5)  # antivirus.refused_scan, not .timeout
    assert [v.rule for v in result.verdicts] == ["attachment.uninspectable"]


def test_uninspectable_with_an_executable_clamd_found_cites_the_executable() -> None:
    scanner = FakeScanner(infected("MailWarden.Executable.PE.UNOFFICIAL"))
    result = evaluate(io.BytesIO(message()), content(), scanner=scanner, envelope=ENV,
                      analyser=_uninspectable)
    assert result.decisive is not None and result.decisive.rule == "attachment.executable"


def test_refused_scan_zero_skips_clamd() -> None:
    scanner = FakeScanner()
    result = evaluate(io.BytesIO(message()), content(**{"antivirus.refused_scan": 0}),
                      scanner=scanner, envelope=ENV, analyser=_uninspectable)
    assert scanner.calls == [] and result.scan_skipped


# -- the clamd gate ------------------------------------------------------------------------

TIMEOUT = clamd.ScanOutcome(clamd.ScanStatus.ERROR, error="timeout after 60s (reply)")


def test_breaker_opens_after_consecutive_timeouts_and_answers_at_once() -> None:
    clock = Clock()
    inner = FakeScanner(TIMEOUT)
    events: list[str] = []
    gate = ScanGate(inner, max_scans=4, breaker_timeouts=2, breaker_pause_s=30.0, clock=clock,
                    on_event=lambda text, values: events.append(text))
    assert gate(io.BytesIO(b"x"), 60, "raw").error.startswith("timeout")
    assert not gate.is_open
    gate(io.BytesIO(b"x"), 60, "raw")
    assert gate.is_open and len(inner.calls) == 2 and "open" in events[-1]
    refused = gate(io.BytesIO(b"x"), 60, "raw")
    assert refused.status is clamd.ScanStatus.ERROR and "circuit open" in refused.error
    assert len(inner.calls) == 2  # clamd not called
    clock.t += 31  # pause over: one trial
    inner.outcome = CLEAN
    assert gate(io.BytesIO(b"x"), 60, "raw").clean
    assert not gate.is_open and "closed" in events[-1]


def test_failed_trial_reopens_the_breaker() -> None:
    clock = Clock()
    inner = FakeScanner(TIMEOUT)
    gate = ScanGate(inner, max_scans=4, breaker_timeouts=1, breaker_pause_s=30.0, clock=clock)
    gate(io.BytesIO(b"x"), 60, "raw")
    clock.t += 31
    gate(io.BytesIO(b"x"), 60, "raw")  # the trial times out
    assert gate.is_open and len(inner.calls) == 2
    assert "circuit open" in gate(io.BytesIO(b"x"), 60, "raw").error


def test_scans_in_flight_are_bounded() -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        started.release()
        release.wait(10)
        return CLEAN

    gate = ScanGate(slow, max_scans=1, breaker_timeouts=2, breaker_pause_s=30.0)
    t = threading.Thread(target=gate, args=(io.BytesIO(b"x"), 10, "a"))
    t.start()
    assert started.acquire(timeout=10)
    waited = gate(io.BytesIO(b"x"), 0.05, "b")  # no slot within its deadline
    assert waited.status is clamd.ScanStatus.ERROR and "slot" in waited.error
    release.set()
    t.join(10)
