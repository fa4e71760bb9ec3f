"""Member data that only libarchive can decompress (compressed RAR, 7z PPMd/BCJ2/...).

Our listers (rar.py, sevenzip.py) walk the headers first, within the budget:
so a header bomb never reaches libarchive, which materialises whatever a
header declares (392 MB for a 1.6 KB 7z, docs/decisions/archive-listing.md).
Only then, and only for the members our own decoders cannot read, is the
archive handed to libarchive (libarchive-c over Debian's libarchive13), and
each wanted member is sniffed through the usual `member_safely`, its bytes
counted against the inflation budget and the clock. This runs inside the
engine's worker processes, under their memory and CPU limits.

When libarchive is not installed, `available()` is False and callers fall
back to checking names (and say so with a defect; ClamAV, which unpacks RAR
and 7z itself, is the second reader).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from mailwarden.inspect import FindingKind
from mailwarden.inspect.archives.blob import given, member_safely
from mailwarden.inspect.archives.budget import Context
from mailwarden.inspect.archives.streams import Counted

try:
    import libarchive
except (ImportError, OSError):  # the module, or libarchive.so.13, is missing
    libarchive = None

_BLOCK = 64 * 1024


def available() -> bool:
    return libarchive is not None


class _Blocks:
    """A reader over libarchive's blocks of one entry."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self.blocks, self.buf = blocks, b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            block = next(self.blocks, None)
            if block is None:
                break
            self.buf += bytes(block)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def sniff_members(ctx: Context, f: IO[bytes], size: int, path: str, depth: int,
                  wanted: list[str]) -> None:
    """Sniff the members named in `wanted` through libarchive. A wanted
    member libarchive does not yield is uninspectable."""
    if libarchive is None:
        ctx.defect("libarchive-missing")
        return
    left = list(dict.fromkeys(wanted))
    f.seek(0)
    data = f.read(size)
    error = ""
    try:
        with libarchive.memory_reader(data) as archive:
            for entry in archive:
                ctx.budget.tick()
                ctx.budget.check_time()
                name = str(entry.pathname)
                if name not in left:
                    continue
                reader = Counted(_Blocks(iter(entry.get_blocks(_BLOCK))), ctx.budget)
                member_safely(ctx, path, name, depth, given(reader))
                left.remove(name)  # only once read: an error on the way leaves it wanted
                if not left:
                    break
    except libarchive.ArchiveError as exc:
        error = str(exc)[:120]
    for name in left:
        ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{name}", "unreadable-member",
                error or "libarchive did not yield it")
