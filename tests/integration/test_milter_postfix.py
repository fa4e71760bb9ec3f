"""The milter end to end: real Postfix -> mailwarden milter (+ real clamd) -> sink.

Each content rule is refused at the right SMTP stage with the right code; clean
mail arrives byte for byte; malformed input gets a verdict and the milter keeps
serving. Issue #3.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from harness.clamd import ClamdInstance, eicar_bytes
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import Transaction, send

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
ALICE = "alice@ninhbinh.gov.vn"


def pe32() -> bytes:
    pe = bytearray(1024)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe[0x80:0x84] = b"PE\0\0"
    pe[0x98:0x9A] = (0x10B).to_bytes(2, "little")
    return bytes(pe)


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def message(*attachments: tuple[str, str, bytes], to: str = "x@gmail.com",
            text: str = "Kính gửi anh chị, xin gửi kèm tài liệu.\n") -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = ALICE, to, "Tài liệu họp"
    m["Date"], m["Message-ID"] = "Mon, 23 Nov 2026 08:00:00 +0700", "<t1@ninhbinh.gov.vn>"
    m.set_content(text)
    for name, ctype, data in attachments:
        main, sub = ctype.split("/")
        m.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class MilterStack:
    postfix: PostfixInstance
    milter: Daemon
    sink: Sink
    config: Path

    def send(self, msg: bytes, rcpts: tuple[str, ...] = ("x@gmail.com",),
             login: str | None = ALICE, **kw: Any) -> Transaction:
        return send(self.postfix.smtpd_port, ALICE, rcpts, msg, login=login, **kw)

    def check(self, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(self.config),
                               "check", *extra, str(path)], capture_output=True, text=True,
                              timeout=120)


@pytest.fixture(scope="module")
def milter_module(clamd: ClamdInstance) -> Iterator[MilterStack]:
    """One milter + Postfix + sink for the module (libmilter takes ~5 s to stop)."""
    root = Path(tempfile.mkdtemp(prefix="mailwarden-milter-"))
    root.chmod(0o755)
    sink = Sink(root / "sink").start()
    redis = RedisInstance(root / "redis").start()
    sock = root / "milter.sock"
    config = write_config(root / "mailwarden.toml", {
        "milter.listen": f"unix:{sock}", "milter.socket_mode": "0666",
        "antivirus.clamd": clamd.address, "redis.url": redis.url, "logging.level": "info"})
    milter = Daemon("milter", config, f"unix:{sock}", root / "milter.log").start()
    pf = PostfixInstance(root / "postfix", relay_port=sink.port, milter=f"unix:{sock}").start()
    try:
        yield MilterStack(pf, milter, sink, config)
    finally:
        pf.stop()
        milter.stop()
        redis.stop()
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def milter_stack(milter_module: MilterStack) -> MilterStack:
    """The module's stack with an empty sink (after the previous test's mail has left)."""
    deadline = time.monotonic() + 30
    while "Mail queue is empty" not in milter_module.postfix.queue():
        assert time.monotonic() < deadline, milter_module.postfix.queue()
        time.sleep(0.05)
    for f in milter_module.sink.dir.iterdir():
        f.unlink(missing_ok=True)
    return milter_module


def refused_at_data(t: Transaction, code: str) -> str:
    assert t.data is not None, t
    text = f"{t.data[0]} {t.data[1]}"
    assert text.startswith(code), text
    return text


@pytest.mark.parametrize("attachments,code,words", [
    pytest.param([("hoa-don.pdf", "application/pdf", pe32())], "550 5.7.1",
                 ["hoa-don.pdf", "Dieu 4.2"], id="pe-renamed-pdf"),
    pytest.param([("bao-cao.zip", "application/zip",
                   zip_of([("setup.exe", b"just a name")]))], "550 5.7.1",
                 ["bao-cao.zip/setup.exe"], id="exe-name-in-zip"),
    pytest.param([("a.zip", "application/zip",
                   zip_of([("b.zip", zip_of([("run.pdf", pe32())]))]))], "550 5.7.1",
                 ["a.zip/b.zip/run.pdf"], id="pe-in-nested-zip"),
    pytest.param([("eicar.txt", "text/plain", b"")], "550 5.7.1",
                 ["Eicar-Test-Signature"], id="eicar-plain"),
    pytest.param([("tai-lieu.zip", "application/zip", b"zip:eicar")], "550 5.7.1",
                 ["Eicar-Test-Signature"], id="eicar-in-zip"),
    pytest.param([("outer.zip", "application/zip", b"zip:zip:eicar")], "550 5.7.1",
                 ["Eicar-Test-Signature"], id="eicar-in-nested-zip"),
])
def test_refused_at_end_of_data(milter_stack: MilterStack, attachments: list[Any], code: str,
                                words: list[str]) -> None:
    resolved = []
    for name, ctype, data in attachments:
        if data == b"":
            data = eicar_bytes()
        elif data == b"zip:eicar":
            data = zip_of([("eicar.txt", eicar_bytes())])
        elif data == b"zip:zip:eicar":
            data = zip_of([("inner.zip", zip_of([("eicar.txt", eicar_bytes())]))])
        resolved.append((name, ctype, data))
    t = milter_stack.send(message(*resolved))
    text = refused_at_data(t, code)
    for w in words:
        assert w in text
    milter_stack.postfix.wait_for_log(r"milter-reject: END-OF-MESSAGE from .*: 5\.7\.1 ")
    assert milter_stack.sink.messages() == []


def test_encrypted_zip_refused(milter_stack: MilterStack, tmp_path: Path) -> None:
    (tmp_path / "bang-luong.xlsx").write_bytes(b"PK\x03\x04 not really")
    subprocess.run(["zip", "-q", "-P", "matkhau", str(tmp_path / "luong.zip"),
                    "bang-luong.xlsx"], cwd=tmp_path, check=True)
    t = milter_stack.send(message(("luong.zip", "application/zip",
                                   (tmp_path / "luong.zip").read_bytes())))
    assert "luong.zip" in refused_at_data(t, "550 5.7.1")


def test_clean_mail_is_delivered_byte_for_byte(milter_stack: MilterStack) -> None:
    rng = random.Random(8)
    pdf = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + rng.randbytes(20000)
    docx = zip_of([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>")])
    xlsx = zip_of([("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<workbook/>")])
    png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(5000)
    jpg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(5000)
    ics = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Hop giao ban\r\n"
           b"DTSTART:20261124T020000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    msg = message(("Quyết định 162.pdf", "application/pdf", pdf),
                  ("Báo cáo.docx", "application/vnd.openxmlformats-officedocument."
                   "wordprocessingml.document", docx),
                  ("so-lieu.xlsx", "application/vnd.openxmlformats-officedocument."
                   "spreadsheetml.sheet", xlsx),
                  ("anh.png", "image/png", png), ("anh.jpg", "image/jpeg", jpg),
                  ("cac-van-ban.zip", "application/zip", zip_of([("a.pdf", pdf), ("b.pdf", pdf)])),
                  ("lich-hop.ics", "text/calendar", ics),
                  text="Kính gửi Sở Khoa học và Công nghệ tỉnh Ninh Bình.\n")
    t = milter_stack.send(msg)
    assert t.data is not None and t.data[0] == 250, t.data
    [(_, data)] = milter_stack.sink.wait_for(1)
    received, _sep, rest = data.partition(b"\r\nFrom: ")
    assert received.startswith(b"Received: ") and b"From: " + rest == msg


def test_size_cap_29_mb_delivered_31_mb_refused(milter_stack: MilterStack) -> None:
    rng = random.Random(29)
    ok = milter_stack.send(message(("ban-do.tif", "image/tiff", rng.randbytes(29 * MiB))))
    assert ok.data is not None and ok.data[0] == 250, ok.data
    too_big = milter_stack.send(message(("ban-do.tif", "image/tiff", rng.randbytes(31 * MiB))))
    text = refused_at_data(too_big, "552 5.3.4")
    assert "Dieu 8.1.b" in text and "30.0 MB" in text
    assert len(milter_stack.sink.wait_for(1)) == 1


def test_announced_size_refused_at_mail_from(milter_stack: MilterStack) -> None:
    t = milter_stack.send(message(), mail_options=["SIZE=49000000"])
    assert t.mail[0] == 552 and "5.3.4" in t.mail[1] and t.rcpt == {}
    ok = milter_stack.send(message(), mail_options=["SIZE=40000000"])
    assert ok.mail[0] == 250 and ok.data is not None and ok.data[0] == 250


def test_clamd_down_defers_with_451(postfix_dir: Path, sink: Sink, redis_server: RedisInstance,
                                    postfix_factory: Callable[..., PostfixInstance]) -> None:
    gone = ClamdInstance(postfix_dir / "clamd-gone").start()
    address = gone.address
    gone.stop()
    sock = postfix_dir / "milter2.sock"
    config = write_config(postfix_dir / "mw2.toml", {
        "milter.listen": f"unix:{sock}", "milter.socket_mode": "0666",
        "antivirus.clamd": address, "redis.url": redis_server.url})
    milter = Daemon("milter", config, f"unix:{sock}", postfix_dir / "milter2.log").start()
    try:
        pf = postfix_factory(milter=f"unix:{sock}")
        t = send(pf.smtpd_port, ALICE, ["x@gmail.com"], message(), login=ALICE)
        assert "Virus scan temporarily unavailable" in refused_at_data(t, "451 4.7.1")
        assert "rule=av.unavailable" in milter.log_text()
        assert sink.messages() == []
    finally:
        milter.stop()


MALFORMED = {
    "missing-closing-boundary": (
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-1.4 no end\r\n"),
    "broken-base64": (
        b"Content-Type: application/octet-stream; name=x.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!!not*base64@@@@\r\nQUJD\r\n=\r\n"),
    "header-without-colon": b"this header has no colon\r\nX-Ok: 1\r\n\r\nbody\r\n",
    "8bit-header": "Subject: Hóa đơn\r\nX-Tên: giá trị\r\n\r\nbody\r\n".encode(),
    "thousands-of-parts": b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + b"".join(
        b"--B\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(3000))
        + b"--B--\r\n",
    "deep-nesting": b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(200)) + b"Content-Type: text/plain\r\n\r\nx\r\n",
    "1mb-header-line": b"X-Long: " + b"a" * (1024 * 1024) + b"\r\n\r\nbody\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_input_gets_a_verdict_and_the_milter_keeps_serving(
        milter_stack: MilterStack, name: str) -> None:
    raw = b"From: someone@gmail.com\r\nTo: alice@ninhbinh.gov.vn\r\n" + MALFORMED[name]
    t = milter_stack.send(raw, rcpts=(ALICE,), login=None)
    assert t.data is not None and t.data[0] in (250, 550, 552, 451), t.data
    assert t.data[0] != 451 or "internal" not in t.data[1]
    after = milter_stack.send(message(to=ALICE), rcpts=(ALICE,), login=None)
    assert after.data is not None and after.data[0] == 250
    assert milter_stack.milter.proc is not None and milter_stack.milter.proc.poll() is None


def test_check_command_explains_a_verdict_offline(milter_stack: MilterStack,
                                                  tmp_path: Path) -> None:
    """`mailwarden check FILE.eml` gives the milter's verdict with every reason (JSON)."""
    bad = tmp_path / "bad.eml"
    bad.write_bytes(message(("hoa-don.pdf.exe", "application/octet-stream", pe32()),
                            ("eicar.txt", "text/plain", eicar_bytes())))
    out = milter_stack.check(bad, "--json")
    assert out.returncode == 1, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["action"] == "reject" and verdict["reply"].startswith("550 5.7.1")
    rules = {r["rule"] for r in verdict["reasons"]}
    assert rules == {"attachment.executable"}  # decide once: refused, so clamd is not asked
    virus = tmp_path / "virus.eml"
    virus.write_bytes(message(("eicar.txt", "text/plain", eicar_bytes())))
    out = milter_stack.check(virus, "--json", "--sasl-user", ALICE)  # ours: signed, not spoof
    assert {r["rule"] for r in json.loads(out.stdout)["reasons"]} == {"av.infected"}
    good = tmp_path / "good.eml"
    good.write_bytes(message(("a.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n")))
    ok = milter_stack.check(good, "--sasl-user", ALICE)
    assert ok.returncode == 0 and ok.stdout.startswith("accept"), ok.stdout
    missing = milter_stack.check(tmp_path / "nope.eml")
    assert missing.returncode == 2
