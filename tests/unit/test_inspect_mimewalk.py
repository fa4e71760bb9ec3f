"""The streaming MIME walk: names, content, sizes, broken input, limits."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import io
import itertools
import os
import time
import tracemalloc
import zipfile
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.inspect import (
    AttachmentInfo,
    DecodedPart,
    FindingKind,
    archives,
    inspect_message,
)
from mailwarden.inspect import mimewalk as mimewalk_module
from tests.unit.test_inspect_builders import (
    ICS,
    JPEG,
    LIMITS,
    PNG,
    attachment,
    by_token,
    docx,
    inspect_bytes,
    mime_message,
    one_attachment,
    pdf,
    pe,
    text_part,
    tokens,
    word_doc,
    xlsx,
    zip_bytes,
)

# ------------------------------------------------------------------ names


@pytest.mark.parametrize(("part", "file", "token"), [
    pytest.param(attachment(b"x", "setup.exe"), "setup.exe", "name:.exe", id="filename-quoted"),
    pytest.param(attachment(b"x", None, disposition_params="; filename=setup.EXE"),
                 "setup.EXE", "name:.exe", id="filename-token-upper-case"),
    pytest.param(attachment(b"x", None, disposition_params=(
        "; filename*=utf-8''h%C3%B3a%20%C4%91%C6%A1n.pdf.exe")),
        "hóa đơn.pdf.exe", "name:.exe", id="rfc2231-vietnamese-double-extension"),
    pytest.param(attachment(b"x", None, disposition_params=(
        ";\r\n filename*0*=utf-8''b%C3%A1o%20c%C3%A1o;\r\n filename*1=\".js\"")),
        "báo cáo.js", "name:.js", id="rfc2231-continuations"),
    pytest.param(attachment(b"x", None, type_params='; name="run.vbs"'), "run.vbs", "name:.vbs",
                 id="content-type-name-only"),
    pytest.param(attachment(b"x", "=?UTF-8?B?dMOgaSBsaeG7h3Uuc2Ny?="), "tài liệu.scr",
                 "name:.scr", id="rfc2047-b"),
    pytest.param(attachment(b"x", "=?utf-8?Q?t=C3=A0i_li=E1=BB=87u.bat?="), "tài liệu.bat",
                 "name:.bat", id="rfc2047-q"),
    pytest.param(attachment(b"x", "a.exe. "), "a.exe.", "name:.exe", id="trailing-dot-space"),
    pytest.param(attachment(b"x", "report.pdf", type_params='; name="report.hta"'),
                 "report.hta", "name:.hta", id="disposition-and-type-disagree"),
    pytest.param(attachment(b"x", None, disposition_params='; filename="a.pdf"; filename="b.lnk"'),
                 "b.lnk", "name:.lnk", id="duplicate-filename-parameters"),
])
def test_executable_names(part: bytes, file: str, token: str) -> None:
    model = inspect_bytes(mime_message([text_part(), part]))
    assert by_token(model).get(token) == file
    assert model.findings[0].kind is FindingKind.EXECUTABLE


def test_raw_utf8_filename_in_header() -> None:
    part = ("Content-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="Tờ trình.pdf.exe"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\neA==").encode()
    model = inspect_bytes(mime_message([part]))
    assert by_token(model) == {"name:.exe": "Tờ trình.pdf.exe"}
    assert model.attachments[0].name == "Tờ trình.pdf.exe"
    assert "8bit-header" not in model.defects  # valid UTF-8 is not a defect (RFC 6532)


def test_uuencoded_name_in_text_body() -> None:
    body = text_part("See attached\r\nbegin 644 virus.exe\r\nM9&%T80``\r\n`\r\nend")
    assert by_token(inspect_bytes(mime_message([body]))) == {"name:.exe": "(part 1)/virus.exe"}


# ---------------------------------------------------------------- content


def test_pe_renamed_pdf_is_executable() -> None:
    model = one_attachment(pe(), "hoa-don.pdf")
    assert by_token(model) == {"pe32": "hoa-don.pdf"}
    assert model.attachments[0] == AttachmentInfo("hoa-don.pdf", "application/octet-stream",
                                                  1024, "pe32")


def test_pe_as_quoted_printable() -> None:
    qp = binascii.b2a_qp(pe(), istext=False)
    model = inspect_bytes(mime_message([attachment(qp, "x.pdf", encoding="quoted-printable")]))
    assert tokens(model) == {"pe32"}
    assert model.attachments[0].decoded_size == len(pe())


def test_pe_hidden_as_html_body() -> None:
    part = (b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(pe()))
    model = inspect_bytes(mime_message([part]))
    assert tokens(model) == {"pe32"}
    assert model.attachments == []  # a body part, though still sniffed


def test_single_part_message_with_executable() -> None:
    raw = (b"From: a@b\r\nContent-Type: application/octet-stream; name=\"x.dat\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(pe()))
    model = inspect_bytes(raw)
    assert by_token(model) == {"pe32": "x.dat"}
    assert model.total_attachment_bytes == 1024


def test_zip_with_executable_inside_message() -> None:
    model = one_attachment(zip_bytes({"ho-so/hoa-don.pdf.exe": b"x"}), "ho-so.zip")
    assert by_token(model) == {"name:.exe": "ho-so.zip/ho-so/hoa-don.pdf.exe"}


@pytest.mark.parametrize(("data", "name", "content_type", "detected"), [
    pytest.param(pdf(), "bao-cao.pdf", "application/pdf", "pdf", id="pdf"),
    pytest.param(docx(), "quyet-dinh.docx", "application/vnd.openxmlformats-officedocument"
                 ".wordprocessingml.document", "docx", id="docx"),
    pytest.param(xlsx(), "so-lieu.xlsx", "application/vnd.ms-excel", "xlsx", id="xlsx"),
    pytest.param(PNG, "anh.png", "image/png", "png", id="png"),
    pytest.param(JPEG, "anh.jpg", "image/jpeg", "jpeg", id="jpeg"),
    pytest.param(zip_bytes({"a.pdf": pdf(), "b.pdf": pdf()}), "ho-so.zip", "application/zip",
                 "zip", id="zip-of-pdfs"),
    pytest.param(ICS, "invite.ics", "text/calendar", "text", id="ics"),
    pytest.param(word_doc(), "cong-van.doc", "application/msword", "doc", id="legacy-doc"),
])
def test_clean_attachments(data: bytes, name: str, content_type: str, detected: str) -> None:
    model = inspect_bytes(mime_message([text_part(), attachment(data, name, content_type)]))
    assert model.findings == []
    assert model.attachments == [AttachmentInfo(name, content_type, len(data), detected)]
    assert model.defects == []


# ---------------------------------------------------------- sizes, structure


def test_body_parts_are_not_attachments_but_inline_images_are() -> None:
    alternative = (b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
                   b"--alt\r\nContent-Type: text/plain\r\n\r\nxin chao\r\n"
                   b"--alt\r\nContent-Type: text/html\r\n\r\n<p>xin chao</p>\r\n--alt--")
    inline_png = (b"Content-Type: image/png\r\nContent-ID: <logo>\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PNG))
    text_file = (b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\n"
                 b"0123456789")
    model = inspect_bytes(mime_message([alternative, inline_png, text_file,
                                        attachment(pdf(), "a.pdf")]))
    assert [a.name for a in model.attachments] == ["", "", "a.pdf"]
    assert model.total_attachment_bytes == len(PNG) + 10 + len(pdf())


def test_identity_part_size_excludes_the_line_break_before_the_boundary() -> None:
    part = b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nab\r\ncd"
    model = inspect_bytes(mime_message([part]))
    assert model.attachments[0].decoded_size == len(b"ab\r\ncd")


def forwarded(inner_parts: list[bytes], encode: bool = False) -> bytes:
    inner = mime_message(inner_parts, boundary=b"inner-b")
    body = base64.encodebytes(inner) if encode else inner
    cte = b"Content-Transfer-Encoding: base64\r\n" if encode else b""
    return (b'Content-Type: message/rfc822; name="fwd.eml"\r\n' + cte + b"\r\n" + body)


@pytest.mark.parametrize("encode", [False, True], ids=["identity", "base64-encoded"])
def test_attached_message_is_walked(encode: bool) -> None:
    part = forwarded([text_part(), attachment(pe(), "inner.pdf")], encode)
    model = inspect_bytes(mime_message([text_part(), part]))
    assert by_token(model) == {"pe32": "fwd.eml/inner.pdf"}
    assert [a.name for a in model.attachments] == ["inner.pdf"]
    assert model.total_attachment_bytes == len(pe())
    assert model.headers[0] == ("From", "Nguoi Gui <a@ninhbinh.gov.vn>")  # outer headers only


def test_headers_are_top_level_unfolded() -> None:
    raw = (b"Subject: =?UTF-8?B?VGjDtG5nIGLDoW8=?=\r\n  continued\r\nX-A: 1\r\n\r\nbody\r\n")
    model = inspect_bytes(raw)
    assert model.headers == [("Subject", "=?UTF-8?B?VGjDtG5nIGLDoW8=?=  continued"), ("X-A", "1")]


def test_lf_line_endings() -> None:
    raw = mime_message([text_part(), attachment(pe(), "a.pdf")], eol=b"\n")
    assert b"\r" not in raw.replace(base64.encodebytes(pe()), b"")[:200]
    assert tokens(inspect_bytes(raw)) == {"pe32"}


def test_boundaries_that_prefix_each_other() -> None:
    inner = (b'Content-Type: multipart/mixed; boundary="abc"\r\n\r\n'
             b"--abc\r\n" + attachment(pe(), "x.pdf") + b"\r\n--abc--")
    raw = mime_message([inner, attachment(b"x", "y.exe")], boundary=b"abcdef")
    assert tokens(inspect_bytes(raw)) == {"pe32", "name:.exe"}


def test_boundary_with_trailing_whitespace() -> None:
    raw = mime_message([attachment(b"x", "a.exe")]).replace(b"--=_b1\r\n", b"--=_b1 \t\r\n")
    assert tokens(inspect_bytes(raw)) == {"name:.exe"}


# ---------------------------------------------------------- on_part hook


def test_on_part_streams_each_decoded_leaf() -> None:
    seen: list[tuple[DecodedPart, bytes]] = []

    def on_part(part: DecodedPart, fp: BinaryIO) -> None:
        seen.append((part, fp.read()))

    raw = mime_message([text_part("xin chao"), attachment(pdf(), "a.pdf")])
    inspect_bytes(raw, on_part=on_part)
    assert [(p.index, p.path, p.is_attachment, data) for p, data in seen] == [
        (0, "", False, b"xin chao"), (1, "a.pdf", True, pdf())]
    assert seen[1][0].info.detected_type == "pdf"


def test_on_part_exceptions_propagate() -> None:
    class ScannerDown(Exception):
        pass

    def on_part(part: DecodedPart, fp: BinaryIO) -> None:
        raise ScannerDown("clamd")

    with pytest.raises(ScannerDown):
        inspect_bytes(mime_message([text_part()]), on_part=on_part)


# ----------------------------------------------------------- broken input


def test_missing_closing_boundary() -> None:
    model = inspect_bytes(mime_message([text_part(), attachment(pe(), "a.pdf")], closing=False))
    assert "missing-closing-boundary" in model.defects
    assert tokens(model) == {"pe32"}


def test_broken_base64_still_decodes_what_it_can() -> None:
    encoded = base64.encodebytes(pe()).replace(b"\n", b"\r\n")
    broken = encoded[:40] + b"!!*" + encoded[40:] + b"Q"
    part = (b"Content-Type: application/octet-stream; name=x.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + broken)
    model = inspect_bytes(mime_message([part]))
    assert "broken-base64" in model.defects
    assert tokens(model) == {"pe32"}


def test_base64_concatenated_after_padding() -> None:
    body = base64.b64encode(pe()[:1000]) + b"\r\n" + base64.b64encode(pe()[1000:])
    part = (b"Content-Type: application/octet-stream; name=x.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body)
    model = inspect_bytes(mime_message([part]))
    assert model.attachments[0].decoded_size == len(pe())
    assert tokens(model) == {"pe32"}


def test_junk_line_before_part_headers() -> None:
    # Read both ways: the fields after the junk are read (the executable is
    # found), and since Python's email ends the header block at the junk line
    # (the rest is body for it), the part is also uninspectable.
    part = b"this line has no colon\r\n" + attachment(pe(), "a.pdf")
    model = inspect_bytes(mime_message([part]))
    assert "header-without-colon" in model.defects
    assert by_token(model)["pe32"] == "a.pdf"
    assert "header-without-colon" in by_token(model)


def test_body_glued_to_headers_without_blank_line() -> None:
    part = attachment(pe(), "a.pdf").replace(b"base64\r\n\r\n", b"base64\r\n")
    model = inspect_bytes(mime_message([part]))
    assert "header-without-colon" in model.defects
    assert by_token(model) == {"pe32": "a.pdf"}


def test_eight_bit_non_utf8_header() -> None:
    part = (b'Content-Type: application/octet-stream; name="t\xe0i li\xeau.exe"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\neA==")
    model = inspect_bytes(mime_message([part], headers=b"Subject: \xff\xfe b\xe1o c\xe1o\r\n"))
    assert "8bit-header" in model.defects
    assert tokens(model) == {"name:.exe"}
    assert dict(model.headers)["Subject"] == "\ufffd\ufffd b\ufffdo c\ufffdo"


def test_mbox_from_line_is_skipped() -> None:
    raw = b"From someone@example.com Mon Jan  1 00:00:00 2024\n" + mime_message(
        [attachment(b"x", "a.exe")], eol=b"\n")
    model = inspect_bytes(raw)
    assert model.headers[0][0] == "From"
    assert tokens(model) == {"name:.exe"}


@pytest.mark.parametrize("raw", [
    pytest.param(b"", id="empty"),
    pytest.param(b"Subject: x\r\n", id="headers-only"),
    pytest.param(b"\r\n\r\nbody only", id="no-headers"),
    pytest.param(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n", id="multipart-no-boundary"),
    pytest.param(b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n',
                 id="part-without-headers-at-eof"),
    pytest.param(b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n--x--\r\n',
                 id="empty-part"),
    pytest.param(b"\0" * 1000 + b"\xff" * 1000, id="binary-garbage"),
])
def test_degenerate_messages_give_a_model(raw: bytes) -> None:
    model = inspect_bytes(raw)
    assert [f for f in model.findings if f.detected == "internal-error"] == []


# ---------------------------------------------------------------- limits


def test_thousands_of_parts() -> None:
    parts = [attachment(b"x", f"{i}.txt", "text/plain") for i in range(3000)]
    start = time.monotonic()
    model = inspect_bytes(mime_message(parts))
    assert time.monotonic() - start < 5
    assert "part-limit" in model.defects
    assert tokens(model) == {"part-limit"}
    assert len(model.attachments) == LIMITS.max_parts - 1  # the multipart counts too
    assert by_token(model) == {"part-limit": ""}


def test_deep_multipart_nesting() -> None:
    depth = 500
    raw = b"Subject: deep\r\n"
    for i in range(depth):
        raw += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
    raw += attachment(b"x", "a.exe") + b"\r\n"
    for i in reversed(range(depth)):
        raw += f"--b{i}--\r\n".encode()
    model = inspect_bytes(raw)
    assert "mime-depth-limit" in tokens(model)
    assert "internal-error" not in tokens(model)


def test_megabyte_header_line() -> None:
    raw = mime_message([attachment(b"x", "a.exe")], headers=b"X-Long: " + b"a" * (1 << 20)
                       + b"\r\n")
    start = time.monotonic()
    model = inspect_bytes(raw)
    assert time.monotonic() - start < 2
    assert "header-limit" in model.defects
    assert "header-limit" in tokens(model)
    assert "name:.exe" not in tokens(model)  # the Content-Type came after the cut


def test_megabyte_header_line_in_a_part() -> None:
    part = b"X-Junk: " + b"b" * (1 << 20) + b"\r\n" + attachment(pe(), "a.pdf")
    model = inspect_bytes(mime_message([part, attachment(b"x", "b.exe")]))
    assert {"header-limit", "name:.exe"} <= tokens(model)


def test_time_limit_with_a_clock_that_runs_out() -> None:
    ticks = itertools.count()

    def clock() -> float:
        return float(next(ticks))

    parts = [attachment(pdf(), f"{i}.pdf") for i in range(100)]
    raw = io.BytesIO(mime_message(parts))
    model = inspect_message(raw, LIMITS, 20.0, clock=clock)
    assert tokens(model) == {"time-limit"}


def test_internal_error_in_one_part_does_not_stop_the_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = archives.inspect_blob
    calls = itertools.count()

    def flaky(*args: object) -> str:
        if next(calls) == 0:
            raise RuntimeError("bug")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("mailwarden.inspect.mimewalk.inspect_blob", flaky)
    model = inspect_bytes(mime_message([attachment(pdf(), "a.pdf"), attachment(pe(), "b.pdf")]))
    assert by_token(model) == {"internal-error": "a.pdf", "pe32": "b.pdf"}


def test_internal_error_never_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(mimewalk_module._Walker, "walk", broken)
    model = inspect_bytes(mime_message([text_part()]))
    assert tokens(model) == {"internal-error"}


def test_findings_are_capped() -> None:
    limits = dataclasses.replace(LIMITS, max_findings=5)
    parts = [attachment(b"x", f"{i}.exe") for i in range(20)]
    model = inspect_bytes(mime_message(parts), limits)
    assert len(model.findings) == 5
    assert "finding-limit" in model.defects


def test_large_attachment_memory_stays_bounded() -> None:
    """An 8 MiB base64 attachment: Python allocations peak far below its size
    (the decoded part spools to disk past `spool_memory_bytes`)."""
    payload = os.urandom(8 << 20)
    raw = mime_message([text_part(), attachment(payload, "scan.pdf", "application/pdf")])
    fp = io.BytesIO(raw)
    tracemalloc.start()
    try:
        model = inspect_message(fp, LIMITS, time.monotonic() + 60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.attachments[0].decoded_size == len(payload)
    assert peak < 4 << 20, f"peak {peak} bytes"


def test_spent_inflation_budget_does_not_stop_name_checks() -> None:
    inner = zip_bytes({"a.bin": bytes(range(256)) * 12_288}, zipfile.ZIP_STORED)
    limits = dataclasses.replace(LIMITS, max_expanded_bytes=1 << 20)
    raw = mime_message([attachment(gzip.compress(inner), "x.zip.gz"),
                        attachment(b"x", "later.exe")])
    model = inspect_bytes(raw, limits)
    assert by_token(model) == {"expanded-limit": "x.zip.gz/x.zip", "name:.exe": "later.exe"}


def test_attached_message_past_the_nesting_limit() -> None:
    limits = dataclasses.replace(LIMITS, max_mime_depth=1)
    part = forwarded([attachment(b"x", "a.exe")])
    model = inspect_bytes(mime_message([part]), limits)
    assert "mime-depth-limit" in tokens(model)


def test_eight_bit_boundary_still_splits_parts() -> None:
    raw = mime_message([attachment(pe(), "a.pdf")], boundary=b"b\xe9nh")
    model = inspect_bytes(raw)
    assert by_token(model) == {"pe32": "a.pdf"}
    assert model.defects == ["8bit-header"]


def test_duplicate_content_type_prefers_the_multipart_reading() -> None:
    raw = mime_message([attachment(pe(), "a.pdf")], headers=b"Content-Type: text/plain\r\n")
    model = inspect_bytes(raw)
    assert by_token(model) == {"pe32": "a.pdf"}
    assert "duplicate-header" in model.defects


def test_duplicate_transfer_encoding_prefers_base64() -> None:
    part = attachment(pe(), "a.pdf").replace(
        b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: 7bit\r\n"
        b"Content-Transfer-Encoding: base64")
    assert tokens(inspect_bytes(mime_message([part]))) == {"pe32"}


def test_boundary_never_found_reads_the_body_as_one_part() -> None:
    raw = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"declared\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(pe()))
    model = inspect_bytes(raw)
    assert "boundary-not-found" in model.defects
    assert tokens(model) == {"pe32"}
    assert model.attachments[0].decoded_size == len(pe())


_SEED = mime_message([text_part(), attachment(zip_bytes({"a.exe": pe(), "b.pdf": pdf()}), "a.zip"),
                      forwarded([attachment(pdf(), "=?UTF-8?B?aMOzYS5wZGY=?=")])])


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, len(_SEED)), st.integers(0, 40), st.binary(max_size=40)),
                max_size=6))
def test_mutated_messages_never_break_the_walk(
        edits: list[tuple[int, int, bytes]]) -> None:
    raw = bytearray(_SEED)
    for at, cut, insert in edits:
        raw[at : at + cut] = insert
    model = inspect_bytes(bytes(raw))
    assert "internal-error" not in tokens(model)
    assert model.total_attachment_bytes == sum(a.decoded_size for a in model.attachments)
