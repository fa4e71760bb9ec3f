"""Issue 8, classes 1-4: the adversarial corpus, checked differentially.

Each case is a message (or an archive attached to one) built by an attacker
who has read the code. Each is checked two ways: mailwarden must find what
the case is about (the expected finding token), and whatever the real
readers extract from it (Python's email under both policies; unzip, 7z and
bsdtar for archives) must not contain an executable mailwarden accepted.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import os
import quopri
import struct
import subprocess
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest

from mailwarden.inspect import FindingKind, InspectLimits, MessageModel
from mailwarden.rules import attachments as attachment_rules
from tests.unit.inspect_corpus import (
    TOOLS,
    archive_executables,
    clam_exe,
    elf_bytes,
    message_executables,
    rar5_service_flood,
    refused,
    set_7z_attribute_dir,
    sevenzip_folder_bomb,
    simple_zip,
    tnef,
    unicode_path_extra,
    uuencode,
    yenc,
    zip_entry,
    zip_from,
)
from tests.unit.test_inspect_builders import (
    LIMITS,
    PNG,
    attachment,
    inspect_bytes,
    mime_message,
    pdf,
    pe,
    sevenzip,
    text_part,
    tokens,
    zip_bytes,
)

RULES = attachment_rules.AttachmentSettings(
    enforce=True, max_bytes=30 << 20, size_overhead=1 << 20, encrypted_documents="log",
    uninspectable="reject", size_citation="x", executable_citation="y", encrypted_citation="z")


def rule_refuses(model: MessageModel) -> bool:
    return any(v.smtp_code >= 500 for v in attachment_rules.decide(model, RULES))


def check_message(raw: bytes, limits: InspectLimits = LIMITS) -> MessageModel:
    """Inspect, and hold mailwarden to what Python's email extracts."""
    model = inspect_bytes(raw, limits)
    found = message_executables(raw)
    if found:
        assert refused(model), f"email yields {found}, mailwarden accepted: {model.findings}"
        assert rule_refuses(model)
    return model


def check_archive(data: bytes, name: str, suffix: str) -> MessageModel:
    """Attach `data` as `name`, inspect, and hold mailwarden to what unzip,
    7z and bsdtar extract from it."""
    model = inspect_bytes(mime_message([text_part(), attachment(data, name)]))
    found = archive_executables(data, suffix)
    if found:
        assert refused(model), f"extractors yield {found}, mailwarden accepted: {model.findings}"
        assert rule_refuses(model)
    return model


def part(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")


# ================================================= class 1: caps that fail open


def test_class1_executable_after_a_hundred_findings_is_kept() -> None:
    encrypted = pdf(encrypted=True)
    parts = [attachment(encrypted, f"{i}.pdf") for i in range(150)]
    parts.append(attachment(pe(), "setup.exe"))
    model = check_message(mime_message(parts))
    assert len(model.findings) == LIMITS.max_findings
    last = model.findings[-1]
    assert (last.kind, last.detected) == (FindingKind.UNINSPECTABLE, "finding-limit")
    assert any(f.kind is FindingKind.EXECUTABLE for f in model.findings)
    assert rule_refuses(model)


def test_class1_finding_limit_alone_refuses() -> None:
    limits = dataclasses.replace(LIMITS, max_findings=3)
    parts = [attachment(pdf(encrypted=True), f"{i}.pdf") for i in range(10)]
    model = inspect_bytes(mime_message(parts), limits)
    assert "finding-limit" in tokens(model)
    assert rule_refuses(model)


@pytest.mark.parametrize("param", ["filename", "name", "boundary"])
def test_class1_parameter_after_64_junk_parameters(param: str) -> None:
    junk = "".join(f";\r\n x{i}=y" for i in range(70))
    if param == "boundary":
        inner = mime_message([attachment(pe(), "a.pdf")], boundary=b"deep")
        body = inner.split(b"\r\n\r\n", 1)[1]
        raw = (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed"
               + junk.encode() + b';\r\n boundary="deep"\r\n\r\n' + body)
    else:
        header = "Content-Disposition" if param == "filename" else "Content-Type"
        main = "attachment" if param == "filename" else "application/octet-stream"
        hdr = (f"{header}: {main}{junk};\r\n {param}=setup.exe\r\n"
               "Content-Transfer-Encoding: base64")
        raw = mime_message([text_part(), part(hdr, b64(b"harmless text"))])
    model = check_message(raw)
    assert "header-param-limit" in tokens(model)
    assert rule_refuses(model)


@pytest.mark.parametrize(("limits", "build", "token"), [
    pytest.param(dataclasses.replace(LIMITS, max_parts=5),
                 lambda: mime_message([attachment(b"x", f"{i}.txt") for i in range(10)]),
                 "part-limit", id="parts"),
    pytest.param(dataclasses.replace(LIMITS, max_mime_depth=2),
                 lambda: _nested(5), "mime-depth-limit", id="mime-depth"),
    pytest.param(dataclasses.replace(LIMITS, max_archive_entries=5),
                 lambda: mime_message([attachment(
                     zip_bytes({f"{i}.txt": b"x" for i in range(20)}), "a.zip")]),
                 "entry-limit", id="entries"),
    pytest.param(dataclasses.replace(LIMITS, max_archive_depth=1),
                 lambda: mime_message([attachment(
                     zip_bytes({"in.zip": zip_bytes({"a.txt": b"x"})}), "a.zip")]),
                 "depth-limit", id="archive-depth"),
    pytest.param(dataclasses.replace(LIMITS, max_expanded_bytes=1000),
                 lambda: mime_message([attachment(
                     zip_bytes({"a.txt": b"x" * 100_000}), "a.zip")]),
                 "expanded-limit", id="bytes"),
    pytest.param(dataclasses.replace(LIMITS, max_header_bytes=1000),
                 lambda: mime_message([text_part()], headers=b"X-Junk: " + b"a" * 2000 + b"\r\n"),
                 "header-limit", id="header-bytes"),
    pytest.param(dataclasses.replace(LIMITS, max_archive_entries=10),
                 lambda: mime_message([attachment(rar5_service_flood(5000), "a.rar")]),
                 "object-limit", id="objects"),
])
def test_class1_every_cap_is_uninspectable(limits: InspectLimits, build: object,
                                           token: str) -> None:
    model = inspect_bytes(build(), limits)  # type: ignore[operator]
    assert token in tokens(model)
    assert any(f.kind is FindingKind.UNINSPECTABLE and f.detected == token
               for f in model.findings)
    assert rule_refuses(model)


def _nested(depth: int) -> bytes:
    inner = attachment(pe(), "a.pdf")
    for level in range(depth):
        b = f"n{level}".encode()
        inner = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n"
                 + inner + b"\r\n--" + b + b"--")
    return mime_message([inner])


def test_class1_time_budget_is_uninspectable() -> None:
    ticks = iter(range(10_000))
    raw = io.BytesIO(mime_message([attachment(zip_bytes({"a.txt": b"x" * 10}), f"{i}.zip")
                                   for i in range(50)]))
    from mailwarden.inspect import inspect_message

    model = inspect_message(raw, LIMITS, 30.0, clock=lambda: float(next(ticks)))
    assert "time-limit" in tokens(model)
    assert rule_refuses(model)


# ================================================= class 2: MIME like the readers


EXE = pe()


@pytest.mark.parametrize("cte", ["base64 x", "base64 (binary)", "base64;", "(b) base64",
                                 "BASE64 ; foo"])
def test_class2_cte_with_trailing_junk_is_decoded(cte: str) -> None:
    raw = mime_message([text_part(), part(
        "Content-Type: application/octet-stream; name=report.pdf\n"
        f"Content-Transfer-Encoding: {cte}", b64(EXE))])
    model = check_message(raw)
    assert "pe32" in tokens(model)


def test_class2_two_cte_headers() -> None:
    raw = mime_message([text_part(), part(
        "Content-Type: application/octet-stream; name=report.pdf\n"
        "Content-Transfer-Encoding: 7bit\nContent-Transfer-Encoding: base64", b64(EXE))])
    assert "pe32" in tokens(check_message(raw))


@pytest.mark.parametrize("delimiter", [b"foo bar", b"foo"])
def test_class2_unquoted_boundary_with_a_space(delimiter: bytes) -> None:
    body = (b"--" + delimiter + b"\r\n" + attachment(EXE, "a.pdf") + b"\r\n--" + delimiter
            + b"--\r\n")
    raw = (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=foo bar"
           b"\r\n\r\n" + body)
    assert "pe32" in tokens(check_message(raw))


@pytest.mark.parametrize("header", ["Content-Name", "X-Sun-Data-Name"])
def test_class2_name_only_in_old_headers(header: str) -> None:
    raw = mime_message([text_part(), part(
        f"Content-Type: application/octet-stream\n{header}: setup.exe\n"
        "Content-Transfer-Encoding: base64", b64(b"just text"))])
    assert "name:.exe" in tokens(check_message(raw))


def test_class2_rfc2231_sections_with_leading_zeros() -> None:
    raw = mime_message([text_part(), part(
        'Content-Type: application/octet-stream\nContent-Disposition: attachment;'
        ' filename*0000="set"; filename*0001="up.exe"\nContent-Transfer-Encoding: base64',
        b64(b"just text"))])
    model = check_message(raw)
    assert "name:.exe" in tokens(model)


def test_class2_base64_with_padding_early_in_a_line() -> None:
    encoded = base64.b64encode(EXE)
    broken = encoded[:2] + b"=" + encoded[2:]
    lines = b"\r\n".join(broken[i : i + 76] for i in range(0, len(broken), 76))
    raw = mime_message([text_part(), part(
        "Content-Type: application/octet-stream; name=a.pdf\nContent-Transfer-Encoding: base64",
        lines)])
    model = check_message(raw)
    assert message_executables(raw)  # the oracle does produce the PE
    assert "pe32" in tokens(model)


@pytest.mark.parametrize("cte", ["x-uuencode", "x-uue", "uuencode"])
def test_class2_uuencoded_part(cte: str) -> None:
    raw = mime_message([text_part(), part(
        f"Content-Type: application/octet-stream; name=a.pdf\nContent-Transfer-Encoding: {cte}",
        uuencode("a.pdf", EXE))])
    assert "pe32" in tokens(check_message(raw))


@pytest.mark.parametrize("encoding", ["8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize("block", ["uuencode", "yenc"])
def test_class2_encoded_block_inside_a_text_body(encoding: str, block: str) -> None:
    blob = uuencode("hoadon.pdf", EXE) if block == "uuencode" else yenc("hoadon.pdf", EXE)
    text = b"Kinh gui anh chi,\r\nFile dinh kem:\r\n\r\n" + blob + b"\r\nXin cam on.\r\n"
    if encoding == "quoted-printable":
        body = quopri.encodestring(text)
    elif encoding == "base64":
        body = b64(text)
    else:
        body = text
    raw = mime_message([part("Content-Type: text/plain; charset=utf-8\n"
                             f"Content-Transfer-Encoding: {encoding}", body)])
    model = check_message(raw)
    assert "pe32" in tokens(model), model.findings
    assert rule_refuses(model)


@pytest.mark.parametrize("ctype", ["message/news", "message/global", "message/x-anything",
                                   "message/delivery-status"])
def test_class2_every_message_part_is_walked(ctype: str) -> None:
    inner = mime_message([text_part(), attachment(EXE, "a.pdf")], boundary=b"inner")
    raw = mime_message([text_part(), part(f"Content-Type: {ctype}", inner)])
    assert "pe32" in tokens(check_message(raw))


def test_class2_tnef_with_an_executable() -> None:
    data = tnef([("readme.txt", b"hello"), ("hoadon.pdf", clam_exe())])
    raw = mime_message([text_part(), attachment(data, "winmail.dat",
                                                content_type="application/ms-tnef")])
    model = check_message(raw)
    assert {"pe32"} <= tokens(model), model.findings


def test_class2_tnef_that_looks_like_a_pdf() -> None:
    # "%PDF-" in the first KiB makes a file a PDF for readers; TNEF's magic at
    # offset 0 must still win, or the executable inside is never looked at.
    data = tnef([("a.pdf", b"%PDF-1.4\n"), ("b.pdf", clam_exe())])
    model = check_message(mime_message([attachment(data, "winmail.dat")]))
    assert "pe32" in tokens(model)


def test_class2_tnef_executable_by_long_name_only() -> None:
    data = tnef([("setup.exe", b"not really")])
    model = check_message(mime_message([attachment(data, "winmail.dat")]))
    assert "name:.exe" in tokens(model)


def test_class2_clamav_tnef_sample() -> None:
    sample = Path("/usr/share/clamav-testfiles/clam.tnef")
    if not sample.exists():
        pytest.skip("clamav-testfiles not installed")
    model = check_message(mime_message([attachment(sample.read_bytes(), "winmail.dat")]))
    assert refused(model) and "name:.exe" in tokens(model)


def test_class2_nul_in_a_file_name() -> None:
    raw = mime_message([text_part(), part(
        "Content-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=utf-8''setup.exe%00.pdf\n"
        "Content-Transfer-Encoding: base64", b64(b"text"))])
    assert "name:.exe" in tokens(check_message(raw))


def test_class2_multipart_without_boundary_is_uninspectable() -> None:
    raw = (b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\n"
           + attachment(EXE, "a.pdf") + b"\r\n--x--\r\n")
    model = check_message(raw)
    assert "multipart-without-boundary" in tokens(model)


# ============================================ class 3: archives like extractors


@pytest.mark.parametrize("prefix", [b"GIF89a" + b"\0" * 200, b"%PDF-1.7\n" + b"x" * 300,
                                    PNG])
def test_class3_zip_with_data_in_front(prefix: bytes) -> None:
    data = prefix + zip_bytes({"hoadon.pdf": clam_exe()})
    model = check_archive(data, "anh.gif", ".zip")
    assert "pe32" in tokens(model)


def test_class3_two_concatenated_zips() -> None:
    first = zip_bytes({"hoadon.pdf": clam_exe()})
    second = zip_bytes({"readme.txt": b"hello"})
    model = check_archive(first + second, "a.zip", ".zip")
    assert "pe32" in tokens(model)


def test_class3_unicode_path_names_another_file() -> None:
    extra = unicode_path_extra(b"readme.txt", "setup.exe")
    data = simple_zip([(b"readme.txt", b"hello")], extra=extra)
    model = check_archive(data, "a.zip", ".zip")
    assert "name:.exe" in tokens(model)


def test_class3_directory_declares_fewer_bytes_than_the_entry_holds() -> None:
    # Sniffed from the data, not the declared size: the PE is found ...
    big = clam_exe() + b"\0" * 70_000
    lo, ce = zip_entry(b"anh.jpg", big, declared_usize=10)
    model = check_archive(zip_from([(lo, ce)]), "a.zip", ".zip")
    assert "pe32" in tokens(model)
    # ... and when there is nothing to find, the lie itself is uninspectable.
    lo, ce = zip_entry(b"anh.jpg", b"text " * 20_000, declared_usize=10)
    model = check_archive(zip_from([(lo, ce)]), "a.zip", ".zip")
    assert "inconsistent-archive" in tokens(model)


def test_class3_local_and_central_names_differ() -> None:
    lo, ce = zip_entry(b"setup.exe", b"hello", cd_name=b"readme.txt")
    model = check_archive(zip_from([(lo, ce)]), "a.zip", ".zip")
    assert {"name:.exe", "inconsistent-archive"} <= tokens(model)


def test_class3_hidden_local_entry() -> None:
    hidden, _ = zip_entry(b"setup.exe", clam_exe())
    lo, ce = zip_entry(b"readme.txt", b"hello", offset=len(hidden))
    data = zip_from([(hidden + lo, ce)])
    model = check_archive(data, "a.zip", ".zip")
    assert "pe32" in tokens(model)


@pytest.mark.skipif(TOOLS["7z"] is None, reason="7z not installed")
def test_class3_7z_directory_entry_holding_data(tmp_path: Path) -> None:
    data = sevenzip(tmp_path, {"hoadon.pdf": clam_exe()}, "-mhc=off", "-mx=0")
    flagged = set_7z_attribute_dir(data)
    model = check_archive(flagged, "a.7z", ".7z")
    assert "inconsistent-archive" in tokens(model)
    assert "pe32" in tokens(model)


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_class3_sparse_tar_member(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "hoadon.pdf"
    with open(sparse, "wb") as f:
        f.write(clam_exe())
        f.seek(1 << 20)
        f.write(b"tail")
    out = tmp_path / "a.tar"
    result = subprocess.run(["tar", f"--format={fmt}", "-S", "-cf", str(out), "hoadon.pdf"],
                            cwd=src, capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip("GNU tar cannot write sparse members here")
    model = check_archive(out.read_bytes(), "a.tar", ".tar")
    assert refused(model)


def test_class3_tar_pax_size_override() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("readme.txt")
        payload = clam_exe()
        info.size = len(payload)
        info.pax_headers = {"comment": "x"}
        tf.addfile(info, io.BytesIO(payload))
    model = check_archive(buf.getvalue(), "a.tar", ".tar")
    assert "pe32" in tokens(model)


def test_class3_gzip_header_name_differs() -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="setup.exe", mode="wb", fileobj=buf, mtime=0) as g:
        g.write(b"harmless text\n")
    model = check_message(mime_message([attachment(buf.getvalue(), "ghichu.txt.gz")]))
    assert "name:.exe" in tokens(model)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="ghichu.txt", mode="wb", fileobj=buf, mtime=0) as g:
        g.write(b"harmless text\n")
    model = check_message(mime_message([attachment(buf.getvalue(), "setup.exe.gz")]))
    assert "name:.exe" in tokens(model)


def far_pe(offset: int = 100_000) -> bytes:
    b = bytearray(offset + 512)
    b[0:2] = b"MZ"
    struct.pack_into("<HHH", b, 2, 0x90, 3, 0)
    struct.pack_into("<H", b, 8, 4)
    struct.pack_into("<I", b, 0x3C, offset)
    b[offset : offset + 4] = b"PE\0\0"
    struct.pack_into("<H", b, offset + 24, 0x20B)
    return bytes(b)


def test_class3_pe_header_beyond_the_sniff_window() -> None:
    model = check_message(mime_message([attachment(far_pe(), "anh.jpg")]))
    assert "pe32+" in tokens(model)
    model = check_archive(zip_bytes({"anh.jpg": far_pe()}), "a.zip", ".zip")
    assert tokens(model) & {"pe32+", "mz"}
    inconsistent_dos = bytearray(far_pe())
    struct.pack_into("<H", inconsistent_dos, 4, 0)  # e_cp = 0: not a DOS program
    model = check_archive(zip_bytes({"anh.jpg": bytes(inconsistent_dos)}), "a.zip", ".zip")
    assert "pe32+" in tokens(model)


def test_class3_elf_in_a_zip_behind_a_pdf_header() -> None:
    data = pdf() + zip_bytes({"tool": elf_bytes()})
    model = check_archive(data, "baocao.pdf", ".zip")
    assert "elf" in tokens(model)


# ======================================================= class 4: budgets in loops


def test_class4_7z_folder_bomb_is_bounded() -> None:
    bomb = sevenzip_folder_bomb(2_000_000)
    assert len(bomb) < 64 * 1024
    raw = mime_message([attachment(bomb, "a.7z")])
    tracemalloc.start()
    start = time.process_time()
    try:
        model = inspect_bytes(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    cpu = time.process_time() - start
    assert refused(model)
    assert "object-limit" in tokens(model), model.findings
    assert cpu < 5
    assert peak < 64 * 1024 * 1024


def test_class4_rar_service_header_flood_is_bounded() -> None:
    flood = rar5_service_flood(100_000)
    raw = mime_message([attachment(flood, "a.rar")])
    start = time.process_time()
    model = inspect_bytes(raw)
    assert time.process_time() - start < 5
    assert "object-limit" in tokens(model)


def test_class4_empty_gzip_members_are_bounded() -> None:
    one = gzip.compress(b"", mtime=0)
    data = one * 200_000
    start = time.process_time()
    model = inspect_bytes(mime_message([attachment(data, "a.gz")]))
    assert time.process_time() - start < 5
    assert "object-limit" in tokens(model)


def test_class4_zip_with_a_huge_directory_is_cut_early() -> None:
    data = simple_zip([(f"{i}.txt".encode(), b"") for i in range(30_000)], method=0)
    start = time.process_time()
    model = inspect_bytes(mime_message([attachment(data, "a.zip")]))
    assert time.process_time() - start < 5
    assert "entry-limit" in tokens(model)


@pytest.mark.skipif(not os.environ.get("MAILWARDEN_SLOW_TESTS"), reason="slow: set "
                    "MAILWARDEN_SLOW_TESTS=1")
def test_class4_7z_folder_bomb_in_the_real_7z() -> None:  # pragma: no cover - manual
    bomb = sevenzip_folder_bomb(200_000)
    assert isinstance(archive_executables(bomb, ".7z"), dict)


# ============================================ found by fuzzing (kept as cases)


def test_fuzz_found_body_glued_to_headers_ends_at_the_boundary() -> None:
    # A part whose blank line is damaged: its body is read as held header
    # lines; the boundary after it must still end it, or the next part (an
    # executable) is swallowed into this one's text.
    raw = mime_message([
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\x0b\r\nKinh gui,\r\n"
        b"Xin cam on.",
        attachment(clam_exe(), "hoadon.pdf")])
    raw = raw.replace(b"8bit\r\x0b\r\n\r\n", b"8bit\r\x0b\r\n")
    model = check_message(raw)
    assert "pe32" in tokens(model)


def test_bare_cr_hiding_a_header_field_is_uninspectable() -> None:
    raw = mime_message([
        b"Content-Type: text/plain\rContent-Type: application/x-msdownload; name=a.exe\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(b"text")])
    model = check_message(raw)
    assert "bare-cr-in-header" in tokens(model)


def test_fuzz_found_bare_cr_ends_the_top_header_block_for_python() -> None:
    inner = mime_message([attachment(clam_exe(), "x.pdf")], boundary=b"in")
    raw = mime_message([b"Content-Type: message/rfc822\r\n\r\n" + inner])
    raw = raw.replace(b'boundary="=_b1"\r\n\r\n', b'boundary="=_b1"\r\x0b\r\n', 1)
    model = check_message(raw)
    assert "bare-cr-in-header" in tokens(model)


def test_boundary_after_a_bare_cr_is_uninspectable() -> None:
    raw = mime_message([
        b"Content-Type: text/plain\r\n\r\nhello\r--=_b1\r\n" + attachment(clam_exe(), "a.pdf")])
    model = check_message(raw)
    assert "bare-cr-boundary" in tokens(model)


def test_fuzz_found_zip_missing_its_first_byte_with_deflate64_local_header() -> None:
    # One byte gone from the front (every offset one too far) and the local
    # header saying Deflate64 (method 9): 7-Zip still extracts the member.
    data = bytearray(zip_bytes({"readme.txt": b"hello " * 50, "hoadon.pdf": clam_exe()}))
    second = data.index(b"PK\x03\x04", 4)
    data[second + 8] = 9
    model = check_archive(bytes(data[1:]), "tai-lieu.zip", ".zip")
    assert refused(model)


def test_fuzz_found_damaged_deflate_member_head_is_sniffed() -> None:
    # The member's deflate stream is damaged after its first few hundred
    # bytes: unzip and 7z write out what inflated before the damage (an MZ/PE
    # head), so that head must be sniffed, not thrown away with the error.
    data = bytearray(zip_bytes({"hoadon.pdf": clam_exe()}))
    start = 30 + len(b"hoadon.pdf")
    data[start + 200] ^= 0xFF
    model = check_archive(bytes(data), "tai-lieu.zip", ".zip")
    assert refused(model)
