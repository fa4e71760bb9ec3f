"""The adversarial corpus of issue 8: builders, and the real readers as oracles.

Everything is generated at test time (no binary blobs). The oracles are the
programs and library a recipient would use: Python's `email` package for
MIME (both policies), `unzip`, `7z` and `bsdtar` for archives. `extracted()`
returns whatever any of them yields; `must_refuse()` says whether one of them
yielded an executable (by content or by name), in which case mailwarden must
refuse (an EXECUTABLE or UNINSPECTABLE finding).
"""

from __future__ import annotations

import binascii
import email
import email.policy
import lzma
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from mailwarden.inspect import DEFAULT_EXECUTABLE_EXTENSIONS, FindingKind, MessageModel
from mailwarden.inspect.filenames import executable_extension
from tests.unit.test_inspect_builders import pe

CLAM_EXE = Path("/usr/share/clamav-testfiles/clam.exe")
TOOLS = {name: shutil.which(name) for name in ("unzip", "7z", "bsdtar")}


def clam_exe() -> bytes:
    """ClamAV's test executable when installed, else our hand-made PE."""
    return CLAM_EXE.read_bytes() if CLAM_EXE.exists() else pe()


def elf_bytes() -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 57


def is_executable_bytes(data: bytes) -> bool:
    """An independent (deliberately crude) test: what a loader would try."""
    if data[:4] == b"\x7fELF":
        return True
    if data[:2] == b"MZ" and len(data) >= 0x40:
        off = struct.unpack_from("<I", data, 0x3C)[0]
        return data[off : off + 4] == b"PE\0\0"
    return False


def is_executable(name: str, data: bytes) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return (executable_extension(base, DEFAULT_EXECUTABLE_EXTENSIONS) is not None
            or is_executable_bytes(data))


def refused(model: MessageModel) -> bool:
    return any(f.kind in (FindingKind.EXECUTABLE, FindingKind.UNINSPECTABLE)
               for f in model.findings)


# ------------------------------------------------------------------ oracles


def email_parts(raw: bytes) -> list[tuple[str, bytes]]:
    """(filename, decoded payload) of every leaf Python's email package sees,
    under both policies (they differ, e.g. on boundaries with a space)."""
    out: list[tuple[str, bytes]] = []
    for policy in (email.policy.compat32, email.policy.default):
        try:
            msg = email.message_from_bytes(raw, policy=policy)
            for part in msg.walk():
                if part.is_multipart():
                    continue
                try:
                    payload = part.get_payload(decode=True)
                except Exception:
                    payload = None
                name = part.get_filename() or ""
                out.append((str(name), payload if isinstance(payload, bytes) else b""))
        except Exception:  # noqa: S112
            continue
    return out


def _run(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, timeout=60, check=False)


def extract(tool: str, data: bytes, suffix: str = ".bin") -> list[tuple[str, bytes]]:
    """What `tool` extracts from `data` (files only; errors ignored: an
    extractor that gives up half-way still wrote what it wrote)."""
    if TOOLS.get(tool) is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        src = base / f"in{suffix}"
        src.write_bytes(data)
        out = base / "out"
        out.mkdir()
        if tool == "unzip":
            _run(["unzip", "-o", "-qq", "-P", "x", str(src), "-d", str(out)], base)
        elif tool == "7z":
            _run(["7z", "x", "-y", "-bd", "-pX", f"-o{out}", str(src)], base)
        else:
            _run(["bsdtar", "-x", "-f", str(src), "-C", str(out)], base)
        found = []
        for path in out.rglob("*"):
            if path.is_file() and not path.is_symlink():
                found.append((str(path.relative_to(out)), path.read_bytes()[:1 << 20]))
        return found


def archive_executables(data: bytes, suffix: str = ".bin") -> dict[str, list[str]]:
    """Per extractor, the executables it yields from `data`."""
    out: dict[str, list[str]] = {}
    for tool in ("unzip", "7z", "bsdtar"):
        names = [n for n, d in extract(tool, data, suffix) if is_executable(n, d)]
        if names:
            out[tool] = names
    return out


def message_executables(raw: bytes) -> list[str]:
    """Executables Python's email yields from a message (by name or content)."""
    return [n or "(nameless)" for n, d in email_parts(raw) if is_executable(n, d)]


# ------------------------------------------------------------ zip by hand


def zip_entry(name: bytes, data: bytes, *, method: int = 8, flags: int = 0,
              cd_name: bytes | None = None, extra: bytes = b"", cd_extra: bytes | None = None,
              declared_usize: int | None = None, offset: int = 0,
              ) -> tuple[bytes, bytes]:
    """(local header + data, central record) for one member at `offset`."""
    body = data if method == 0 else _raw_deflate(data)
    crc = zlib.crc32(data)
    usize = len(data) if declared_usize is None else declared_usize
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0, crc,
                        len(body), usize, len(name), len(extra)) + name + extra + body
    cname = name if cd_name is None else cd_name
    cextra = extra if cd_extra is None else cd_extra
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0,
                          crc, len(body), usize, len(cname), len(cextra), 0, 0, 0, 0,
                          offset) + cname + cextra
    return local, central


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zip_from(entries: list[tuple[bytes, bytes]], prefix_len: int = 0) -> bytes:
    """Locals, central directory and end record; offsets as written."""
    locals_ = b"".join(lo for lo, _ in entries)
    central = b"".join(ce for _, ce in entries)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                       len(central), len(locals_), 0)
    return locals_ + central + eocd


def simple_zip(files: list[tuple[bytes, bytes]], **kw: object) -> bytes:
    entries = []
    offset = 0
    for name, data in files:
        lo, ce = zip_entry(name, data, offset=offset, **kw)  # type: ignore[arg-type]
        entries.append((lo, ce))
        offset += len(lo)
    return zip_from(entries)


def unicode_path_extra(real_name: bytes, unicode_name: str) -> bytes:
    body = b"\x01" + struct.pack("<I", zlib.crc32(real_name)) + unicode_name.encode("utf-8")
    return struct.pack("<HH", 0x7075, len(body)) + body


# ------------------------------------------------------------- 7z by hand


def sz_number(n: int) -> bytes:
    """7z's variable-length UINT64 (7zFormat.txt "REAL_UINT64")."""
    for extra in range(9):
        if extra == 8 or n < (1 << (7 * (extra + 1))):
            break
    if extra == 0:
        return bytes([n])
    if extra == 8:
        return b"\xff" + n.to_bytes(8, "little")
    high = n >> (8 * extra)
    first = (0xFF << (8 - extra)) & 0xFF | high
    return bytes([first]) + (n & ((1 << (8 * extra)) - 1)).to_bytes(extra, "little")


def sevenzip_encoded_header(header: bytes) -> bytes:
    """A 7z whose header is LZMA2-packed (kEncodedHeader): `header` is the
    plain header, as 7-Zip would have written it before packing."""
    packed = lzma.compress(header, format=lzma.FORMAT_RAW,
                           filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}])
    prop = 16  # LZMA2 dictionary 1 MiB: (2 | 0) << (16 // 2 + 11)
    folder = (sz_number(1) + bytes([0x21]) + b"\x21" + sz_number(1) + bytes([prop]))
    enc = (b"\x17"
           + b"\x06" + sz_number(0) + sz_number(1) + b"\x09" + sz_number(len(packed)) + b"\x00"
           + b"\x07" + b"\x0b" + sz_number(1) + b"\x00" + folder
           + b"\x0c" + sz_number(len(header)) + b"\x00"
           + b"\x00")
    next_off = len(packed)
    start = struct.pack("<QQI", next_off, len(enc), zlib.crc32(enc))
    sig = b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<I", zlib.crc32(start)) + start
    return sig + packed + enc


def sevenzip_folder_bomb(folders: int) -> bytes:
    """The issue's bomb: a header that unpacks to `folders` folder records
    (one "copy" coder each, 2 bytes apiece), a few KB on the wire."""
    one = b"\x01" + b"\x01\x00"  # 1 coder: flags = id size 1, id 0x00 (copy)
    header = (b"\x01" + b"\x04"
              + b"\x06" + sz_number(0) + sz_number(folders) + b"\x09"
              + sz_number(0) * folders + b"\x00"
              + b"\x07" + b"\x0b" + sz_number(folders) + b"\x00" + one * folders
              + b"\x0c" + sz_number(0) * folders + b"\x00"
              + b"\x00" + b"\x00")
    return sevenzip_encoded_header(header)


def set_7z_attribute_dir(archive: bytes) -> bytes:
    """Flip FILE_ATTRIBUTE_DIRECTORY (0x10) on in every attribute of a 7z
    written with a plain header (-mhc=off), and fix the CRCs."""
    next_off, next_size = struct.unpack_from("<QQ", archive, 12)
    start = 32 + next_off
    header = bytearray(archive[start : start + next_size])
    at = header.find(b"\x15")  # kWinAttributes property
    while at >= 0:
        size = header[at + 1]
        if size < 0x80 and header[at + 2] == 1 and header[at + 3] == 0:
            count = (size - 2) // 4
            for i in range(count):
                pos = at + 4 + 4 * i
                value = struct.unpack_from("<I", header, pos)[0]
                struct.pack_into("<I", header, pos, value | 0x10)
            break
        at = header.find(b"\x15", at + 1)
    out = bytearray(archive)
    out[start : start + next_size] = header
    struct.pack_into("<I", out, 28, zlib.crc32(bytes(header)))
    struct.pack_into("<I", out, 8, zlib.crc32(bytes(out[12:32])))
    return bytes(out)


# ------------------------------------------------------------ RAR by hand


def rar5_service_flood(blocks: int) -> bytes:
    """A RAR 5 archive of `blocks` tiny service headers (type 3), no files."""
    from tests.unit.test_inspect_builders import RAR5_SIG, _rar5_block, vint

    one = _rar5_block(3, 0, vint(0) + vint(0) + vint(0) + struct.pack("<I", 0)
                      + vint(0) + vint(0) + vint(3) + b"CMT")
    return RAR5_SIG + _rar5_block(1, 0, vint(0)) + one * blocks + _rar5_block(5, 0, vint(0))


# ------------------------------------------------------------ TNEF by hand


def _tnef_attr(level: int, attr_id: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attr_id, len(data)) + data + struct.pack("<H", checksum)


def _mapi_string(prop_id: int, text: str) -> bytes:
    raw = text.encode("utf-16-le") + b"\0\0"
    return (struct.pack("<HHII", 0x001F, prop_id, 1, len(raw)) + raw + b"\0" * (-len(raw) % 4))


def tnef(attachments: list[tuple[str, bytes]], long_names: bool = True) -> bytes:
    """A winmail.dat ([MS-OXTNEF]) holding `attachments`: per attachment
    attAttachRendData, attAttachTitle (8.3), attAttachData and an
    attAttachment property list with PR_ATTACH_LONG_FILENAME."""
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += _tnef_attr(1, 0x00089006, struct.pack("<I", 0x0001))  # attTnefVersion
    out += _tnef_attr(1, 0x00078008, b"IPM.Microsoft Mail.Note\0")  # attMessageClass
    for name, data in attachments:
        short = name.encode("cp1252", "replace")[:12] + b"\0"
        out += _tnef_attr(2, 0x00069002, b"\x01\x00" + b"\xff" * 4 + b"\0" * 8)
        out += _tnef_attr(2, 0x00018010, short)
        out += _tnef_attr(2, 0x0006800F, data)
        if long_names:
            props = struct.pack("<I", 1) + _mapi_string(0x3707, name)
            out += _tnef_attr(2, 0x00069005, props)
    return out


# ------------------------------------------------------------ encodings


def uuencode(name: str, data: bytes) -> bytes:
    lines = [f"begin 644 {name}".encode()]
    lines += [binascii.b2a_uu(data[i : i + 45]).rstrip(b"\n") for i in range(0, len(data), 45)]
    lines += [b"`", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


def yenc(name: str, data: bytes, line: int = 128) -> bytes:
    out = bytearray(f"=ybegin line={line} size={len(data)} name={name}\r\n".encode())
    row = bytearray()
    for byte in data:
        c = (byte + 42) & 0xFF
        if c in (0, 10, 13, 61):
            row += b"=" + bytes([(c + 64) & 0xFF])
        else:
            row.append(c)
        if len(row) >= line:
            out += row + b"\r\n"
            row = bytearray()
    if row:
        out += row + b"\r\n"
    out += f"=yend size={len(data)} crc32={zlib.crc32(data):08x}\r\n".encode()
    return bytes(out)
