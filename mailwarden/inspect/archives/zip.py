"""zip, read the way unzip, 7-Zip and bsdtar read it, all at once.

Extractors disagree on where a zip's truth is: unzip and 7-Zip go by the
central directory found from the end-of-central-directory record (with any
data in front of the archive: a GIF, `%PDF-` or PNG header, an SFX stub),
7-Zip opens the first of two concatenated zips, bsdtar's streaming reader
goes by the local headers from the front. So this module reads every record:

  * every end record in the file, each with its central directory (the
    offset of data in front is recovered as zipfile and unzip do);
  * the local header each central record points at, compared with it
    (method, encryption, sizes, name): a disagreement is "inconsistent-archive";
  * every local header not covered by an entry the central directories list
    (a hidden entry streaming readers extract): inspected, and inconsistent;
  * the Info-ZIP Unicode Path field (0x7075) of both records: every name a
    member goes by is checked.

Member data is inflated from its local header until the compressed stream
ends, not up to the size the central directory declares, so a record that
declares 10 bytes of a 64 KiB PE is sniffed as the PE (and is inconsistent).
Stored members are read at the larger of the two declared sizes.

Every record charges the budget's object count and clock; entries charge the
entry budget before anything is inflated. Specification: PKWARE APPNOTE.TXT
4.3 (records), 4.5 (extra fields), 4.6.9 (Info-ZIP Unicode Path).
"""

from __future__ import annotations

import bz2
import lzma
import struct
from dataclasses import dataclass, field
from typing import IO

from mailwarden.inspect import FindingKind
from mailwarden.inspect.archives.blob import (
    ZIP_SIGNATURES,
    find_signatures,
    member,
    walker,
)
from mailwarden.inspect.archives.budget import (
    CORRUPT_ERRORS,
    Context,
    CorruptArchive,
    LimitReached,
    check_name,
    declared_ok,
    describe,
    entries_ok,
    inconsistent,
)
from mailwarden.inspect.archives.streams import (
    Counted,
    DecompressReader,
    FileView,
    Limited,
    Reader,
    Zlib,
    decompress_reader,
    lzma1_filter,
)

EOCD, LOCAL, CENTRAL = b"PK\x05\x06", b"PK\x03\x04", b"PK\x01\x02"
_METHODS = {0: "store", 8: "deflate", 12: "bzip2", 14: "lzma", 95: "xz"}
# Every method APPNOTE 4.4.5 assigns (extractors such as 7-Zip decode several we
# do not: Deflate64, PPMd, Zstd, ...); a local header with another number is
# taken for stray bytes.
_KNOWN_METHODS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 14, 16, 18, 19, 20, 93, 94,
                            95, 96, 97, 98, 99})
_MAX_NAME = 4096


class _TooMany(Exception):
    """More central records than the entry budget has left."""


@dataclass
class _Record:
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    offset: int  # of the local header (central records: as declared)
    unicode_name: str = ""
    names: list[str] = field(default_factory=list)


def _decode(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        return raw.decode("utf-8", "replace")
    return raw.decode("cp437")


def _extras(data: bytes, rec: _Record, central: bool) -> None:
    pos = 0
    while pos + 4 <= len(data):
        hid, size = struct.unpack_from("<HH", data, pos)
        body = data[pos + 4 : pos + 4 + size]
        if hid == 0x7075 and len(body) >= 5 and body[0] == 1:
            rec.unicode_name = body[5:].decode("utf-8", "replace")
        elif hid == 0x0001:  # zip64: the 32-bit fields that are 0xFFFFFFFF, in order
            values = [v for v, in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            for attr in ("usize", "csize") + (("offset",) if central else ()):
                if getattr(rec, attr) == 0xFFFFFFFF and values:
                    setattr(rec, attr, values.pop(0))
        pos += 4 + size


def _local(f: IO[bytes], size: int, offset: int) -> tuple[_Record, int]:
    """The local header at `offset` and where its data starts."""
    f.seek(offset)
    fixed = f.read(30)
    if len(fixed) < 30 or fixed[:4] != LOCAL:
        raise CorruptArchive(f"no local header at {offset}")
    flags, method, _t, _d, crc, csize, usize, n, m = struct.unpack_from("<HHHHIIIHH", fixed, 6)
    if n > _MAX_NAME or offset + 30 + n + m > size:
        raise CorruptArchive("local header runs past the end")
    raw = f.read(n + m)
    rec = _Record(_decode(raw[:n], flags), flags, method, crc, csize, usize, offset)
    _extras(raw[n:], rec, central=False)
    return rec, offset + 30 + n + m


def _central(ctx: Context, f: IO[bytes], size: int, eocd: int,
             path: str) -> tuple[list[_Record], int] | None:
    """The central directory an end record describes, and the offset of data
    in front of the archive; None when the record does not describe one."""
    f.seek(eocd)
    rec = f.read(22)
    if len(rec) < 22:
        return None
    _disk, _cd_disk, _n_disk, total, cd_size, cd_offset, _clen = struct.unpack_from(
        "<HHHHIIH", rec, 4)
    cd_end = eocd
    if total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        f.seek(max(0, eocd - 20))
        loc = f.read(20)
        if loc[:4] == b"PK\x06\x07":
            z64_at = eocd - 56
            f.seek(max(0, z64_at))
            z64 = f.read(56)
            if z64[:4] == b"PK\x06\x06" and len(z64) == 56:
                total, cd_size, cd_offset = struct.unpack_from("<QQQ", z64, 32)
                cd_end = z64_at
    cd_start = cd_end - cd_size
    # Data in front of the archive makes delta positive; bytes missing from its
    # front make it negative (7-Zip still finds the entries): both are applied.
    delta = cd_start - cd_offset
    if cd_start < 0:
        return None
    remaining = ctx.limits.max_archive_entries - ctx.budget.entries
    records: list[_Record] = []
    pos = cd_start
    while pos + 46 <= cd_end:
        ctx.budget.tick()
        f.seek(pos)
        fixed = f.read(46)
        if fixed[:4] != CENTRAL:
            break
        (flags, method, _t, _d, crc, csize, usize, n, m, k, _disk, _ia, _ea,
         offset) = struct.unpack_from("<HHHHIIIHHHHHII", fixed, 8)
        if n > _MAX_NAME:
            raise CorruptArchive("central directory name too long")
        var = f.read(n + m)
        r = _Record(_decode(var[:n], flags), flags, method, crc, csize, usize, offset)
        _extras(var[n:], r, central=True)
        records.append(r)
        if len(records) > remaining:
            raise _TooMany
        pos += 46 + n + m + k
    if pos != cd_end or (total != len(records) and total != 0xFFFF):
        if not records:
            return None
        inconsistent(ctx, path, f"central directory: {len(records)} records, "
                     f"end record says {total}")
    return records, delta


def _zip_kind(names: list[str]) -> tuple[str, str]:
    """(kind, evidence) from member names: a Java archive, an Android or
    Windows app package, an Office/ODF document, or a plain zip."""
    lowered = {n.lower() for n in names}
    if "androidmanifest.xml" in lowered and "classes.dex" in lowered:
        return "apk", "AndroidManifest.xml + classes.dex"
    if "appxmanifest.xml" in lowered or "appxmetadata/appxbundlemanifest.xml" in lowered:
        return "appx", "AppxManifest.xml"
    if "meta-inf/manifest.mf" in lowered:
        return "jar", "META-INF/MANIFEST.MF"
    classes = [n for n in names if n.lower().endswith(".class")]
    if classes:
        return "jar", f"{len(classes)} .class entries"
    if "[content_types].xml" in lowered:
        for prefix, kind in (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx")):
            if any(n.startswith(prefix) for n in lowered):
                return kind, ""
        return "ooxml", ""
    if "mimetype" in lowered and "meta-inf/manifest.xml" in lowered:
        return "odf", ""
    return "zip", ""


class _Tally:
    """Counts what was read, and whether the source ran dry."""

    def __init__(self, src: Reader) -> None:
        self.src, self.total, self.ended = src, 0, False

    def read(self, n: int) -> bytes:
        data = self.src.read(n)
        self.total += len(data)
        if not data and n > 0:
            self.ended = True
        return data


def _reader(f: IO[bytes], size: int, start: int, method: int, csize: int, usize: int,
            flags: int) -> Reader:
    """The member's data, decompressed until its stream ends."""
    rest = FileView(f, start, size - start)
    if method == 0:
        return FileView(f, start, csize)
    if method == 8:
        return DecompressReader(rest, lambda: Zlib(-15))
    if method == 12:
        return DecompressReader(rest, bz2.BZ2Decompressor)
    if method == 95:
        return decompress_reader("xz", rest)
    # 14: LZMA, with zip's 4-byte preamble before the 5 property bytes; without
    # the end-of-stream flag (bit 1) the declared size is the only end there is.
    pre = rest.read(4)
    if len(pre) < 4:
        raise CorruptArchive("short LZMA header")
    props = rest.read(struct.unpack_from("<H", pre, 2)[0])
    filt = lzma1_filter(props, max(usize, 1 << 20))
    src: Reader = DecompressReader(
        rest, lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]))
    return src if flags & 0x2 else Limited(src, usize)


@dataclass
class _Entry:
    local: _Record
    start: int  # data offset
    central: _Record | None
    names: tuple[str, ...]


def _entries(ctx: Context, f: IO[bytes], size: int, path: str,
             lenient: bool) -> list[_Entry]:
    hits = find_signatures(ctx, f, size, ZIP_SIGNATURES)
    entries: list[_Entry] = []
    covered: list[tuple[int, int]] = []
    seen_local: set[int] = set()
    directories = 0
    for eocd in reversed(hits[EOCD]):  # the last one first: what unzip opens
        try:
            got = _central(ctx, f, size, eocd, path)
        except CORRUPT_ERRORS:
            if not lenient:
                raise
            ctx.defect("embedded-zip-unreadable")
            continue
        if got is None:
            continue
        records, delta = got
        directories += 1
        for central in records:
            ctx.budget.tick()
            at = central.offset + delta
            if at in seen_local:
                inconsistent(ctx, path, f"two central records for the local header at {at}")
                continue
            seen_local.add(at)
            try:
                local, start = _local(f, size, at)
            except CORRUPT_ERRORS as exc:
                if lenient:
                    ctx.defect("embedded-zip-unreadable")
                    continue
                check_name(ctx, central.name, f"{path}/{central.name}")
                ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{central.name}", "corrupt-archive",
                        describe(exc))
                continue
            _compare(ctx, path, central, local)
            names = tuple(dict.fromkeys(
                n for n in (central.name, local.name, central.unicode_name, local.unicode_name)
                if n))
            entries.append(_Entry(local, start, central, names))
            covered.append((at, start + max(central.csize, local.csize)))
    if directories > 1:
        ctx.defect("zip-several-directories")
    for at in hits[LOCAL]:
        ctx.budget.tick()
        if at in seen_local or any(lo <= at < hi for lo, hi in covered):
            continue
        try:
            local, start = _local(f, size, at)
        except CORRUPT_ERRORS:
            continue
        if local.method not in _KNOWN_METHODS and not local.flags & 0x1:
            continue  # stray signature bytes, not a header an extractor would use
        if directories:
            inconsistent(ctx, path, f"local header at {at} is in no central directory")
        names = tuple(dict.fromkeys(n for n in (local.name, local.unicode_name) if n))
        entries.append(_Entry(local, start, None, names))
        covered.append((at, start + local.csize))
    return entries


def _compare(ctx: Context, path: str, central: _Record, local: _Record) -> None:
    where = f"{path}/{central.name}"
    if central.method != local.method:
        inconsistent(ctx, where, f"method {central.method} in the directory, {local.method} "
                     "in the local header")
    if (central.flags ^ local.flags) & 0x1:
        inconsistent(ctx, where, "encrypted in one record only")
    if central.name != local.name:
        inconsistent(ctx, where, f"local header names it {local.name!r}")
    if not local.flags & 0x8 and (central.csize, central.usize) != (local.csize, local.usize):
        inconsistent(ctx, where, f"sizes {central.csize}/{central.usize} in the directory, "
                     f"{local.csize}/{local.usize} in the local header")
    if central.method == 0 and central.csize != central.usize and not central.flags & 0x1:
        inconsistent(ctx, where, "stored with two different sizes")


def walk(ctx: Context, f: IO[bytes], size: int, path: str, depth: int,
         lenient: bool = False) -> str:
    try:
        entries = _entries(ctx, f, size, path, lenient)
    except _TooMany:
        entries_ok(ctx, path, ctx.limits.max_archive_entries + 1)
        return "zip"
    if not entries:
        if not lenient:
            raise CorruptArchive("no zip entries found")
        return "zip"
    if not entries_ok(ctx, path, len(entries)):
        return "zip"
    usize = [max(e.local.usize, e.central.usize if e.central else 0) for e in entries]
    content = declared_ok(ctx, path, sum(usize))
    kind, evidence = _zip_kind([n for e in entries for n in e.names])
    if kind in ("jar", "apk", "appx"):
        ctx.add(FindingKind.EXECUTABLE, path, kind, evidence)
    encrypted: dict[str, list[str]] = {}
    for e in entries:
        flags = e.local.flags | (e.central.flags if e.central else 0)
        if flags & 0x1:
            token = ("zip-aes" if e.local.method == 99
                     else "zip-strong" if flags & 0x40 else "zipcrypto")
            encrypted.setdefault(token, []).append(e.names[0])
    for token, members in encrypted.items():
        ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, token,
                f"{len(members)} encrypted entries, first {members[0]!r}")
    for e, declared in zip(entries, usize, strict=True):
        ctx.budget.check_time()
        _one(ctx, f, size, path, depth, e, declared, content, lenient)
    return kind


def _one(ctx: Context, f: IO[bytes], size: int, path: str, depth: int, e: _Entry,
         declared: int, content: bool, lenient: bool) -> None:
    name, others = e.names[0], e.names[1:]
    is_dir = name.endswith("/") and declared == 0 and e.local.csize in (0, 2)
    flags = e.local.flags | (e.central.flags if e.central else 0)
    if is_dir or flags & 0x1 or not content:
        for n in e.names:
            check_name(ctx, n, f"{path}/{n}")
        return
    if e.local.method not in _METHODS:
        for n in e.names:
            check_name(ctx, n, f"{path}/{n}")
        ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{name}", "unsupported-method",
                f"zip method {e.local.method}")
        return
    csize = max(e.local.csize, e.central.csize if e.central else 0)
    try:
        raw = _reader(f, size, e.start, e.local.method, csize, declared, e.local.flags)
        tally = _Tally(Counted(raw, ctx.budget))
        member(ctx, path, name, depth, tally, others)
        if isinstance(raw, DecompressReader) and raw.truncated:
            raise CorruptArchive("compressed data ends early")
    except LimitReached:
        raise
    except CORRUPT_ERRORS as exc:
        if lenient:
            ctx.defect("embedded-zip-unreadable")
            return
        for n in e.names:
            check_name(ctx, n, f"{path}/{n}")
        ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{name}", "corrupt-archive", describe(exc))
        return
    if tally.ended and tally.total != declared and e.local.method != 0:
        inconsistent(ctx, f"{path}/{name}",
                     f"declares {declared} bytes, its data holds {tally.total}")


@walker("zip")
def walk_zip(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    return walk(ctx, f, size, path, depth)


@walker("zip-embedded")
def walk_embedded_zip(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    """A zip found inside another file: only what parses counts (stray "PK"
    bytes in compressed data are common); what parses is inspected in full."""
    return walk(ctx, f, size, path, depth, lenient=True)
