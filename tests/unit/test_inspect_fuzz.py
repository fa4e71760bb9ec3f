"""Property-based fuzzing of the MIME walker and of every archive lister.

Inputs are seeds from the adversarial and clean corpora (each carrying an
executable under a harmless name, or nothing), mutated by hypothesis: bytes
flipped, inserted, deleted, duplicated, truncated. Properties:

  * nothing escapes and nothing is an internal error (a bug caught by the
    walker's last-resort handler still counts as a failure here);
  * the time and memory budgets hold (per example: CPU time, and the peak
    of Python allocations while inspecting);
  * no input from which a real reader (Python's email; unzip, 7z, bsdtar)
    yields an executable is accepted.

The CI budget is modest; a longer run: MAILWARDEN_FUZZ_EXAMPLES=5000 (the
number of examples per test; the archive tests take a tenth of it each,
since every example runs three extractors).
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.inspect import FindingKind, MessageModel, inspect_message
from tests.unit.inspect_corpus import (
    TOOLS,
    archive_executables,
    clam_exe,
    message_executables,
    refused,
    tnef,
    uuencode,
    yenc,
)
from tests.unit.test_inspect_archives import gzip_named
from tests.unit.test_inspect_builders import (
    LIMITS,
    attachment,
    docx,
    mime_message,
    pdf,
    rar4,
    rar5,
    sevenzip,
    text_part,
    zip_bytes,
)

EXAMPLES = int(os.environ.get("MAILWARDEN_FUZZ_EXAMPLES", "300"))
ARCHIVE_EXAMPLES = max(10, EXAMPLES // 10)
CPU_BUDGET_S = 5.0
MEMORY_BUDGET = 96 * 1024 * 1024
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_ARCHIVES = settings(FUZZ, max_examples=ARCHIVE_EXAMPLES)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "dup", "truncate"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("="), ord("-"), 10]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 512))]
        else:
            del data[pos:]
    return bytes(data)


def inspect_within_budget(raw: bytes) -> MessageModel:
    tracemalloc.start()
    start = time.process_time()
    try:
        model = inspect_message(io.BytesIO(raw), LIMITS, time.monotonic() + 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.process_time() - start < CPU_BUDGET_S
    assert peak < MEMORY_BUDGET
    assert not [f for f in model.findings if f.detected == "internal-error"], model.findings
    return model


# ------------------------------------------------------------------ MIME


@functools.cache
def mime_seeds() -> list[bytes]:
    exe = clam_exe()
    return [
        mime_message([text_part(), attachment(exe, "hoadon.pdf")]),
        mime_message([text_part(), attachment(docx(), "a.docx"), attachment(pdf(), "b.pdf")]),
        mime_message([b"Content-Type: text/plain\r\n\r\n" + uuencode("a.pdf", exe)]),
        mime_message([b"Content-Type: text/plain\r\n\r\n" + yenc("a.pdf", exe)]),
        mime_message([b"Content-Type: message/rfc822\r\n\r\n"
                      + mime_message([attachment(exe, "x.pdf")], boundary=b"in")]),
        mime_message([attachment(tnef([("a.pdf", exe)]), "winmail.dat")]),
        mime_message([b"Content-Type: application/octet-stream; name=a.pdf\r\n"
                      b"Content-Transfer-Encoding: x-uuencode\r\n\r\n" + uuencode("a.pdf", exe)]),
    ]


@FUZZ
@given(st.data())
def test_fuzz_mime_walker(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(mime_seeds()))
    raw = data.draw(mutated(seed))
    model = inspect_within_budget(raw)
    found = message_executables(raw)
    if found:
        assert refused(model), (found, model.findings)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_mime_walker_on_noise(raw: bytes) -> None:
    inspect_within_budget(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + raw)


# -------------------------------------------------------------- archives


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@functools.cache
def archive_seeds(tmp: str) -> dict[str, tuple[bytes, str]]:
    from pathlib import Path

    exe = clam_exe()
    files = {"readme.txt": b"hello " * 50, "hoadon.pdf": exe}
    seeds = {
        "zip": (zip_bytes(files), ".zip"),
        "zip-stored": (zip_bytes(files, method=0), ".zip"),
        "tar": (_tar(files), ".tar"),
        "gzip": (gzip_named(exe, "hoadon.pdf"), ".gz"),
        "rar5": (rar5([("readme.txt", b"hello", False), ("hoadon.pdf", exe, False)]), ".rar"),
        "rar4": (rar4([("readme.txt", b"hello", False), ("hoadon.pdf", exe, False)]), ".rar"),
        "tnef": (tnef([("hoadon.pdf", exe)]), ".dat"),
    }
    if TOOLS["7z"] is not None:
        seeds["7z"] = (sevenzip(Path(tmp), files, "-mx=1"), ".7z")
        seeds["7z-plain-header"] = (sevenzip(Path(tmp), files, "-mhc=off", "-mx=0",
                                             name="b.7z"), ".7z")
    return seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    return archive_seeds(str(tmp_path_factory.mktemp("seeds")))


@pytest.mark.parametrize("fmt", ["zip", "zip-stored", "tar", "gzip", "rar5", "rar4", "tnef",
                                 "7z", "7z-plain-header"])
def test_fuzz_archive_lister(fmt: str, seeds: dict[str, tuple[bytes, str]]) -> None:
    if fmt not in seeds:
        pytest.skip("7z not installed")
    seed, suffix = seeds[fmt]

    @FUZZ_ARCHIVES
    @given(mutated(seed))
    def run(data: bytes) -> None:
        raw = mime_message([text_part(), attachment(data, "tai-lieu" + suffix)])
        model = inspect_within_budget(raw)
        yielded = archive_executables(data, suffix)
        if yielded:
            assert refused(model), (yielded, model.findings)

    run()


def test_fuzz_seeds_are_refused(seeds: dict[str, tuple[bytes, str]]) -> None:
    """Unmutated, every seed carries an executable mailwarden finds."""
    for fmt, (seed, suffix) in seeds.items():
        model = inspect_within_budget(mime_message([attachment(seed, "tai-lieu" + suffix)]))
        assert any(f.kind is FindingKind.EXECUTABLE for f in model.findings), (fmt, model)
