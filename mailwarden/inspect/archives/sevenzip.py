"""7z: header parser after 7zFormat.txt of the LZMA SDK; LZMA/LZMA2 and the
BCJ filters are liblzma's, through the stdlib `lzma` module.

Bounded work: the (possibly LZMA-encoded) header is at most `_MAX_7Z_HEADER`
bytes once decoded, inflating it charges the message's inflation budget, and
every record the header declares (pack streams, folders, coders, substream
sizes, digests) charges the budget's object count and clock *before* it is
built, so a few kilobytes that decode to millions of folder records end in
"object-limit" instead of hundreds of megabytes of Python objects.
"""

from __future__ import annotations

import bz2
import lzma
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from mailwarden.inspect import FindingKind
from mailwarden.inspect.archives import viaarchive
from mailwarden.inspect.archives.blob import given, member_safely, walker
from mailwarden.inspect.archives.budget import (
    CORRUPT_ERRORS,
    Budget,
    Context,
    CorruptArchive,
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
    lzma1_filter,
    read_up_to,
)

_MAX_7Z_HEADER = 16 * 1024 * 1024
_7Z_AES = b"\x06\xf1\x07\x01"
_7Z_FILTERS: dict[bytes, int] = {
    b"\x03\x03\x01\x03": lzma.FILTER_X86,
    b"\x03\x03\x02\x05": lzma.FILTER_POWERPC,
    b"\x03\x03\x04\x01": lzma.FILTER_IA64,
    b"\x03\x03\x05\x01": lzma.FILTER_ARM,
    b"\x03\x03\x07\x01": lzma.FILTER_ARMTHUMB,
    b"\x03\x03\x08\x05": lzma.FILTER_SPARC,
}
_7Z_NAMES = {
    b"\x03\x03\x01\x1b": "BCJ2", b"\x03\x04\x01": "PPMd", b"\x04\x01\x09": "Deflate64",
    b"\x0a": "ARM64", b"\x0b": "RISCV", b"\x04\xf7\x11\x01": "Zstd",
}


class _Buf:
    """Cursor over 7z header bytes; every read is bounds-checked."""

    def __init__(self, data: bytes, budget: Budget) -> None:
        self.d, self.p, self.budget = data, 0, budget

    def each(self, n: int) -> Iterator[int]:
        """range(n), charging one budget object per record."""
        for i in range(n):
            self.budget.tick()
            yield i

    def byte(self) -> int:
        if self.p >= len(self.d):
            raise CorruptArchive("7z header truncated")
        self.p += 1
        return self.d[self.p - 1]

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.d):
            raise CorruptArchive("7z header truncated")
        self.p += n
        return self.d[self.p - n : self.p]

    def number(self) -> int:
        first = self.byte()
        mask, value = 0x80, 0
        for i in range(8):
            if not first & mask:
                return value | ((first & (mask - 1)) << (8 * i))
            value |= self.byte() << (8 * i)
            mask >>= 1
        return value

    def count(self) -> int:
        """A count of things that each take at least one header byte."""
        n = self.number()
        if n > len(self.d) - self.p + 1:
            raise CorruptArchive(f"7z count {n} larger than the header")
        return n

    def bits(self, n: int) -> list[bool]:
        data = self.take((n + 7) // 8)
        self.budget.tick(len(data) // 64 + 1)
        return [bool(data[i // 8] & (0x80 >> (i % 8))) for i in range(n)]

    def skip_digests(self, n: int) -> list[bool]:
        defined = [True] * n if self.byte() else self.bits(n)
        self.take(4 * sum(defined))
        return defined


@dataclass
class _Coder:
    method: bytes
    n_in: int
    n_out: int
    props: bytes


@dataclass
class _Folder:
    coders: list[_Coder]
    bind_pairs: list[tuple[int, int]]  # (in index, out index)
    packed: list[int]
    unpack_sizes: list[int] = field(default_factory=list)

    def main_out(self) -> int:
        bound = {out for _, out in self.bind_pairs}
        total = sum(c.n_out for c in self.coders)
        for i in range(total):
            if i not in bound:
                return i
        raise CorruptArchive("7z folder without an output")

    @property
    def unpack_size(self) -> int:
        return self.unpack_sizes[self.main_out()] if self.unpack_sizes else 0

    @property
    def encrypted(self) -> bool:
        return any(c.method == _7Z_AES for c in self.coders)


@dataclass
class _Streams:
    pack_pos: int = 0
    pack_sizes: list[int] = field(default_factory=list)
    folders: list[_Folder] = field(default_factory=list)
    substreams: list[list[int]] = field(default_factory=list)  # sizes per folder
    folder_crc: list[bool] = field(default_factory=list)


def _read_folder(buf: _Buf) -> _Folder:
    coders = []
    for _ in buf.each(buf.count()):
        flags = buf.byte()
        if flags & 0x80:
            raise CorruptArchive("7z alternative coder methods")
        method = buf.take(flags & 0x0F)
        n_in, n_out = (buf.count(), buf.count()) if flags & 0x10 else (1, 1)
        props = buf.take(buf.count()) if flags & 0x20 else b""
        coders.append(_Coder(method, n_in, n_out, props))
    total_out = sum(c.n_out for c in coders)
    total_in = sum(c.n_in for c in coders)
    if not coders or total_out > 64 or total_in > 64:
        raise CorruptArchive("7z folder shape")
    pairs = [(buf.number(), buf.number()) for _ in buf.each(total_out - 1)]
    n_packed = total_in - len(pairs)
    if n_packed < 1:
        raise CorruptArchive("7z folder without packed streams")
    if n_packed == 1:
        bound_in = {i for i, _ in pairs}
        packed = [i for i in range(total_in) if i not in bound_in][:1]
    else:
        packed = [buf.number() for _ in buf.each(n_packed)]
    return _Folder(coders, pairs, packed)


def _read_streams_info(buf: _Buf) -> _Streams:
    st = _Streams()
    prop = buf.byte()
    if prop == 0x06:  # PackInfo
        st.pack_pos = buf.number()
        n = buf.count()
        prop = buf.byte()
        while prop != 0x00:
            if prop == 0x09:
                st.pack_sizes = [buf.number() for _ in buf.each(n)]
            elif prop == 0x0A:
                buf.skip_digests(n)
            else:
                raise CorruptArchive(f"7z PackInfo property {prop}")
            prop = buf.byte()
        prop = buf.byte()
    if prop == 0x07:  # UnPackInfo
        if buf.byte() != 0x0B:
            raise CorruptArchive("7z UnPackInfo without folders")
        n = buf.count()
        if buf.byte() != 0:
            raise CorruptArchive("7z external folders")
        st.folders = [_read_folder(buf) for _ in buf.each(n)]
        if buf.byte() != 0x0C:
            raise CorruptArchive("7z folders without unpack sizes")
        for folder in st.folders:
            folder.unpack_sizes = [buf.number()
                                   for _ in buf.each(sum(c.n_out for c in folder.coders))]
        prop = buf.byte()
        while prop != 0x00:
            if prop == 0x0A:
                st.folder_crc = buf.skip_digests(len(st.folders))
            else:
                raise CorruptArchive(f"7z UnPackInfo property {prop}")
            prop = buf.byte()
        prop = buf.byte()
    counts = [1] * len(st.folders)
    st.substreams = [[f.unpack_size] for f in st.folders]
    if prop == 0x08:  # SubStreamsInfo
        prop = buf.byte()
        if prop == 0x0D:
            counts = [buf.count() for _ in buf.each(len(st.folders))]
            prop = buf.byte()
        sizes: list[list[int]] = []
        for folder, count in zip(st.folders, counts, strict=True):
            if count == 0:
                sizes.append([])
                continue
            these = [buf.number() for _ in buf.each(count - 1)] if prop == 0x09 else []
            if prop != 0x09 and count > 1:
                raise CorruptArchive("7z substreams without sizes")
            rest = folder.unpack_size - sum(these)
            if rest < 0:
                raise CorruptArchive("7z substream sizes exceed the folder")
            sizes.append([*these, rest])
        st.substreams = sizes
        if prop == 0x09:
            prop = buf.byte()
        while prop != 0x00:
            if prop == 0x0A:
                crc = st.folder_crc or [False] * len(counts)
                buf.skip_digests(sum(c for c, known in zip(counts, crc, strict=True)
                                     if not (c == 1 and known)))
            else:
                raise CorruptArchive(f"7z SubStreamsInfo property {prop}")
            prop = buf.byte()
        prop = buf.byte()
    if prop != 0x00:
        raise CorruptArchive(f"7z StreamsInfo property {prop}")
    return st


@dataclass
class _SzFile:
    name: str
    has_stream: bool
    is_dir: bool


def _read_files_info(buf: _Buf, budget_left: int) -> list[_SzFile] | None:
    n = buf.count()
    if n > budget_left:
        return None
    empty_stream = [False] * n
    empty_file = [False] * n
    attrs_dir = [False] * n
    names = [""] * n
    while True:
        prop = buf.number()
        if prop == 0x00:
            break
        buf.budget.tick()
        data = _Buf(buf.take(buf.number()), buf.budget)
        if prop == 0x0E:
            empty_stream = data.bits(n)
        elif prop == 0x0F:
            empty_file = data.bits(sum(empty_stream))
        elif prop == 0x11:
            if data.byte() != 0:
                raise CorruptArchive("7z external names")
            raw = data.d[data.p :]
            decoded = raw[: len(raw) // 2 * 2].decode("utf-16-le", "replace").split("\0")
            names = (decoded + [""] * n)[:n]
        elif prop == 0x15:
            defined = [True] * n if data.byte() else data.bits(n)
            if data.byte() != 0:
                raise CorruptArchive("7z external attributes")
            for i in range(n):
                if defined[i]:
                    attrs_dir[i] = bool(struct.unpack("<I", data.take(4))[0] & 0x10)
    files = []
    empty_index = 0
    for i in range(n):
        has_stream = not empty_stream[i]
        is_dir = attrs_dir[i]
        if not has_stream:
            if empty_index < len(empty_file) and not empty_file[empty_index]:
                is_dir = True
            empty_index += 1
        files.append(_SzFile(names[i], has_stream, is_dir))
    return files



def _chain(folder: _Folder) -> list[tuple[_Coder, int]] | None:
    """Coders from the folder's output back to its one packed stream, with
    each coder's output size, when the folder is such a simple chain."""
    if len(folder.packed) != 1 or any(c.n_in != 1 or c.n_out != 1 for c in folder.coders):
        return None
    # With one in and one out per coder, coder i owns in-stream i and out-stream i.
    chain: list[tuple[_Coder, int]] = []
    index = folder.main_out()
    pairs = dict(folder.bind_pairs)
    for _ in range(len(folder.coders)):
        chain.append((folder.coders[index], folder.unpack_sizes[index]))
        if index in pairs:
            index = pairs[index]
            continue
        return chain if index == folder.packed[0] else None
    return None


def _folder_reader(f: IO[bytes], folder: _Folder, offset: int, packed_size: int) -> Reader | str:
    """A reader of the folder's output, or why there is none."""
    chain = _chain(folder)
    if chain is None:
        methods = ",".join(c.method.hex() for c in folder.coders)
        return f"7z coders {methods}"
    raw = FileView(f, offset, packed_size)
    last, last_size = chain[-1]
    front = chain[:-1]
    src: Reader
    if last.method == b"\x00" and not front:
        src = raw
    elif last.method == b"\x04\x01\x08" and not front:
        src = DecompressReader(raw, lambda: Zlib(-15))
    elif last.method == b"\x04\x02\x02" and not front:
        src = DecompressReader(raw, bz2.BZ2Decompressor)
    elif last.method in (b"\x03\x01\x01", b"\x21"):
        filters: list[dict[str, int]] = []
        for coder, _ in front:
            if coder.method in _7Z_FILTERS:
                filters.append({"id": _7Z_FILTERS[coder.method]})
            elif coder.method == b"\x03" and coder.props:
                filters.append({"id": lzma.FILTER_DELTA, "dist": coder.props[0] + 1})
            else:
                return f"7z coder {_7Z_NAMES.get(coder.method, coder.method.hex())}"
        if last.method == b"\x21":
            if not last.props or last.props[0] > 40:
                raise CorruptArchive("bad LZMA2 properties")
            p = last.props[0]
            dict_size = 0xFFFFFFFF if p == 40 else (2 | (p & 1)) << (p // 2 + 11)
            filters.append({"id": lzma.FILTER_LZMA2,
                            "dict_size": max(4096, min(dict_size, last_size))})
        else:
            filters.append(lzma1_filter(last.props, last_size))
        src = DecompressReader(
            raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
        )
    else:
        return f"7z coder {_7Z_NAMES.get(last.method, last.method.hex())}"
    return Limited(src, folder.unpack_size)


def _pack_offsets(st: _Streams) -> list[tuple[int, int]]:
    """(absolute offset, size) of each folder's packed stream."""
    result = []
    index = 0
    pos = 32 + st.pack_pos
    starts = []
    for size in st.pack_sizes:
        starts.append(pos)
        pos += size
    for folder in st.folders:
        if index >= len(st.pack_sizes):
            raise CorruptArchive("7z folder without pack size")
        result.append((starts[index], st.pack_sizes[index]))
        index += len(folder.packed)
    return result


def _read_7z_header(ctx: Context, f: IO[bytes], size: int, path: str) -> bytes | None:
    """The plain header, decoding an encoded one; None when it is encrypted."""
    f.seek(0)
    sig = f.read(32)
    if len(sig) < 32:
        raise CorruptArchive("short 7z signature header")
    next_off, next_size = struct.unpack_from("<QQ", sig, 12)
    if next_size == 0:
        return b""
    if 32 + next_off + next_size > size or next_size > _MAX_7Z_HEADER:
        raise CorruptArchive("7z header outside the file")
    f.seek(32 + next_off)
    header = f.read(next_size)
    for _ in range(4):
        if not header or header[0] != 0x17:
            return header
        buf = _Buf(header, ctx.budget)
        buf.byte()
        st = _read_streams_info(buf)
        if not st.folders:
            raise CorruptArchive("7z encoded header without folders")
        folder = st.folders[0]
        if folder.encrypted:
            ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, "7z-encrypted-header",
                    "file names are encrypted too")
            return None
        if folder.unpack_size > _MAX_7Z_HEADER:
            raise CorruptArchive("7z header too large")
        offset, packed = _pack_offsets(st)[0]
        reader = _folder_reader(f, folder, offset, packed)
        if isinstance(reader, str):
            raise CorruptArchive(f"7z header uses {reader}")
        header = read_up_to(Counted(reader, ctx.budget), folder.unpack_size)
    raise CorruptArchive("7z header nested too deeply")


@walker("7z")
def walk_7z(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    header = _read_7z_header(ctx, f, size, path)
    if header:
        _walk_header(ctx, f, header, path, depth)
    return "7z"


def _walk_header(ctx: Context, f: IO[bytes], header: bytes, path: str, depth: int) -> None:
    buf = _Buf(header, ctx.budget)
    if buf.byte() != 0x01:
        raise CorruptArchive("7z header does not start with kHeader")
    prop = buf.byte()
    if prop == 0x02:  # ArchiveProperties: skip
        while buf.number() != 0:
            buf.budget.tick()
            buf.take(buf.number())
        prop = buf.byte()
    if prop == 0x03:  # AdditionalStreamsInfo: parse to skip
        _read_streams_info(buf)
        prop = buf.byte()
    st = _Streams()
    if prop == 0x04:
        st = _read_streams_info(buf)
        prop = buf.byte()
    files: list[_SzFile] = []
    if prop == 0x05:
        left = ctx.limits.max_archive_entries - ctx.budget.entries
        got = _read_files_info(buf, left)
        if got is None:
            entries_ok(ctx, path, left + 1)
            return
        files = got
    if not entries_ok(ctx, path, len(files)):
        return
    content = declared_ok(ctx, path, sum(fo.unpack_size for fo in st.folders))
    encrypted = [fo for fo in st.folders if fo.encrypted]
    with_stream = [fi for fi in files if fi.has_stream]
    if encrypted:
        first = with_stream[0].name if with_stream else ""
        ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, "7z-aes",
                f"{len(encrypted)} encrypted folders, first entry {first!r}")
    for fi in files:
        if not fi.has_stream and not fi.is_dir:
            check_name(ctx, fi.name, f"{path}/{fi.name}")
    offsets = _pack_offsets(st) if st.folders else []
    streams = iter(with_stream)
    via: list[str] = []
    for folder, (offset, packed), sizes in zip(st.folders, offsets, st.substreams, strict=True):
        members = [next(streams, None) for _ in sizes]
        reader: Reader | str | None = None
        if content and not folder.encrypted:
            try:
                reader = _folder_reader(f, folder, offset, packed)
            except CORRUPT_ERRORS as exc:
                ctx.add(FindingKind.UNINSPECTABLE, path, "corrupt-archive", describe(exc))
        if isinstance(reader, str):
            # A coder we do not decode (PPMd, BCJ2, ARM64, ...): libarchive does.
            via += [m.name for m in members if m is not None]
            continue
        counted = Counted(reader, ctx.budget) if reader is not None else None
        for member, member_size in zip(members, sizes, strict=True):
            ctx.budget.check_time()
            if member is None:
                break
            if member.is_dir:
                # 7-Zip extracts the data of an entry flagged as a directory
                # as a file of that name; the attribute is a lie: say so, and
                # sniff the data all the same.
                inconsistent(ctx, f"{path}/{member.name}", "a directory entry that holds data")
            if counted is None:
                check_name(ctx, member.name, f"{path}/{member.name}")
                continue
            part = Limited(counted, member_size)
            member_safely(ctx, path, member.name, depth, given(part))
            try:
                part.drain()
            except CORRUPT_ERRORS as exc:
                ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{member.name}", "corrupt-archive",
                        describe(exc))
                counted = None
    if via:
        for name in via:
            check_name(ctx, name, f"{path}/{name}")
        if viaarchive.available():
            f.seek(0, 2)
            viaarchive.sniff_members(ctx, f, f.tell(), path, depth, via)
        else:
            ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{via[0]}", "unsupported-method",
                    "7z coder not decoded here, and libarchive is not installed")
    leftover = list(streams)
    if leftover:
        inconsistent(ctx, path, f"{len(leftover)} files with data beyond the folders' streams")
        for fi in leftover:
            check_name(ctx, fi.name, f"{path}/{fi.name}")
