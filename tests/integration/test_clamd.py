"""mailwarden.clients.clamd against a real, private clamd (harness.clamd).

The database is two local hash signatures (EICAR, clam.exe); see the sandbox module.
"""

from __future__ import annotations

import io
import os
import random
import socket
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from harness.clamd import (
    CLAM_EXE_SIGNATURE,
    EICAR_SIGNATURE,
    POLICY_PE_SIGNATURE,
    TESTFILES,
    ClamdInstance,
    eicar_bytes,
)
from mailwarden.clients.clamd import ScanStatus, ping, scan_many, scan_stream, version
from tests.integration.clamd_fixtures import require_clamd

pytestmark = pytest.mark.integration

CLEAN, INFECTED, ERROR = ScanStatus.CLEAN, ScanStatus.INFECTED, ScanStatus.ERROR
MiB = 1024 * 1024
TIMEOUT_S = 60.0


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def mime_message(attachment: bytes, filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@ninhbinh.gov.vn"
    msg["To"] = "b@ninhbinh.gov.vn"
    msg["Subject"] = "Hoa don thang 11"
    msg.set_content("Kính gửi anh chị, xin gửi kèm hóa đơn.\n")
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                       filename=filename)
    return msg.as_bytes()


def random_bytes(n: int, seed: int = 162) -> bytes:
    return random.Random(seed).randbytes(n)


def in_chunks(data: bytes, size: int = 1 * MiB) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


# --- detections ------------------------------------------------------------------------------


def test_eicar_plain(clamd: ClamdInstance) -> None:
    outcome = scan_stream(eicar_bytes(), address=clamd.address, timeout_s=TIMEOUT_S)
    assert (outcome.status, outcome.signature) == (INFECTED, EICAR_SIGNATURE)
    assert outcome.error == ""


def test_eicar_over_tcp(clamd: ClamdInstance) -> None:
    outcome = scan_stream(eicar_bytes(), address=clamd.inet_address, timeout_s=TIMEOUT_S)
    assert (outcome.status, outcome.signature) == (INFECTED, EICAR_SIGNATURE)


ARCHIVES: list[tuple[str, Callable[[], bytes]]] = [
    ("zip", lambda: zip_of([("readme.txt", b"hello"), ("eicar.com", eicar_bytes())])),
    ("nested zip x3", lambda: zip_of([("outer/inner.zip", zip_of([
        ("inner2.zip", zip_of([("deep/eicar.com", eicar_bytes())]))]))])),
    ("mail attachment", lambda: mime_message(eicar_bytes(), "hoa-don.com")),
    ("zipped mail attachment", lambda: mime_message(zip_of([("x.com", eicar_bytes())]),
                                                    "hoa-don.zip")),
]


@pytest.mark.parametrize("make", [a[1] for a in ARCHIVES], ids=[a[0] for a in ARCHIVES])
def test_eicar_in_containers(clamd: ClamdInstance,
                            make: Callable[[], bytes]) -> None:
    outcome = scan_stream(make(), address=clamd.address, timeout_s=TIMEOUT_S)
    assert (outcome.status, outcome.signature) == (INFECTED, EICAR_SIGNATURE)


@pytest.mark.parametrize("name", ["clam.exe", "clam.zip", "clam.7z", "clam.tar.gz",
                                  "clam.exe.bz2", "clam.mail", "clam.exe.mbox.base64"])
def test_clamav_testfiles(clamd: ClamdInstance, name: str) -> None:
    with open(TESTFILES / name, "rb") as f:  # a file object: the spool-file path
        outcome = scan_stream(f, address=clamd.address, timeout_s=TIMEOUT_S)
    # clam.exe is a PE: the policy signature (conf/clamav/) may be the name clamd reports.
    assert outcome.status is INFECTED
    assert outcome.signature in (CLAM_EXE_SIGNATURE, POLICY_PE_SIGNATURE)


CLEAN_DATA: list[tuple[str, Callable[[], bytes]]] = [
    ("vietnamese text", lambda: ("Công văn số 162/2025: đề nghị các đơn vị rà soát hộp thư "
                                 "công vụ.\n" * 2000).encode()),
    ("random bytes", lambda: random_bytes(3 * MiB)),
    ("zip of clean text", lambda: zip_of([("baocao.txt", "Báo cáo quý IV".encode())])),
    ("empty", lambda: b""),
    ("eicar minus one byte", lambda: eicar_bytes()[:-1]),
]


@pytest.mark.parametrize("make", [c[1] for c in CLEAN_DATA], ids=[c[0] for c in CLEAN_DATA])
def test_clean_data(clamd: ClamdInstance, make: Callable[[], bytes]) -> None:
    outcome = scan_stream(make(), address=clamd.address, timeout_s=TIMEOUT_S)
    assert outcome.status is CLEAN, outcome


# --- sizes: the 30 MB cap must be scanned, over-limit must be surfaced ------------------------


def test_30_mib_stream_is_scanned_clean(clamd: ClamdInstance) -> None:
    outcome = scan_stream(in_chunks(random_bytes(30 * MiB)), address=clamd.address,
                          timeout_s=TIMEOUT_S)
    assert outcome.status is CLEAN, outcome
    assert outcome.error == ""


def test_30_mib_message_with_eicar_at_the_very_end(clamd: ClamdInstance) -> None:
    """A ~42 MB raw message whose 30 MiB zip attachment ends with EICAR: detected only if
    clamd really took the whole stream and unpacked all of it (no silent size skip)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("data.bin", random_bytes(30 * MiB))
        z.writestr("zz/eicar.com", eicar_bytes())
    raw = mime_message(buf.getvalue(), "so-lieu.zip")
    assert len(raw) > 40 * MiB
    outcome = scan_stream(io.BytesIO(raw), address=clamd.address, timeout_s=TIMEOUT_S)
    assert (outcome.status, outcome.signature) == (INFECTED, EICAR_SIGNATURE)


def test_stream_of_exactly_stream_max_length_is_scanned(clamd: ClamdInstance) -> None:
    block = random_bytes(MiB)
    n = clamd.stream_max_bytes // MiB
    assert n * MiB == clamd.stream_max_bytes
    outcome = scan_stream((block for _ in range(n)), address=clamd.address, timeout_s=TIMEOUT_S)
    assert outcome.status is CLEAN, outcome


def test_stream_over_stream_max_length_is_an_error(clamd: ClamdInstance) -> None:
    block = random_bytes(MiB)
    n = clamd.stream_max_bytes // MiB

    def over() -> Iterator[bytes]:
        yield from (block for _ in range(n))
        yield b"!"

    outcome = scan_stream(over(), address=clamd.address, timeout_s=TIMEOUT_S)
    assert outcome.status is ERROR
    assert outcome.error == "clamd: INSTREAM size limit exceeded."


# --- several parts ---------------------------------------------------------------------------


def test_scan_many_attachments_and_raw_message(clamd: ClamdInstance) -> None:
    infected_zip = zip_of([("x.com", eicar_bytes())])
    parts = [
        ("bao-cao.pdf", b"%PDF-1.4 clean enough"),
        ("so-lieu.zip", infected_zip),
        ("raw", mime_message(infected_zip, "so-lieu.zip")),
    ]
    outcome = scan_many(parts, address=clamd.address, timeout_s=TIMEOUT_S)
    assert (outcome.status, outcome.signature, outcome.part) == (
        INFECTED, EICAR_SIGNATURE, "so-lieu.zip")

    clean = scan_many([("a.txt", b"a"), ("raw", mime_message(b"b", "b.txt"))],
                      address=clamd.address, timeout_s=TIMEOUT_S)
    assert clean.status is CLEAN, clean


def test_concurrent_scans_from_many_threads(clamd: ClamdInstance) -> None:
    """pymilter runs one thread per SMTP connection; clamd has MaxThreads 2 here."""
    payloads = [eicar_bytes() if i % 2 else random_bytes(256 * 1024, seed=i) for i in range(16)]
    results: list[ScanStatus | None] = [None] * len(payloads)

    def work(i: int) -> None:
        results[i] = scan_stream(payloads[i], address=clamd.address, timeout_s=TIMEOUT_S).status

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [INFECTED if i % 2 else CLEAN for i in range(len(payloads))]


# --- health ----------------------------------------------------------------------------------


def test_ping_and_version(clamd: ClamdInstance) -> None:
    assert ping(clamd.address, timeout_s=5)
    assert ping(clamd.inet_address, timeout_s=5)
    v = version(clamd.address, timeout_s=5)
    assert v is not None and v.startswith("ClamAV 1.")


# --- failures --------------------------------------------------------------------------------


def test_stopped_clamd_is_an_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    require_clamd()
    instance = ClamdInstance(tmp_path_factory.mktemp("clamd-stopped"), inet=True).start()
    try:
        pid = instance.pid
        for address in (instance.address, instance.inet_address):
            assert scan_stream(eicar_bytes(), address=address, timeout_s=10).status is INFECTED
    finally:
        instance.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for address in (instance.address, instance.inet_address):
        outcome = scan_stream(eicar_bytes(), address=address, timeout_s=10)
        assert outcome.status is ERROR, outcome
        assert outcome.error.startswith("connect "), outcome
        assert not ping(address, timeout_s=2)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A unix socket that listens and never accepts or answers."""
    with tempfile.TemporaryDirectory(prefix="mw-silent-", dir="/tmp") as d:
        path = Path(d) / "silent.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
            s.listen(8)
            yield f"unix:{path}"


@pytest.mark.parametrize(("size", "phase"), [(68, "reply"), (32 * MiB, "send")],
                         ids=["small: waits for the reply", "large: blocks while sending"])
def test_deadline_shorter_than_the_scan(silent_server: str, size: int, phase: str) -> None:
    outcome = scan_stream(bytes(size), address=silent_server, timeout_s=0.5)
    assert outcome.status is ERROR
    assert outcome.error == f"timeout after 0.5s ({phase})"
