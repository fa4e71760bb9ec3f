"""The milter under faults, through the real Postfix (issues 8 and 13).

* a worker process killed mid-message: that message gets 451, the next is judged normally;
* an executable hidden in TNEF is refused with the executable rule;
* clamd frozen (SIGSTOP): a multi-part message is answered within one antivirus.timeout,
  an unrelated session is answered promptly, and after the breaker opens at once;
* SIGTERM with sessions in flight: each gets an answer, the socket is removed, the final
  statistics line is written.

Worker misbehaviour comes from the test hook (MAILWARDEN_TEST_WORKER_HOOK in the milter's
environment; a header X-Test-Worker: nap|sleep|... in the message).
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.clamd import TESTFILES, ClamdInstance
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send
from tests.integration.test_milter_postfix import ALICE, message

pytestmark = pytest.mark.integration


def with_hook(raw: bytes, hook: str) -> bytes:
    return f"X-Test-Worker: {hook}\r\n".encode() + raw


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(x) for x in text]
    return out


def stack(tmp: Path, clamd_address: str, postfix_factory: Callable[..., PostfixInstance],
          monkeypatch: pytest.MonkeyPatch, **over: Any) -> tuple[Daemon, PostfixInstance, Path]:
    monkeypatch.setenv("MAILWARDEN_TEST_WORKER_HOOK", "1")
    sock = tmp / "mw.sock"
    config = write_config(tmp / "mw.toml", {
        "milter.listen": f"unix:{sock}", "milter.socket_mode": "0666",
        "antivirus.clamd": clamd_address, "milter.release_on_refusal": False,
        "logging.level": "info", **over})
    milter = Daemon("milter", config, f"unix:{sock}", tmp / "milter.log").start()
    pf = postfix_factory(milter=f"unix:{sock}")
    return milter, pf, sock


def test_worker_killed_mid_message_gives_451_and_the_next_is_judged(
        postfix_dir: Path, clamd: ClamdInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    milter, pf, _ = stack(postfix_dir, clamd.address, postfix_factory, monkeypatch)
    try:
        result: dict[str, Transaction] = {}
        t = threading.Thread(target=lambda: result.update(
            t=send(pf.smtpd_port, ALICE, ["x@gmail.com"], with_hook(message(), "sleep"),
                   login=ALICE)))
        t.start()
        deadline = time.monotonic() + 20
        while "worker" not in milter.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the message is in a worker now (it sleeps there)
        for pid in children(milter.pid):
            os.kill(pid, signal.SIGKILL)
        t.join(60)
        data = result["t"].data
        assert data is not None and data[0] == 451, data
        nxt = send(pf.smtpd_port, ALICE, ["x@gmail.com"],
                   message(("setup.exe", "application/octet-stream", b"MZ" + b"\0" * 64)),
                   login=ALICE)
        assert nxt.data is not None and nxt.data[0] == 550, nxt.data
        ok = send(pf.smtpd_port, ALICE, ["x@gmail.com"], message(), login=ALICE)
        assert ok.data is not None and ok.data[0] == 250, ok.data
        assert "worker process failed" in milter.log_text()
    finally:
        milter.stop()


def test_executable_in_tnef_is_refused_as_executable(
        postfix_dir: Path, clamd: ClamdInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    milter, pf, _ = stack(postfix_dir, clamd.address, postfix_factory, monkeypatch)
    try:
        tnef = (TESTFILES / "clam.tnef").read_bytes()
        t = send(pf.smtpd_port, ALICE, ["x@gmail.com"],
                 message(("winmail.dat", "application/ms-tnef", tnef)), login=ALICE)
        assert t.data is not None and t.data[0] == 550, t.data
        assert "Executable" in t.data[1] or "thuc thi" in t.data[1], t.data
        assert "rule=attachment.executable" in milter.log_text()
    finally:
        milter.stop()


def test_clamd_frozen_answers_within_one_timeout_and_others_are_served(
        postfix_dir: Path, sink: Sink, postfix_factory: Callable[..., PostfixInstance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    own = ClamdInstance(postfix_dir / "clamd").start()
    milter, pf, _ = stack(postfix_dir, own.address, postfix_factory, monkeypatch,
                          **{"antivirus.timeout": 5.0, "antivirus.breaker_timeouts": 1,
                             "antivirus.breaker_pause": 60.0})
    try:
        os.kill(own.pid, signal.SIGSTOP)
        parts = message(("a.pdf", "application/pdf", b"%PDF-1.4\n" + b"a" * 50000),
                        ("b.pdf", "application/pdf", b"%PDF-1.4\n" + b"b" * 50000),
                        ("c.txt", "text/plain", b"c" * 20000))
        result: dict[str, Any] = {}

        def first() -> None:
            start = time.monotonic()
            result["t"] = send(pf.smtpd_port, ALICE, ["x@gmail.com"], parts, login=ALICE)
            result["s"] = time.monotonic() - start

        th = threading.Thread(target=first)
        th.start()
        time.sleep(1.0)  # the first message waits on the frozen clamd
        start = time.monotonic()
        probe = send(pf.smtpd_port, ALICE, ["y@ninhbinh.gov.vn"], None, login=ALICE)
        assert probe.mail[0] == 250 and time.monotonic() - start < 3.0  # served promptly
        th.join(60)
        assert result["t"].data[0] == 451 and result["s"] < 5.0 + 3.0, result
        start = time.monotonic()
        after = send(pf.smtpd_port, ALICE, ["x@gmail.com"], message(), login=ALICE)
        assert after.data is not None and after.data[0] == 451
        assert time.monotonic() - start < 3.0  # the breaker answers at once
        assert "circuit breaker open" in milter.log_text()
    finally:
        os.kill(own.pid, signal.SIGCONT)
        milter.stop()
        own.stop()


def test_sigterm_under_load_answers_everyone_and_cleans_up(
        postfix_dir: Path, clamd: ClamdInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    milter, pf, sock = stack(postfix_dir, clamd.address, postfix_factory, monkeypatch,
                             **{"milter.shutdown_grace": 10.0})
    results: list[Transaction] = []
    lock = threading.Lock()

    def one() -> None:
        t = send(pf.smtpd_port, ALICE, ["x@gmail.com"], with_hook(message(), "nap"),
                 login=ALICE)
        with lock:
            results.append(t)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for th in threads:
        th.start()
    time.sleep(1.0)  # sessions are in flight (each naps 2 s in a worker)
    assert milter.proc is not None
    milter.proc.send_signal(signal.SIGTERM)
    milter.proc.wait(40)
    for th in threads:
        th.join(60)
    assert len(results) == 6
    for t in results:
        assert t.data is not None and t.data[0] in (250, 451), t.data
    assert sum(1 for t in results if t.data and t.data[0] == 250) >= 1
    assert not sock.exists()
    assert "stopped; statistics:" in milter.log_text()


def _raw(headers: str, body: bytes) -> bytes:
    head = (f"From: {ALICE}\r\nTo: x@gmail.com\r\nSubject: bom\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <bomb@ninhbinh.gov.vn>\r\n"
            "MIME-Version: 1.0\r\n" + headers)
    return head.encode() + b"\r\n" + body


def test_header_bomb_is_answered_within_the_budget_and_the_next_message_passes(
        postfix_dir: Path, clamd: ClamdInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 8: thousands of header fields and a Content-Type whose boundary comes after
    2,000 junk parameters (a cap that used to fail open: the message became one text part)
    get an answer from the milter itself, inside its budget, not Postfix's milter timeout;
    the executable behind the hidden boundary is never let through."""
    milter, pf, _ = stack(postfix_dir, clamd.address, postfix_factory, monkeypatch,
                          **{"milter.worker_timeout": 20.0})
    try:
        fields = "".join(f"X-Pad-{i}: {'a' * 60}\r\n" for i in range(3000))
        params = "".join(f';\r\n p{i}="x"' for i in range(2000))
        body = (b"--B\r\nContent-Type: text/plain\r\n\r\nxin chao\r\n--B\r\n"
                b"Content-Type: application/octet-stream; name=\"setup.exe\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(b"MZ" + b"\0" * 62 + b"PE\0\0" + b"\0" * 64)
                .replace(b"\n", b"\r\n") + b"--B--\r\n")
        raw = _raw(fields + f"Content-Type: multipart/mixed{params};\r\n boundary=B\r\n",
                   body)
        started = time.monotonic()
        t = send(pf.smtpd_port, ALICE, ["x@gmail.com"], raw, login=ALICE)
        took = time.monotonic() - started
        assert t.data is not None and t.data[0] in (550, 451), t.data
        assert took < 20.0 + 10.0, took  # the worker's deadline, plus generous slack
        assert "rule=attachment." in milter.log_text()
        ok = send(pf.smtpd_port, ALICE, ["x@gmail.com"], message(), login=ALICE)
        assert ok.data is not None and ok.data[0] == 250, ok.data
    finally:
        milter.stop()


@pytest.mark.parametrize("form", ["cte-trailing-token", "two-cte-headers", "uuencoded-in-text"])
def test_virus_in_a_malformed_part_is_refused(
        postfix_dir: Path, clamd: ClamdInstance, sink: Sink,
        postfix_factory: Callable[..., PostfixInstance],
        monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """Issue 8, class 5: whatever our walk makes of a broken part, clamd reads the raw
    message too, so a virus in it is refused (these were accepted before)."""
    import binascii

    from harness.clamd import eicar_bytes

    milter, pf, _ = stack(postfix_dir, clamd.address, postfix_factory, monkeypatch)
    try:
        virus = eicar_bytes()
        b64 = base64.encodebytes(virus).replace(b"\n", b"\r\n")
        if form == "cte-trailing-token":
            part = (b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
                    b"Content-Transfer-Encoding: base64 (binary)\r\n\r\n" + b64)
        elif form == "two-cte-headers":
            part = (b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
                    b"Content-Transfer-Encoding: 7bit\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\n" + b64)
        else:
            uu = binascii.b2a_uu(virus[:45]) + binascii.b2a_uu(virus[45:])
            part = (b"Content-Type: text/plain\r\n\r\nXem tep dinh kem:\r\n\r\nbegin 644 a.com\r\n"
                    + uu.replace(b"\n", b"\r\n") + b"`\r\nend\r\n")
        body = (b"--B\r\nContent-Type: text/plain\r\n\r\nxin chao\r\n--B\r\n" + part
                + b"\r\n--B--\r\n")
        t = send(pf.smtpd_port, ALICE, ["x@gmail.com"],
                 _raw('Content-Type: multipart/mixed; boundary="B"\r\n', body), login=ALICE)
        assert t.data is not None and t.data[0] == 550, t.data
        assert sink.messages() == []
    finally:
        milter.stop()
