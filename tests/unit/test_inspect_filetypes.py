"""Content sniffing, compound (OLE) files and PDF encryption."""

from __future__ import annotations

import io

import pytest

from mailwarden.inspect.filetypes import OleError, inspect_ole, pdf_is_encrypted, sniff
from tests.unit.test_inspect_builders import (
    ICS,
    JPEG,
    LNK,
    PNG,
    cfb,
    clsid,
    docx,
    dos_mz,
    elf,
    java_class,
    macho,
    macho_fat,
    msi,
    ooxml_encrypted,
    pdf,
    pe,
    word_doc,
    xls,
)


@pytest.mark.parametrize(("data", "kind"), [
    pytest.param(pe("pe32"), "pe32", id="pe32"),
    pytest.param(pe("pe32+"), "pe32+", id="pe32-plus"),
    pytest.param(dos_mz(), "mz", id="dos-mz-without-pe"),
    pytest.param(elf(64), "elf", id="elf64"),
    pytest.param(elf(32), "elf", id="elf32"),
    pytest.param(macho(b"\xcf\xfa\xed\xfe"), "macho", id="macho-64-le"),
    pytest.param(macho(b"\xce\xfa\xed\xfe"), "macho", id="macho-32-le"),
    pytest.param(macho(b"\xfe\xed\xfa\xce"), "macho", id="macho-32-be"),
    pytest.param(macho(b"\xfe\xed\xfa\xcf"), "macho", id="macho-64-be"),
    pytest.param(macho_fat(2), "macho", id="macho-universal"),
    pytest.param(b"\xca\xfe\xba\xbf" + b"\0\0\0\x02" + b"\0" * 40, "macho", id="macho-fat64"),
    pytest.param(java_class(52), "java-class", id="java-class-8"),
    pytest.param(java_class(65), "java-class", id="java-class-21"),
    pytest.param(LNK, "lnk", id="windows-shortcut"),
    pytest.param(b"dex\n035\0" + b"\0" * 100, "dex", id="android-dex"),
    pytest.param(b"\0" * 0x8001 + b"CD001" + b"\0" * 100, "iso9660", id="iso-image"),
    pytest.param(b"vhdxfile" + b"\0" * 100, "vhdx", id="vhdx-image"),
    pytest.param(pdf(), "pdf", id="pdf"),
    pytest.param(b"\r\n\r\n%PDF-1.4\n", "pdf", id="pdf-header-after-junk"),
    pytest.param(PNG, "png", id="png"),
    pytest.param(JPEG, "jpeg", id="jpeg"),
    pytest.param(b"GIF89a" + b"\0" * 20, "gif", id="gif"),
    pytest.param(docx(), "zip", id="docx-is-a-zip"),
    pytest.param(word_doc(), "ole", id="doc-is-ole"),
    pytest.param(b"7z\xbc\xaf\x27\x1c\0\x04" + b"\0" * 30, "7z", id="7z"),
    pytest.param(b"Rar!\x1a\x07\x01\x00" + b"\0" * 30, "rar5", id="rar5"),
    pytest.param(b"Rar!\x1a\x07\x00" + b"\0" * 30, "rar4", id="rar4"),
    pytest.param(b"\x1f\x8b\x08\0" + b"\0" * 30, "gzip", id="gzip"),
    pytest.param(b"BZh91AY&SY" + b"\0" * 30, "bzip2", id="bzip2"),
    pytest.param(b"\xfd7zXZ\0" + b"\0" * 30, "xz", id="xz"),
    pytest.param(ICS, "text", id="ics-calendar"),
    pytest.param("Kính gửi: Sở Nội vụ\n".encode(), "text", id="vietnamese-text"),
    pytest.param(b"MZ report for March\r\nline two\r\n" + b"x" * 100, "text",
                 id="text-starting-with-MZ-is-not-dos"),
    pytest.param(b"ZM\x10\0\0\0" + b"\xff" * 100, "unknown", id="zm-with-zero-pages"),
    pytest.param(b"\xca\xfe\xba\xbe\0\0\0\0" + b"\0" * 20, "unknown", id="cafebabe-zero"),
    pytest.param(b"", "unknown", id="empty"),
])
def test_sniff(data: bytes, kind: str) -> None:
    assert sniff(data).kind == kind


@pytest.mark.parametrize(("data", "executable"), [
    pytest.param(pe(), True, id="pe-is-executable"),
    pytest.param(java_class(), True, id="class-is-executable"),
    pytest.param(pdf(), False, id="pdf-is-not"),
    pytest.param(docx(), False, id="zip-is-not-by-itself"),
])
def test_sniff_executable_flag(data: bytes, executable: bool) -> None:
    assert sniff(data).executable is executable


def test_pe_with_e_lfanew_beyond_the_head_is_still_flagged_as_mz() -> None:
    data = bytearray(pe())
    data[0x3C:0x40] = (10_000_000).to_bytes(4, "little")
    assert sniff(bytes(data)).kind == "mz"


@pytest.mark.parametrize(("data", "kind", "encrypted"), [
    pytest.param(msi(), "msi", "", id="msi-by-root-clsid"),
    pytest.param(msi(clsid(0x000C1086)), "msp", "", id="msp-patch"),
    pytest.param(msi(clsid(0x000C1082)), "mst", "", id="mst-transform"),
    pytest.param(word_doc(), "doc", "", id="plain-doc"),
    pytest.param(word_doc(encrypted=True), "doc", "fEncrypted", id="encrypted-doc"),
    pytest.param(word_doc(clsid_=b"\0" * 16), "doc", "", id="doc-without-clsid"),
    pytest.param(xls(), "xls", "", id="plain-xls"),
    pytest.param(xls(encrypted=True), "xls", "FilePass", id="encrypted-xls"),
    pytest.param(ooxml_encrypted(), "ole", "EncryptedPackage", id="encrypted-ooxml"),
    pytest.param(cfb(b"\0" * 16, {"Contents": b"x" * 10}), "ole", "", id="generic-ole"),
])
def test_inspect_ole(data: bytes, kind: str, encrypted: str) -> None:
    info = inspect_ole(io.BytesIO(data), len(data))
    assert (info.kind, info.encrypted) == (kind, encrypted)


@pytest.mark.parametrize("data", [
    pytest.param(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, id="truncated-header"),
    pytest.param(word_doc()[:600], id="truncated-body"),
])
def test_inspect_ole_rejects_malformed(data: bytes) -> None:
    with pytest.raises(OleError):
        inspect_ole(io.BytesIO(data), len(data))


def test_inspect_ole_fat_loop_ends() -> None:
    data = bytearray(word_doc())
    # Point the first FAT entry of the directory chain back at itself.
    dir_start = int.from_bytes(data[0x30:0x34], "little")
    fat_offset = 512 + 4 * dir_start
    data[fat_offset : fat_offset + 4] = dir_start.to_bytes(4, "little")
    with pytest.raises(OleError, match="loop"):
        inspect_ole(io.BytesIO(bytes(data)), len(data))


@pytest.mark.parametrize(("data", "encrypted"), [
    pytest.param(pdf(), False, id="plain-classic-trailer"),
    pytest.param(pdf(encrypted=True), True, id="encrypted-classic-trailer"),
    pytest.param(pdf(xref_stream=True), False, id="plain-xref-stream"),
    pytest.param(pdf(encrypted=True, xref_stream=True), True, id="encrypted-xref-stream"),
    pytest.param(pdf(encrypted=True, pad=30_000), True, id="encrypted-large-file"),
    pytest.param(pdf(pad=30_000), False, id="plain-large-file-mentions-encrypt-in-text"),
])
def test_pdf_encryption(data: bytes, encrypted: bool) -> None:
    assert pdf_is_encrypted(io.BytesIO(data), len(data)) is encrypted


def test_pdf_trailer_far_from_both_ends_found_through_startxref() -> None:
    # The xref stream's dictionary sits more than 64 KiB before the end (its
    # stream data is long), so only startxref leads to it.
    head = b"%PDF-1.7\n" + b"% filler\n" * 10_000
    xref_at = len(head)
    body = head + (b"9 0 obj\n<< /Type /XRef /Encrypt 4 0 R /Length 70000 >>\nstream\n"
                   + b"\x01" * 70_000 + b"\nendstream\nendobj\n")
    data = body + b"startxref\n" + str(xref_at).encode() + b"\n%%EOF\n"
    assert pdf_is_encrypted(io.BytesIO(data), len(data)) is True
