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
