"""gzip, bzip2, xz: one compressed stream (or several concatenated), maybe a tar.

The member is named twice: by the gzip header's FNAME (what `gunzip -N`
restores) and by the attachment's name without its suffix (what `gunzip`
writes); both names are checked, since they can differ.
"""

from __future__ import annotations

import struct
from typing import IO

from mailwarden.inspect.archives.blob import member, walker
from mailwarden.inspect.archives.budget import Context, entries_ok
from mailwarden.inspect.archives.streams import (
    Counted,
    FileView,
    Prepend,
    decompress_reader,
    read_up_to,
)
from mailwarden.inspect.archives.tar import walk_tar
from mailwarden.inspect.filenames import basename
from mailwarden.inspect.filetypes import SNIFF_BYTES, sniff


def gzip_name(f: IO[bytes]) -> str:
    """FNAME from a gzip header (RFC 1952 2.3.1), or ""."""
    f.seek(0)
    hdr = f.read(10 + 2 + 65535 + 1024)
    if len(hdr) < 10 or not hdr[3] & 0x08:
        return ""
    pos = 10
    if hdr[3] & 0x04:
        if pos + 2 > len(hdr):
            return ""
        pos += 2 + struct.unpack_from("<H", hdr, pos)[0]
    end = hdr.find(b"\0", pos)
    if end < 0:
        return ""
    raw = hdr[pos:end]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # RFC 1952: ISO 8859-1
    return basename(text)


def derived_name(path: str) -> str:
    """The attachment's name without its compression suffix."""
    base = basename(path)
    lowered = base.lower()
    for ext, repl in ((".tgz", ".tar"), (".tbz2", ".tar"), (".tbz", ".tar"), (".txz", ".tar"),
                      (".gz", ""), (".bz2", ""), (".xz", ""), (".z", "")):
        if lowered.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)] + repl
    return base or "data"


@walker("gzip", "bzip2", "xz")
def walk_compressed(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    f.seek(0)
    head4 = f.read(6)
    kind = ("gzip" if head4[:2] == b"\x1f\x8b" else "bzip2" if head4[:3] == b"BZh" else "xz")
    stored = gzip_name(f) if kind == "gzip" else ""
    derived = derived_name(path)
    names = tuple(n for n in (stored, derived) if n)
    f.seek(0)
    reader = Counted(decompress_reader(kind, FileView(f, 0, size), ctx.budget), ctx.budget)
    head = read_up_to(reader, SNIFF_BYTES)
    if sniff(head).kind == "tar":
        # .tar.gz is one archive: its members sit one level below it.
        walk_tar(ctx, Prepend(head, reader), path, depth)
        return f"tar+{kind}"
    if not entries_ok(ctx, path, 1):
        return kind
    member(ctx, path, names[0], depth, Prepend(head, reader), names[1:])
    return kind
