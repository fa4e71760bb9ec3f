"""tar (ustar, pax, GNU), read forward from a stream, as GNU tar and bsdtar do.

Our own reader because `tarfile` reads a whole pax/GNU long-name header into
memory, however large it claims to be. What extractors do that matters here:

  * a pax `size` record overrides the header's size field (and so where the
    next header is); `path` and GNU `L` records override the name;
  * an unknown type flag is extracted as a regular file (GNU tar: "Unknown
    file type; data will be extracted as regular file"), so every entry with
    data is sniffed, whatever its type flag;
  * sparse members (GNU type `S`, pax `GNU.sparse.*`) are reassembled from a
    map: the bytes in the archive are not the file's bytes in order, so such a
    member is uninspectable ("tar-sparse"), with every name it has checked.

Each header block charges the object budget and reads the clock.
"""

from __future__ import annotations

import re
from typing import IO

from mailwarden.inspect import FindingKind
from mailwarden.inspect.archives.blob import given, member_safely, walker
from mailwarden.inspect.archives.budget import (
    Context,
    CorruptArchive,
    check_name,
    declared_ok,
    entries_ok,
)
from mailwarden.inspect.archives.streams import FileView, Limited, Reader, read_up_to

_MAX_TAR_EXT_HEADER = 1024 * 1024  # pax / GNU long name records
_METADATA = (b"x", b"g", b"L", b"K", b"X")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, FIFOs


def _tar_number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        if field[0] & 0x40:
            raise CorruptArchive("negative number in tar header")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise CorruptArchive("bad octal number in tar header")
    return int(text, 8)


def _tar_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        m = re.match(rb"(\d{1,7}) ", data[pos : pos + 9])
        if not m:
            break
        length = int(m.group(1))
        if length <= 0:
            break
        record = data[pos + len(m.group(0)) : pos + length]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "replace")] = value.rstrip(b"\n").decode("utf-8", "replace")
        pos += length
    return records


@walker("tar")
def walk_tar_file(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    f.seek(0)
    walk_tar(ctx, FileView(f, 0, size), path, depth)
    return "tar"


def walk_tar(ctx: Context, src: Reader, path: str, depth: int) -> None:
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        ctx.budget.tick()
        ctx.budget.check_time()
        block = read_up_to(src, 512)
        if len(block) < 512 or block == b"\0" * 512:
            return
        if _tar_number(block[148:156]) != sum(block[:148]) + 256 + sum(block[156:512]):
            raise CorruptArchive("tar header checksum mismatch")
        size = _tar_number(block[124:136])
        typeflag = block[156:157]
        name = _tar_text(block[0:100])
        if block[257:262] == b"ustar" and block[345:346] != b"\0":
            name = _tar_text(block[345:500]) + "/" + name
        if typeflag in _METADATA:
            if size > _MAX_TAR_EXT_HEADER:
                raise CorruptArchive(f"tar extended header of {size} bytes")
            data = Limited(src, size)
            ext = read_up_to(data, size)
            if typeflag in (b"x", b"X"):
                pax.update(_pax_records(ext))
            elif typeflag == b"L":
                long_name = ext.split(b"\0", 1)[0].decode("utf-8", "replace")
            read_up_to(src, -size % 512)
            continue
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError as exc:
                raise CorruptArchive("bad pax size") from exc
            if size < 0:
                raise CorruptArchive("negative pax size")
        names = [n for n in (long_name, pax.get("path"), pax.get("GNU.sparse.name"), name)
                 if n]
        sparse = typeflag == b"S" or any(k.startswith("GNU.sparse.") for k in pax)
        pax, long_name = {}, None
        data = Limited(src, size)
        padding = -size % 512
        if not entries_ok(ctx, path, 1):
            return
        first = names[0]
        if sparse:
            for n in names:
                check_name(ctx, n, f"{path}/{n}")
            ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{first}", "tar-sparse",
                    "sparse member: its data is reassembled from a map")
        elif typeflag in _NO_DATA and size == 0:
            for n in names:
                check_name(ctx, n, f"{path}/{n}")
        elif declared_ok(ctx, path, size):
            member_safely(ctx, path, first, depth, given(data), tuple(names[1:]))
        else:
            for n in names:
                check_name(ctx, n, f"{path}/{n}")
        data.drain()
        read_up_to(src, padding)
