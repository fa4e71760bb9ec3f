"""Bounded readers: views of a file, size limits, streaming decompression.

Every decompressor here produces at most what each `read(n)` asks for, so a
bomb costs what the caller reads, and `Counted` charges that to the budget.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import tempfile
import zlib
from collections.abc import Callable
from typing import IO, Protocol

from mailwarden.inspect.archives.budget import CHUNK, Budget, Context, CorruptArchive

_XZ_MEMLIMIT = 128 * 1024 * 1024  # liblzma decoder memory for one .xz stream


class Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...


class FileView:
    """`length` bytes of a seekable file from `offset`; seeks before each read
    so several views (and zipfile) can share one file."""

    def __init__(self, f: IO[bytes], offset: int, length: int) -> None:
        self.f, self.pos, self.left = f, offset, max(0, length)

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        if n <= 0:
            return b""
        self.f.seek(self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        self.left = self.left - len(data) if data else 0
        return data


class Limited:
    """At most `size` bytes of a reader; `drain()` skips what is left."""

    def __init__(self, src: Reader, size: int) -> None:
        self.src, self.left = src, max(0, size)

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        if n <= 0:
            return b""
        data = self.src.read(n)
        self.left = self.left - len(data) if data else 0
        return data

    def drain(self) -> None:
        while self.left > 0 and self.read(CHUNK):
            pass


class Prepend:
    def __init__(self, first: bytes, src: Reader) -> None:
        self.first, self.src = first, src

    def read(self, n: int) -> bytes:
        if self.first:
            data, self.first = self.first[:n], self.first[n:]
            return data
        return self.src.read(n)


class Counted:
    """Counts what a decompressor produced against the budget."""

    def __init__(self, src: Reader, budget: Budget) -> None:
        self.src, self.budget = src, budget

    def read(self, n: int) -> bytes:
        self.budget.check_time()
        data = self.src.read(n)
        self.budget.take_inflated(len(data))
        return data


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class Zlib:
    """zlib with the bz2/lzma decompressor interface (bounded output).

    Until the first `_CAREFUL_OUTPUT` bytes are out, input is fed in small
    slices, and output produced before a corruption is returned before the
    error is raised (on the next call): extractors write what they inflated
    before the damage, so the head of a damaged member is sniffed too."""

    _CAREFUL_OUTPUT = 64 * 1024
    _SLICE = 16

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._in = b""
        self._error: zlib.error | None = None
        self.produced = 0
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data + (self._in if self._d.eof else b"")

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        self._in += data
        limit = max(max_length, 0)
        out = bytearray()
        while self._in and not self._d.eof and (limit == 0 or len(out) < limit):
            careful = self.produced + len(out) < self._CAREFUL_OUTPUT
            take = self._SLICE if careful else len(self._in)
            piece, self._in = self._in[:take], self._in[take:]
            try:
                got = self._d.decompress(piece, limit - len(out) if limit else 0)
            except zlib.error as exc:
                if not out:
                    raise
                self._error = exc
                break
            self._in = self._d.unconsumed_tail + self._in
            out += got
            if not careful:
                break
        self.produced += len(out)
        self.needs_input = not self._in and (limit == 0 or len(out) < limit)
        return bytes(out)


class DecompressReader:
    """Streaming decompression with output bounded by each read(n).

    `restart` (a magic prefix) continues into concatenated members, as gzip,
    bzip2 and xz files may hold; anything else after the end is ignored. Each
    member started charges one object to `budget` (a file of a million empty
    gzip members is a loop like any other).
    """

    def __init__(self, src: Reader, make: Callable[[], _Decompressor],
                 restart: bytes = b"", budget: Budget | None = None) -> None:
        self.src, self.make, self.restart, self.budget = src, make, restart, budget
        self.dec = make()
        self.pending = b""
        self.done = False
        self.truncated = False  # the input ended inside a compressed stream
        self.error: Exception | None = None

    def read(self, n: int) -> bytes:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        out = bytearray()
        idle = 0
        while len(out) < n and not self.done:
            if self.dec.eof:
                rest = self.dec.unused_data + self.pending
                self.pending = b""
                if self.restart == b"\xfd7zXZ\0":
                    rest = rest.lstrip(b"\0")  # xz stream padding
                if len(rest) < len(self.restart):
                    rest += self.src.read(CHUNK)
                if self.restart and rest.startswith(self.restart):
                    if self.budget is not None:
                        self.budget.tick()
                    self.dec = self.make()
                    self.pending = rest
                    continue
                self.done = True
                break
            data = b""
            if self.dec.needs_input:
                data = self.pending or self.src.read(CHUNK)
                self.pending = b""
                if not data:
                    self.done = True  # truncated input: keep what we have
                    self.truncated = True
                    break
            try:
                got = self.dec.decompress(data, n - len(out))
            except Exception as exc:
                if not out:
                    raise
                self.error = exc  # hand out what came before the damage first
                self.done = True
                break
            out += got
            idle = 0 if (got or data) else idle + 1
            if idle > 3:
                raise CorruptArchive("decompressor made no progress")
        return bytes(out)


def decompress_reader(kind: str, src: Reader, budget: Budget | None = None) -> DecompressReader:
    if kind == "gzip":
        return DecompressReader(src, lambda: Zlib(31), b"\x1f\x8b", budget)
    if kind == "bzip2":
        return DecompressReader(src, bz2.BZ2Decompressor, b"BZh", budget)
    return DecompressReader(
        src, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT),
        b"\xfd7zXZ\0", budget,
    )


def read_up_to(src: Reader, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = src.read(min(CHUNK, n - got))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def spool(ctx: Context) -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=ctx.limits.spool_memory_bytes)



def lzma1_filter(props: bytes, out_size: int) -> dict[str, int]:
    if len(props) < 5:
        raise CorruptArchive("LZMA properties too short")
    d = props[0]
    if d >= 9 * 5 * 5:
        raise CorruptArchive("bad LZMA properties")
    dict_size = struct.unpack_from("<I", props, 1)[0]
    return {"id": lzma.FILTER_LZMA1, "lc": d % 9, "lp": (d // 9) % 5, "pb": d // 45,
            # A dictionary never needs to exceed the output; clamping keeps a
            # forged 4 GiB dictionary from being allocated.
            "dict_size": max(4096, min(dict_size, out_size))}

