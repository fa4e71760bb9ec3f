"""The milter's callbacks on pymilter's test context, and the worker pool (issue 8, 13).

Milter.testctx.TestCtx drives WardenMilter the way libmilter does (negotiate, connect,
MAIL, RCPT, headers, body, EOM) with real messages; clamd is a fake scanner behind the
engine's gate. The pool tests start real worker processes and make them misbehave with
the test hook (MAILWARDEN_TEST_WORKER_HOOK): crash, spin past the CPU limit, hang past
the deadline. Each costs one message a 451 and the next message is judged normally.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any, BinaryIO

import Milter
import pytest
from Milter import testctx

from mailwarden.clients import clamd
from mailwarden.config import load_config
from mailwarden.engine import Envelope
from mailwarden.engine.workers import WorkerLimits, WorkerPool, failure_analysis
from mailwarden.milter import app
from mailwarden.settings import Settings

ALICE = "alice@ninhbinh.gov.vn"
OK = (Milter.CONTINUE, Milter.NOREPLY)  # callbacks marked @noreply answer NOREPLY


def message(*attachments: tuple[str, bytes], hook: str = "") -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = ALICE, "x@gmail.com", "Tai lieu"
    if hook:
        m["X-Test-Worker"] = hook
    m.set_content("Kinh gui anh chi.\n")
    for name, data in attachments:
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m.as_bytes()


class Scans:
    def __init__(self) -> None:
        self.calls = 0
        self.outcome = clamd.ScanOutcome(clamd.ScanStatus.CLEAN)

    def __call__(self, fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        self.calls += 1
        return self.outcome


@pytest.fixture
def milter(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[testctx.TestCtx, Scans]]:
    cfg = load_config(None, {"milter.release_on_refusal": False, "auth.enabled": False})
    rt = app.Runtime(cfg)  # no pool: the same engine in-process
    scans = Scans()
    rt.engine.gate.scanner = scans
    monkeypatch.setattr(app, "RUNTIME", rt)
    monkeypatch.setattr(Milter, "factory", app.WardenMilter)
    ctx = testctx.TestCtx()
    ctx._setsymval("i", "4Q8Zl02Bv1z")
    ctx._setsymval("{auth_authen}", ALICE)
    ctx._negotiate()  # the factory makes the WardenMilter (testctx's _connect would close
    m = ctx._priv     # the context on the NOREPLY of our @noreply connect)
    m.connect("pc1.example", socket.AF_INET, ("10.20.30.40", 40000))
    m.hello("pc1.example")
    yield ctx, scans
    ctx._close()


def feed(ctx: testctx.TestCtx, raw: bytes) -> int:
    """MAIL, RCPT, headers, EOH, body, EOM in libmilter's order; the first refusal wins."""
    import email

    steps: list[Any] = [lambda: ctx._envfrom(f"<{ALICE}>"),
                        lambda: ctx._envrcpt("<x@gmail.com>")]
    msg = email.message_from_bytes(raw)
    steps += [lambda h=h, v=v: ctx._header(h, v) for h, v in msg.items()]
    body = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    steps += [ctx._eoh, lambda: ctx._feed_body(io.BytesIO(body)), ctx._eom]
    for step in steps:
        rc = int(step())
        if rc not in OK:
            return rc
    return rc


def test_clean_message_is_accepted_after_one_raw_scan(milter: Any) -> None:
    ctx, scans = milter
    assert feed(ctx, message(("bao-cao.pdf", b"%PDF-1.4\n%%EOF\n"))) == Milter.CONTINUE
    assert scans.calls == 1 and app.RUNTIME is not None and app.RUNTIME.in_flight == 0


def test_executable_is_refused_550_without_asking_clamd(milter: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ctx, scans = milter
    pe = b"MZ" + b"\0" * 0x3A + (0x40).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 200
    with caplog.at_level("INFO", logger="mailwarden.milter"):
        assert feed(ctx, message(("hoa-don.pdf", pe))) == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.7.1") and scans.calls == 0
    assert any("rule=attachment.executable" in r.getMessage() for r in caplog.records)


def test_policy_signature_from_clamd_is_the_executable_rule(milter: Any) -> None:
    ctx, scans = milter
    scans.outcome = clamd.ScanOutcome(clamd.ScanStatus.INFECTED,
                                      signature="MailWarden.Executable.PE.UNOFFICIAL")
    assert feed(ctx, message(("winmail.dat", b"\x78\x9f\x3e\x22" + b"\0" * 64))) == \
        Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.7.1") and "Executable" in ctx._reply[2]


def test_stopping_milter_answers_mail_from_451(milter: Any) -> None:
    ctx, scans = milter
    assert app.RUNTIME is not None
    app.RUNTIME.stopping.set()
    assert feed(ctx, message()) == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.2") and scans.calls == 0


def test_in_flight_count_goes_back_to_zero_on_abort(milter: Any) -> None:
    ctx, _ = milter
    rt = app.RUNTIME
    assert rt is not None
    ctx._envfrom(f"<{ALICE}>")
    assert rt.in_flight == 1
    ctx._abort()
    assert rt.in_flight == 0 and rt.wait_idle(0.01) == 0


# -- the worker pool -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    mp = pytest.MonkeyPatch()
    mp.setenv("MAILWARDEN_TEST_WORKER_HOOK", "1")
    s = Settings.from_config(load_config(None, {"auth.enabled": False}))
    p = WorkerPool(s, 1, WorkerLimits(512 * 1024 * 1024, 1.0, 4.0)).start()
    mp.undo()
    yield p
    p.close()


ENV = Envelope(mail_from=ALICE, recipients=("x@gmail.com",), client_addr="10.20.30.40",
               authenticated=True)


def _analyse(p: WorkerPool, raw: bytes) -> Any:
    return p.analyse(io.BytesIO(raw), ENV, time.monotonic() + 60)


@pytest.mark.parametrize("hook,reason", [
    pytest.param("crash", "died", id="worker-dies"),
    pytest.param("spin", "cpu-limit", id="cpu-limit"),
    pytest.param("hog", "memory-limit", id="memory-limit"),
    pytest.param("sleep", "timeout", id="deadline"),
])
def test_a_failed_worker_costs_one_message_a_451_and_is_replaced(
        pool: WorkerPool, hook: str, reason: str) -> None:
    before = pool.pids()
    failed = _analyse(pool, message(hook=hook))
    assert failed.reason == reason, failed
    s = Settings.from_config(load_config(None, {}))
    [v] = failure_analysis(failed, s.content.attachments, "defer").verdicts
    assert (v.rule, v.smtp_code, v.detail["detected"]) == \
        ("attachment.uninspectable", 451, f"worker-{reason}")
    nxt = _analyse(pool, message(("setup.exe", b"MZ")))  # waits for the replacement
    assert [x.rule for x in nxt.verdicts] == ["attachment.executable"]
    assert pool.pids() != before


def test_worker_on_disk_spool_is_passed_as_a_descriptor(pool: WorkerPool) -> None:
    import tempfile

    raw = message(("so-lieu.bin", b"\x01" * (2 * 1024 * 1024)))
    with tempfile.SpooledTemporaryFile(max_size=1024) as spool:
        spool.write(raw)
        result = pool.analyse(spool, ENV, time.monotonic() + 60)
    assert result.model is not None and result.model.attachments[0].decoded_size == 2 * 2**20
