"""RAR 2.x-4.x and RAR 5: the headers, walked to list names and encryption.

`rarfile` parses every header up front with no entry cap or deadline, and
cannot decompress without unrar anyway; the header walk below follows the
RAR 5.0 technote (rarlab.com/technote.htm) and the RAR 2.x-4.x TechNote.txt
block layout. Every block (file, service, anything) charges the budget's
object count and clock: an archive of a hundred thousand tiny service
headers ends in "object-limit", not in a minute of CPU.

Stored members are sniffed as they are; compressed ones through libarchive
(viaarchive.py, after this walk has bounded the headers; see
docs/decisions/archive-listing.md). Without libarchive their names only are
checked and ClamAV (which unpacks RAR) is the second reader.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from mailwarden.inspect import FindingKind
from mailwarden.inspect.archives import viaarchive
from mailwarden.inspect.archives.blob import given, member_safely, walker
from mailwarden.inspect.archives.budget import (
    Budget,
    Context,
    CorruptArchive,
    declared_ok,
    entries_ok,
    inconsistent,
)
from mailwarden.inspect.archives.streams import FileView, Reader


@dataclass(frozen=True)
class RarEntry:
    name: str
    unpacked: int
    encrypted: bool
    stored: bool  # method "store": the data area is the file itself
    is_dir: bool
    data_offset: int
    packed: int


@dataclass(frozen=True)
class RarHeaderEncrypted:
    pass


def _vint(b: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos + i >= len(b):
            raise CorruptArchive("truncated vint")
        byte = b[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise CorruptArchive("vint too long")


def _no_budget() -> None:
    return None


def rar5_entries(f: IO[bytes], size: int, tick: Callable[[], None] = _no_budget,
                 ) -> Iterator[RarEntry | RarHeaderEncrypted]:
    """File headers of a RAR 5.0 archive (technote: "General archive block
    format", "File header and service header", "Archive encryption header").
    `tick` is called once per block of any type."""
    pos = 8
    while pos < size:
        tick()
        f.seek(pos)
        pre = f.read(14)
        if len(pre) < 5:
            return
        hsize, body = _vint(pre, 4)
        if hsize == 0 or hsize > 2 * 1024 * 1024:
            raise CorruptArchive(f"RAR5 header size {hsize}")
        f.seek(pos + body)
        hdr = f.read(hsize)
        if len(hdr) < hsize:
            raise CorruptArchive("truncated RAR5 header")
        htype, p = _vint(hdr, 0)
        hflags, p = _vint(hdr, p)
        extra_size = data_size = 0
        if hflags & 0x1:
            extra_size, p = _vint(hdr, p)
        if hflags & 0x2:
            data_size, p = _vint(hdr, p)
        data_offset = pos + body + hsize
        if htype == 4:
            yield RarHeaderEncrypted()
            return
        if htype == 5:
            return
        if htype == 2:
            file_flags, p = _vint(hdr, p)
            unpacked, p = _vint(hdr, p)
            _attrs, p = _vint(hdr, p)
            p += (4 if file_flags & 0x2 else 0) + (4 if file_flags & 0x4 else 0)
            comp_info, p = _vint(hdr, p)
            _host, p = _vint(hdr, p)
            name_len, p = _vint(hdr, p)
            name = hdr[p : p + name_len].decode("utf-8", "replace")
            encrypted = False
            extra = hdr[hsize - extra_size :] if 0 < extra_size <= hsize else b""
            q = 0
            while q < len(extra):
                rsize, r = _vint(extra, q)
                rtype, _ = _vint(extra, r)
                if rtype == 0x01:
                    encrypted = True
                if rsize == 0:
                    break
                q = r + rsize
            yield RarEntry(name, unpacked, encrypted, (comp_info >> 7) & 7 == 0,
                           bool(file_flags & 0x1), data_offset, data_size)
        pos = data_offset + data_size


def _rar4_unicode_name(std: bytes, enc: bytes) -> str:
    """Decode RAR 2.x-4.x's compact Unicode file name (LHD_UNICODE): a high
    byte, then 2-bit opcodes choosing: low byte with high byte 0, low byte with
    the shared high byte, a full 16-bit char, or a run copied from the
    standard (OEM) name, optionally with a correction added."""
    out: list[int] = []
    high = enc[0]
    pos, flags, bits = 1, 0, 0
    while pos < len(enc) and len(out) < 4096:
        if bits == 0:
            flags, pos, bits = enc[pos], pos + 1, 8
            if pos >= len(enc):
                break
        op = flags >> 6
        flags, bits = (flags << 2) & 0xFF, bits - 2
        if op == 0:
            out.append(enc[pos])
            pos += 1
        elif op == 1:
            out.append(enc[pos] | high << 8)
            pos += 1
        elif op == 2:
            out.append(enc[pos] | enc[pos + 1] << 8)
            pos += 2
        else:
            run = enc[pos]
            pos += 1
            if run & 0x80:
                correction = enc[pos]
                pos += 1
                for _ in range((run & 0x7F) + 2):
                    out.append(((std[len(out)] + correction) & 0xFF) | high << 8)
            else:
                for _ in range(run + 2):
                    out.append(std[len(out)])
    return "".join(chr(c) for c in out)


def rar4_entries(f: IO[bytes], size: int, tick: Callable[[], None] = _no_budget,
                 ) -> Iterator[RarEntry | RarHeaderEncrypted]:
    """File headers of a RAR 2.x-4.x archive (TechNote.txt block layout).
    `tick` is called once per block of any type."""
    pos = 7
    while pos + 7 <= size:
        tick()
        f.seek(pos)
        hdr = f.read(7)
        if len(hdr) < 7:
            return
        _crc, htype, hflags, hsize = struct.unpack("<HBHH", hdr)
        if hsize < 7:
            raise CorruptArchive(f"RAR4 header size {hsize}")
        f.seek(pos)
        full = f.read(hsize)
        if len(full) < hsize:
            raise CorruptArchive("truncated RAR4 header")
        add_size = struct.unpack_from("<I", full, 7)[0] if hflags & 0x8000 and hsize >= 11 else 0
        if htype == 0x73 and hflags & 0x0080:
            yield RarHeaderEncrypted()
            return
        if htype == 0x7B:
            return
        if htype == 0x74:
            if hsize < 32:
                raise CorruptArchive("short RAR4 file header")
            packed, unpacked = struct.unpack_from("<II", full, 7)
            method = full[25]
            name_size = struct.unpack_from("<H", full, 26)[0]
            p = 32
            if hflags & 0x100:
                hi_pack, hi_unp = struct.unpack_from("<II", full, 32)
                packed |= hi_pack << 32
                unpacked |= hi_unp << 32
                p = 40
            add_size = packed
            raw_name = full[p : p + name_size]
            if hflags & 0x200:
                std, sep, enc = raw_name.partition(b"\0")
                try:
                    name = (_rar4_unicode_name(std, enc) if sep and enc
                            else raw_name.decode("utf-8"))
                except (IndexError, UnicodeDecodeError):
                    name = std.decode("cp437")
            else:
                name = raw_name.decode("cp437")
            yield RarEntry(name, unpacked, bool(hflags & 0x04), method == 0x30,
                           hflags & 0xE0 == 0xE0, pos + hsize, packed)
        pos += hsize + add_size


def _ticker(budget: Budget) -> Callable[[], None]:
    return lambda: budget.tick()


@walker("rar4", "rar5")
def walk_rar(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    f.seek(0)
    kind = "rar5" if f.read(8) == b"Rar!\x1a\x07\x01\x00" else "rar4"
    tick = _ticker(ctx.budget)
    entries = rar5_entries(f, size, tick) if kind == "rar5" else rar4_entries(f, size, tick)
    content = True
    encrypted: list[str] = []
    compressed: list[str] = []
    for entry in entries:
        if isinstance(entry, RarHeaderEncrypted):
            ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, f"{kind}-encrypted-header",
                    "file names are encrypted too")
            return kind
        if not entries_ok(ctx, path, 1):
            break
        if entry.is_dir and entry.packed == 0:
            continue
        if entry.is_dir:
            inconsistent(ctx, f"{path}/{entry.name}", "a directory entry that holds data")
        if entry.encrypted:
            encrypted.append(entry.name)
        if content and not declared_ok(ctx, path, entry.unpacked):
            content = False
        opener = given(None)
        if content and not entry.encrypted:
            if entry.stored:
                opener = given(_stored_reader(f, entry))
            else:
                compressed.append(entry.name)
        member_safely(ctx, path, entry.name, depth, opener)
    if compressed:
        # RAR's own compression: libarchive decodes it (unrar is not in Debian main).
        viaarchive.sniff_members(ctx, f, size, path, depth, compressed)
    if encrypted:
        ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, f"{kind}-encrypted",
                f"{len(encrypted)} encrypted entries, first {encrypted[0]!r}")
    return kind


def _stored_reader(f: IO[bytes], entry: RarEntry) -> Reader:
    # Stored members are readable as they are: the larger of the two sizes,
    # so a header declaring fewer bytes than the data area does not hide any.
    return FileView(f, entry.data_offset, max(entry.packed, entry.unpacked))
