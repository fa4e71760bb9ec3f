"""One file (a decoded part or an archive member): sniff it, dispatch it.

`inspect_blob` classifies a seekable file and walks the archives in it: the
one at offset 0 and every archive signature found further in (extractors find
a zip by its end record behind a GIF or PDF header, 7-Zip and unrar find
self-extracting archives behind a stub). Format walkers register themselves
with `@walker(kind, ...)`; they call `member_safely` for each member, which
sniffs the member's first bytes and recurses into it when it is itself an
archive, a compound file or a PDF.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import IO, cast

from mailwarden.inspect import FindingKind
from mailwarden.inspect.archives.budget import (
    CHUNK,
    CORRUPT_ERRORS,
    Context,
    CorruptArchive,
    LimitReached,
    check_name,
    describe,
)
from mailwarden.inspect.archives.streams import Counted, Reader, spool
from mailwarden.inspect.filenames import ARCHIVE_EXTENSIONS, effective_extension
from mailwarden.inspect.filetypes import (
    RANDOM_ACCESS_KINDS,
    SNIFF_BYTES,
    Sniffed,
    inspect_ole,
    pdf_is_encrypted,
    pe_at,
    sniff,
)

_OLE_DOCUMENT_EXTENSIONS = frozenset(
    {".doc", ".dot", ".xls", ".xlt", ".xla", ".ppt", ".pot", ".pps", ".msg", ".pub", ".vsd",
     ".vss", ".mpp", ".wps", ".hwp", ".docx", ".xlsx", ".pptx"}  # last three: encrypted OOXML
)
# Archives looked for past offset 0 (6-byte signatures: random data matches one
# once in 2**48 positions). A zip is found by its records (zip.py does that).
EMBEDDED_SIGNATURES: dict[bytes, str] = {
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07\x01\x00": "rar5",
    b"Rar!\x1a\x07\x00": "rar4",
    b"\xfd7zXZ\x00": "xz",
}
ZIP_SIGNATURES = (b"PK\x05\x06", b"PK\x03\x04")
MAX_EMBEDDED = 16  # archives found past offset 0 in one file

Walker = Callable[[Context, IO[bytes], int, str, int], str]
WALKERS: dict[str, Walker] = {}


def walker(*kinds: str) -> Callable[[Walker], Walker]:
    def register(fn: Walker) -> Walker:
        for kind in kinds:
            WALKERS[kind] = fn
        return fn
    return register


class SubFile:
    """The bytes of a seekable file from `offset` on, as a file of its own."""

    def __init__(self, f: IO[bytes], offset: int, size: int) -> None:
        self.f, self.offset, self.size, self.pos = f, offset, size, 0

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.f.seek(self.offset + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        return data

    def seekable(self) -> bool:
        return True


def find_signatures(ctx: Context, f: IO[bytes], size: int,
                    signatures: tuple[bytes, ...]) -> dict[bytes, list[int]]:
    """Every offset of each signature, reading the file once in chunks; at
    most `limit` hits per signature are kept (the caller decides what more means)."""
    found: dict[bytes, list[int]] = {sig: [] for sig in signatures}
    overlap = max(len(s) for s in signatures) - 1
    pos = 0
    prev = b""
    while pos < size:
        ctx.budget.check_time()
        f.seek(pos)
        data = f.read(16 * CHUNK)
        if not data:
            break
        window = prev + data
        base = pos - len(prev)
        for sig in signatures:
            at = window.find(sig)
            while at >= 0:
                ctx.budget.tick()
                found[sig].append(base + at)
                at = window.find(sig, at + 1)
        prev = window[-overlap:] if overlap else b""
        pos += len(data)
    for sig in signatures:  # a hit inside the overlap is seen twice
        found[sig] = sorted(set(found[sig]))
    return found


# -------------------------------------------------------------- per file


def inspect_blob(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    """Check one seekable file; return its detected type."""
    ctx.where = path
    ctx.budget.check_time()
    f.seek(0)
    head = f.read(SNIFF_BYTES)
    s = sniff_far(head, f, size)
    kind = dispatch(ctx, s, f, size, path, depth)
    if not s.executable:
        _embedded(ctx, s, f, size, path, depth)
    return kind


def sniff_far(head: bytes, f: IO[bytes] | None, size: int) -> Sniffed:
    """`sniff`, following a DOS header's e_lfanew past the sniff window
    (Windows loads a PE whose header sits anywhere in the file)."""
    s = sniff(head)
    if (s.executable and s.kind != "mz") or head[:2] not in (b"MZ", b"ZM") or len(head) < 64:
        return s
    e_lfanew = struct.unpack_from("<I", head, 0x3C)[0]
    if e_lfanew + 26 <= len(head) or e_lfanew < 0x40 or f is None:
        return s
    if e_lfanew + 26 > size:
        return s
    f.seek(e_lfanew)
    far = pe_at(f.read(26))
    return far if far is not None else s


def dispatch(ctx: Context, s: Sniffed, f: IO[bytes], size: int, path: str, depth: int) -> str:
    if s.executable:
        ctx.add(FindingKind.EXECUTABLE, path, s.kind, s.detail)
        return s.kind
    try:
        if s.kind == "ole":
            return _check_ole(ctx, f, size, path)
        if s.kind == "pdf":
            if pdf_is_encrypted(f, size):
                ctx.add(FindingKind.ENCRYPTED_DOCUMENT, path, "pdf-encrypted")
            return "pdf"
        if s.kind == "cab":
            # A cabinet is an installer's package: refused like its name
            # (.cab) when that name is refused; otherwise we cannot unpack it.
            if ".cab" in ctx.limits.executable_extensions:
                ctx.add(FindingKind.EXECUTABLE, path, "cab", "Microsoft cabinet")
            else:
                ctx.add(FindingKind.UNINSPECTABLE, path, "unsupported-archive", "cab")
            return "cab"
        if s.archive:
            if depth >= ctx.limits.max_archive_depth:
                ctx.add(FindingKind.UNINSPECTABLE, path, "depth-limit",
                        f"archive nested deeper than {ctx.limits.max_archive_depth}")
                return s.kind
            return WALKERS[s.kind](ctx, f, size, path, depth)
    except CORRUPT_ERRORS as exc:
        if s.kind == "ole" and effective_extension(path) in _OLE_DOCUMENT_EXTENSIONS:
            # Windows opens this name with Office, never with msiexec, so a
            # compound file we cannot parse is a broken document, not a
            # hidden installer: note it, do not make it uninspectable.
            ctx.defect("corrupt-document")
            return s.kind
        token = "corrupt-document" if s.kind in RANDOM_ACCESS_KINDS else "corrupt-archive"
        ctx.add(FindingKind.UNINSPECTABLE, path, token, describe(exc))
    return s.kind


def _embedded(ctx: Context, s: Sniffed, f: IO[bytes], size: int, path: str,
              depth: int) -> None:
    """Archives that do not start at offset 0: extractors find them anyway."""
    sigs = tuple(EMBEDDED_SIGNATURES) + (() if s.kind == "zip" else ZIP_SIGNATURES)
    hits = find_signatures(ctx, f, size, sigs)
    found: list[tuple[int, str]] = []
    for sig, offsets in hits.items():
        kind = "zip" if sig in ZIP_SIGNATURES else EMBEDDED_SIGNATURES[sig]
        found += [(o, kind) for o in offsets if o > 0]
    zip_hits = [o for o, k in found if k == "zip"]
    others = sorted((o, k) for o, k in found if k != "zip")
    if not zip_hits and not others:
        if s.kind in ("unknown", "text") and effective_extension(path) in ARCHIVE_EXTENSIONS:
            ctx.add(FindingKind.UNINSPECTABLE, path, "corrupt-archive",
                    f"named {effective_extension(path)} but content is {s.kind}")
        return
    if depth >= ctx.limits.max_archive_depth:
        ctx.add(FindingKind.UNINSPECTABLE, path, "depth-limit",
                f"archive nested deeper than {ctx.limits.max_archive_depth}")
        return
    if len(others) > MAX_EMBEDDED:
        ctx.add(FindingKind.UNINSPECTABLE, path, "embedded-archive-limit",
                f"more than {MAX_EMBEDDED} archive signatures in one file")
        others = others[:MAX_EMBEDDED]
    ctx.defect("archive-at-offset")
    if zip_hits:
        # The zip walker finds every zip record in the whole file itself; a
        # file with only stray local-header bytes and nothing readable is data.
        _walk_embedded(ctx, "zip", f, size, path, depth, strict=False)
    for offset, kind in others:
        sub = cast(IO[bytes], SubFile(f, offset, size - offset))
        _walk_embedded(ctx, kind, sub, size - offset, f"{path}@{offset}", depth, strict=True)


def _walk_embedded(ctx: Context, kind: str, f: IO[bytes], size: int, path: str, depth: int,
                   strict: bool) -> None:
    try:
        WALKERS[kind if strict else "zip-embedded"](ctx, f, size, path, depth)
    except CORRUPT_ERRORS as exc:
        ctx.add(FindingKind.UNINSPECTABLE, path, "corrupt-archive", describe(exc))


def _check_ole(ctx: Context, f: IO[bytes], size: int, path: str) -> str:
    info = inspect_ole(f, size)
    if info.kind in ("msi", "msp", "mst"):
        ctx.add(FindingKind.EXECUTABLE, path, "msi", f"Windows Installer {info.kind}")
    if info.encrypted:
        ctx.add(FindingKind.ENCRYPTED_DOCUMENT, path, "office-encrypted", info.encrypted)
    return info.kind


# -------------------------------------------------------------- members


def member(ctx: Context, parent: str, name: str, depth: int, stream: Reader | None,
           names: tuple[str, ...] = ()) -> None:
    """Name and content checks for one archive member (at depth + 1).

    `names` are other names the same member goes by (a zip's local header,
    its Unicode Path field, a gzip header): every one is checked."""
    display = f"{parent}/{name}"
    ctx.where = display
    check_name(ctx, name, display)
    for other in names:
        if other != name:
            check_name(ctx, other, f"{parent}/{other}")
    if stream is None:
        return
    head, error = _read_head(stream)
    s = sniff(head)
    if s.executable:
        ctx.add(FindingKind.EXECUTABLE, display, s.kind, s.detail)
        return
    if error is not None:
        raise error
    with spool(ctx) as copy:
        # The whole member, copied: it may be an archive, a compound file or a
        # PDF, hold an archive past offset 0, or a PE header past the sniff
        # window. What it costs is charged where it is inflated.
        copy.write(head)
        size = len(head)
        while True:
            ctx.budget.check_time()
            data = stream.read(CHUNK)
            if not data:
                break
            copy.write(data)
            size += len(data)
        copy.flush()
        inspect_blob(ctx, copy, size, display, depth + 1)


def _read_head(stream: Reader) -> tuple[bytes, BaseException | None]:
    """The first SNIFF_BYTES, and the corruption that cut them short, if one
    did: what was inflated before the damage is what extractors write out."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < SNIFF_BYTES:
            data = stream.read(min(CHUNK, SNIFF_BYTES - got))
            if not data:
                break
            parts.append(data)
            got += len(data)
    except CORRUPT_ERRORS as exc:
        return b"".join(parts), exc
    return b"".join(parts), None


def given(stream: Reader | None) -> Callable[[], Reader | None]:
    return lambda: stream


def bind_counted(ctx: Context, make: Callable[[], Reader]) -> Callable[[], Reader | None]:
    return lambda: Counted(make(), ctx.budget)


def member_safely(ctx: Context, parent: str, name: str, depth: int,
                  open_stream: Callable[[], Reader | None],
                  names: tuple[str, ...] = ()) -> None:
    """`member`, with a corrupt member reported without ending the walk."""
    try:
        stream = open_stream()
    except CORRUPT_ERRORS as exc:
        for n in (name, *names):
            check_name(ctx, n, f"{parent}/{n}")
        ctx.add(FindingKind.UNINSPECTABLE, f"{parent}/{name}", "corrupt-archive", describe(exc))
        return
    try:
        member(ctx, parent, name, depth, stream, names)
    except LimitReached:
        raise
    except CORRUPT_ERRORS as exc:
        ctx.add(FindingKind.UNINSPECTABLE, f"{parent}/{name}", "corrupt-archive", describe(exc))


__all__ = ["CorruptArchive", "SubFile", "dispatch", "inspect_blob", "member", "member_safely"]
