"""Fixture builders for the inspect tests, plus checks that the hand-built
formats are what independent implementations think they are.

Executables and archives are made at test time, never committed: PE/ELF/
Mach-O headers as bytes, zip/tar/gzip with the stdlib, 7z and encrypted zip
with the `7z` / `zip` programs, and RAR by hand (there is no `rar` in Debian
main) following the RAR 5.0 technote (rarlab.com/technote.htm) and the RAR
2.x-4.x TechNote.txt block layout; `rarfile` then serves as the oracle that
the bytes are valid RAR.
"""

from __future__ import annotations

import base64
import io
import shutil
import struct
import subprocess
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import rarfile

from mailwarden.inspect import (
    DEFAULT_EXECUTABLE_EXTENSIONS,
    InspectLimits,
    MessageModel,
    inspect_message,
)

LIMITS = InspectLimits(DEFAULT_EXECUTABLE_EXTENSIONS)

needs_7z = pytest.mark.skipif(shutil.which("7z") is None, reason="7z (p7zip-full) not installed")
needs_zip = pytest.mark.skipif(shutil.which("zip") is None, reason="zip not installed")


# ------------------------------------------------------------- executables


def pe(kind: str = "pe32", size: int = 1024) -> bytes:
    """A minimal PE: DOS header, e_lfanew -> PE signature, COFF header,
    optional header magic (0x10b PE32, 0x20b PE32+)."""
    b = bytearray(size)
    b[0:2] = b"MZ"
    struct.pack_into("<HHH", b, 2, 0x90, 3, 0)  # e_cblp, e_cp, e_crlc
    struct.pack_into("<H", b, 8, 4)  # e_cparhdr
    struct.pack_into("<I", b, 0x3C, 0x80)
    b[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HH", b, 0x84, 0x14C if kind == "pe32" else 0x8664, 3)
    struct.pack_into("<H", b, 0x98, 0x10B if kind == "pe32" else 0x20B)
    b[0x40:0x60] = b"This program cannot be run in DO"
    return bytes(b)


def dos_mz() -> bytes:
    b = bytearray(512)
    b[0:2] = b"MZ"
    struct.pack_into("<HHHH", b, 2, 0x20, 1, 0, 2)  # e_cblp, e_cp, e_crlc, e_cparhdr
    return bytes(b)


def elf(bits: int = 64) -> bytes:
    return b"\x7fELF" + bytes([2 if bits == 64 else 1, 1, 1, 0]) + b"\0" * 56


def macho(magic: bytes) -> bytes:
    return magic + b"\x07\x00\x00\x01" + b"\0" * 56


def macho_fat(narch: int = 2) -> bytes:
    return b"\xca\xfe\xba\xbe" + struct.pack(">I", narch) + b"\0" * 40 * narch


def java_class(major: int = 52) -> bytes:
    return b"\xca\xfe\xba\xbe" + struct.pack(">HH", 0, major) + b"\0" * 40


LNK = b"\x4c\0\0\0\x01\x14\x02\0\0\0\0\0\xc0\0\0\0\0\0\0\x46" + b"\0" * 56


# ------------------------------------------------------------- documents


def pdf(encrypted: bool = False, xref_stream: bool = False, pad: int = 0) -> bytes:
    body = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    body += b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    body += b"3 0 obj\n<< /Length 40 >>\nstream\n" + b"(some text about /Encrypt keys)" + \
        b" " * 9 + b"\nendstream\nendobj\n" + b"% padding\n" * pad
    enc = b" /Encrypt 4 0 R" if encrypted else b""
    if encrypted:
        body += b"4 0 obj\n<< /Filter /Standard /V 2 /R 3 /O <00> /U <00> /P -4 >>\nendobj\n"
    xref_at = len(body)
    if xref_stream:
        body += b"5 0 obj\n<< /Type /XRef /Size 6 /W [1 2 1] /Root 1 0 R" + enc + \
            b" /Length 8 >>\nstream\n\x00\x00\x00\x00\x00\x00\x00\x00\nendstream\nendobj\n"
    else:
        body += b"xref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 5 /Root 1 0 R" + enc + b" >>\n"
    return body + b"startxref\n" + str(xref_at).encode() + b"\n%%EOF\n"


_FREE, _END, _FATSECT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def clsid(data1: int, data4_last: int = 0x46, tail: bytes | None = None) -> bytes:
    """On-disk GUID {data1-0000-0000-C000-0000000000xx}."""
    if tail is not None:
        return tail
    return struct.pack("<IHH", data1, 0, 0) + bytes([0xC0, 0, 0, 0, 0, 0, 0, data4_last])


MSI_CLSID = clsid(0x000C1084)
DOC_CLSID = clsid(0x00020906)
XLS_CLSID = clsid(0x00020820)


def cfb(root_clsid: bytes, streams: dict[str, bytes]) -> bytes:
    """A version 3 compound file ([MS-CFB]): streams of 4096 bytes or more in
    regular 512-byte sectors, smaller ones in the mini stream."""
    ss = 512
    big = {n: d for n, d in streams.items() if len(d) >= 4096}
    small = {n: d for n, d in streams.items() if len(d) < 4096}
    mini = bytearray()
    mini_start: dict[str, int] = {}
    minifat: list[int] = []
    for name, data in small.items():
        first = len(mini) // 64
        n = max(1, -(-len(data) // 64))
        mini_start[name] = first
        minifat += [first + i + 1 for i in range(n - 1)] + [_END]
        mini += data + b"\0" * (n * 64 - len(data))
    names = list(streams)
    n_entries = 1 + len(names)
    dir_sectors = -(-n_entries * 128 // ss)
    minifat_sectors = -(-len(minifat) * 4 // ss) if minifat else 0
    mini_sectors = -(-len(mini) // ss) if mini else 0
    big_sectors = {n: -(-len(d) // ss) for n, d in big.items()}
    payload = dir_sectors + minifat_sectors + mini_sectors + sum(big_sectors.values())
    fat_sectors = 1
    while fat_sectors * 128 < fat_sectors + payload:
        fat_sectors += 1
    fat: list[int] = [_FATSECT] * fat_sectors
    sectors = bytearray()

    def chain(data: bytes, count: int) -> int:
        start = len(fat)
        fat.extend([start + i + 1 for i in range(count - 1)] + [_END])
        sectors.extend(data + b"\0" * (count * ss - len(data)))
        return start

    entries: list[bytes] = []
    dir_start = len(fat)
    fat.extend([dir_start + i + 1 for i in range(dir_sectors - 1)] + [_END])
    dir_block_at = len(sectors)
    sectors.extend(b"\0" * dir_sectors * ss)
    minifat_start = chain(b"".join(struct.pack("<I", x) for x in minifat),
                          minifat_sectors) if minifat else _END
    mini_root = chain(bytes(mini), mini_sectors) if mini else _END
    starts = {n: chain(d, big_sectors[n]) for n, d in big.items()}

    def entry(name: str, etype: int, cls: bytes, right: int, child: int, start: int,
              size: int) -> bytes:
        raw = (name.encode("utf-16-le") + b"\0\0")
        e = bytearray(128)
        e[: len(raw)] = raw
        struct.pack_into("<HBB", e, 0x40, len(raw), etype, 1)
        struct.pack_into("<III", e, 0x44, _FREE, right, child)
        e[0x50:0x60] = cls
        struct.pack_into("<IQ", e, 0x74, start, size)
        return bytes(e)

    entries.append(entry("Root Entry", 5, root_clsid, _FREE, 1 if names else _FREE,
                         mini_root, len(mini)))
    for i, name in enumerate(names):
        data = streams[name]
        start = starts[name] if name in big else mini_start[name]
        entries.append(entry(name, 2, b"\0" * 16, i + 2 if i + 1 < len(names) else _FREE,
                             _FREE, start, len(data)))
    block = b"".join(entries)
    sectors[dir_block_at : dir_block_at + len(block)] = block
    fat += [_FREE] * (fat_sectors * 128 - len(fat))
    fat_bytes = b"".join(struct.pack("<I", x) for x in fat)
    header = bytearray(512)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 0x28, 0, fat_sectors, dir_start, 0, 4096,
                     minifat_start, minifat_sectors, _END, 0)
    difat = list(range(fat_sectors)) + [_FREE] * (109 - fat_sectors)
    struct.pack_into("<109I", header, 0x4C, *difat)
    return bytes(header) + fat_bytes + bytes(sectors)


def word_doc(encrypted: bool = False, clsid_: bytes = DOC_CLSID) -> bytes:
    fib = bytearray(4096)
    struct.pack_into("<HH", fib, 0, 0xA5EC, 0x00C1)
    struct.pack_into("<H", fib, 0x0A, 0x0100 if encrypted else 0x0200)
    return cfb(clsid_, {"WordDocument": bytes(fib), "1Table": b"\0" * 600,
                        "\x05SummaryInformation": b"\0" * 200})


def xls(encrypted: bool = False) -> bytes:
    records = struct.pack("<HH", 0x0809, 16) + b"\0" * 16
    if encrypted:
        records += struct.pack("<HH", 0x002F, 6) + b"\0" * 6
    records += struct.pack("<HH", 0x0085, 8) + b"\0" * 8 + struct.pack("<HH", 0x000A, 0)
    return cfb(XLS_CLSID, {"Workbook": records + b"\0" * 5000})


def ooxml_encrypted() -> bytes:
    return cfb(b"\0" * 16, {"EncryptionInfo": b"\x04\x00\x04\x00" + b"\0" * 200,
                            "EncryptedPackage": b"\x10\0\0\0\0\0\0\0" + b"\xaa" * 5000})


def msi(clsid_: bytes = MSI_CLSID) -> bytes:
    return cfb(clsid_, {"\u4840\u3f3f\u4577": b"\0" * 100, "\x05SummaryInformation": b"\0" * 300})


# ------------------------------------------------------------- archives


def zip_bytes(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def docx() -> bytes:
    return zip_bytes({
        "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
        "_rels/.rels": b"<Relationships/>",
        "word/document.xml": b"<w:document>xin chao</w:document>",
        "docProps/core.xml": b"<cp:coreProperties/>",
    })


def xlsx() -> bytes:
    return zip_bytes({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>",
                      "xl/worksheets/sheet1.xml": b"<worksheet/>"})


def jar() -> bytes:
    return zip_bytes({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\nMain-Class: A\n",
                      "A.class": java_class()})


PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 40
JPEG = b"\xff\xd8\xff\xe0\0\x10JFIF\0" + b"\0" * 60
ICS = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Hop giao ban\r\n"
       b"END:VEVENT\r\nEND:VCALENDAR\r\n")


def run_tool(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=60)


def sevenzip(tmp: Path, files: dict[str, bytes], *options: str, name: str = "a.7z") -> bytes:
    src = tmp / f"src-{name}"
    src.mkdir()
    for fname, data in files.items():
        target = src / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    out = tmp / name
    run_tool(["7z", "a", "-bd", "-y", *options, str(out), *files], cwd=src)
    return out.read_bytes()


# RAR 5.0: vint = 7 bits per byte, little-endian, high bit = more follows.


def vint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _rar5_block(htype: int, flags: int, fields: bytes, extra: bytes = b"",
                data: bytes = b"") -> bytes:
    if extra:
        flags |= 0x1
    if data:
        flags |= 0x2
    body = vint(htype) + vint(flags)
    if extra:
        body += vint(len(extra))
    if data:
        body += vint(len(data))
    body += fields + extra
    sized = vint(len(body)) + body
    return struct.pack("<I", zlib.crc32(sized)) + sized + data


RAR5_SIG = b"Rar!\x1a\x07\x01\x00"


def rar5(files: list[tuple[str, bytes, bool]], header_encrypted: bool = False) -> bytes:
    """Stored (method 0) members; `True` marks a member as encrypted (an
    encryption extra record, technote "File encryption record")."""
    out = bytearray(RAR5_SIG)
    if header_encrypted:
        out += _rar5_block(4, 0, vint(0) + vint(0) + bytes([15]) + b"\x11" * 16)
        out += b"\x5a" * 64  # what follows is AES-encrypted headers
        return bytes(out)
    out += _rar5_block(1, 0, vint(0))
    for name, data, encrypted in files:
        raw = name.encode("utf-8")
        fields = (vint(0x4) + vint(len(data)) + vint(0x20) + struct.pack("<I", zlib.crc32(data))
                  + vint(0) + vint(0) + vint(len(raw)) + raw)
        extra = b""
        if encrypted:
            rec = vint(1) + vint(0) + vint(0) + bytes([15]) + b"\x22" * 16 + b"\x33" * 16
            extra = vint(len(rec)) + rec
        out += _rar5_block(2, 0, fields, extra, data)
    out += _rar5_block(5, 0, vint(0))
    return bytes(out)


RAR4_SIG = b"Rar!\x1a\x07\x00"


def _rar4_block(htype: int, flags: int, fields: bytes, data: bytes = b"") -> bytes:
    size = 7 + len(fields)
    rest = struct.pack("<BHH", htype, flags, size) + fields
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest + data


def rar4_unicode_field(name: str) -> bytes:
    """LHD_UNICODE name field: an OEM name, NUL, then the encoded form using
    only opcode 2 (a full 16-bit character) for every character."""
    std = name.encode("ascii", "replace")
    enc = bytearray([0])  # high byte, unused by opcode 2
    chars = [ord(c) for c in name]
    for i in range(0, len(chars), 4):
        group = chars[i : i + 4]
        enc.append(sum(2 << (6 - 2 * k) for k in range(len(group))))
        for c in group:
            enc += struct.pack("<H", c)
    return std + b"\0" + bytes(enc)


def rar4(files: list[tuple[str, bytes, bool]], header_encrypted: bool = False) -> bytes:
    out = bytearray(RAR4_SIG)
    out += _rar4_block(0x73, 0x80 if header_encrypted else 0, b"\0" * 6)
    if header_encrypted:
        return bytes(out + b"\x5a" * 64)
    for name, data, encrypted in files:
        if name.isascii():
            raw, flags = name.encode("ascii"), 0x8000
        else:
            raw, flags = rar4_unicode_field(name), 0x8000 | 0x200
        if encrypted:
            flags |= 0x04
        fields = struct.pack("<IIBIIBBHI", len(data), len(data), 2, zlib.crc32(data),
                             0x5A000000, 29, 0x30, len(raw), 0x20) + raw
        out += _rar4_block(0x74, flags, fields, data)
    out += _rar4_block(0x7B, 0x4000, b"")
    return bytes(out)


# ------------------------------------------------------------- messages


def mime_message(parts: list[bytes], headers: bytes = b"", boundary: bytes = b"=_b1",
                 eol: bytes = b"\r\n", closing: bool = True) -> bytes:
    """multipart/mixed around already-formatted parts (headers + blank line + body)."""
    out = (b"From: Nguoi Gui <a@ninhbinh.gov.vn>" + eol + b"To: x@example.com" + eol
           + b"Subject: test" + eol + headers + b"MIME-Version: 1.0" + eol
           + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"' + eol + eol
           + b"This is a multi-part message in MIME format." + eol)
    for part in parts:
        out += b"--" + boundary + eol + part.replace(b"\r\n", eol) + eol
    if closing:
        out += b"--" + boundary + b"--" + eol
    return out


def text_part(text: str = "Kinh gui anh chi,\r\nXin cam on.") -> bytes:
    return (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + text.encode("utf-8"))


def attachment(data: bytes, filename: str | None = "file.bin",
               content_type: str = "application/octet-stream",
               disposition_params: str | None = None, type_params: str = "",
               encoding: str = "base64") -> bytes:
    """A base64 attachment part; `disposition_params` overrides the
    filename parameter text verbatim when given."""
    ctype = f"Content-Type: {content_type}{type_params}\r\n".encode()
    if disposition_params is not None:
        disp = f"Content-Disposition: attachment{disposition_params}\r\n".encode()
    elif filename is not None:
        disp = f'Content-Disposition: attachment; filename="{filename}"\r\n'.encode()
    else:
        disp = b""
    if encoding == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    else:
        body = data
    return ctype + disp + f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode() + body


def inspect_bytes(raw: bytes, limits: InspectLimits = LIMITS, **kw: object) -> MessageModel:
    return inspect_message(io.BytesIO(raw), limits, time.monotonic() + 30, **kw)  # type: ignore[arg-type]


def one_attachment(data: bytes, filename: str = "file.bin",
                   limits: InspectLimits = LIMITS) -> MessageModel:
    return inspect_bytes(mime_message([text_part(), attachment(data, filename)]), limits)


def tokens(model: MessageModel) -> set[str]:
    return {f.detected for f in model.findings}


def by_token(model: MessageModel) -> dict[str, str]:
    return {f.detected: f.file for f in model.findings}


Builder = Callable[[], bytes]


# ------------------------------------------------- checks on the builders


def test_rar5_builder_is_valid_rar_for_rarfile() -> None:
    data = rar5([("hoá đơn.pdf", b"%PDF-1.4 x", False), ("b.txt", b"hello", False)])
    with rarfile.RarFile(io.BytesIO(data)) as rf:
        assert [i.filename for i in rf.infolist()] == ["hoá đơn.pdf", "b.txt"]
        assert rf.read("b.txt") == b"hello"
        assert not rf.needs_password()


def test_rar5_builder_encrypted_member_needs_password() -> None:
    data = rar5([("a.pdf", b"%PDF-1.4", True)])
    with rarfile.RarFile(io.BytesIO(data)) as rf:
        assert rf.needs_password()


@pytest.mark.parametrize("build", [rar5, rar4], ids=["rar5", "rar4"])
def test_rar_builder_encrypted_headers_need_password(build: Callable[..., bytes]) -> None:
    with rarfile.RarFile(io.BytesIO(build([], header_encrypted=True))) as rf:
        assert rf.needs_password()
        assert rf.infolist() == []  # nothing listable without the password


def test_rar4_builder_is_valid_rar_for_rarfile() -> None:
    data = rar4([("setup.exe", b"MZ", False), ("tài liệu.doc", b"x" * 10, False)])
    with rarfile.RarFile(io.BytesIO(data)) as rf:
        assert [i.filename for i in rf.infolist()] == ["setup.exe", "tài liệu.doc"]
        assert rf.read("tài liệu.doc") == b"x" * 10


def test_rar4_builder_encrypted() -> None:
    with rarfile.RarFile(io.BytesIO(rar4([("a.pdf", b"x", True)]))) as rf:
        assert rf.needs_password()


def test_cfb_builder_round_trips_through_our_reader() -> None:
    from mailwarden.inspect.filetypes import inspect_ole

    data = cfb(DOC_CLSID, {"WordDocument": b"\xec\xa5" + b"\0" * 5000, "small": b"abc"})
    info = inspect_ole(io.BytesIO(data), len(data))
    assert info.kind == "doc"
    assert set(info.streams) == {"WordDocument", "small"}
