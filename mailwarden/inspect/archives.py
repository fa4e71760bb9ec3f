"""Archives and files: name and content checks, nested, within a budget.

`inspect_blob` classifies one seekable file (a decoded MIME part, or an
archive member copied out because it is itself an archive, an OLE file or a
PDF) and walks archives: zip, 7z, RAR4/RAR5, tar, and gzip/bzip2/xz, nested
up to `max_archive_depth`. Members are never extracted wholesale: each is read
through a streaming decompressor for its first `SNIFF_BYTES`, and copied to a
spooled temporary file only when its type needs random access.

Everything inflated is counted against one per-message `Budget`; so are
declared sizes and entry counts. Running out gives an UNINSPECTABLE finding
("expanded-limit", "entry-limit", "depth-limit"), and an expired deadline
raises `LimitReached("time-limit")` up to `inspect_message`.

Why some parsers are our own (all bounded, all forward-only or seek-based):
  * zip: `zipfile` reads the central directory (after we count its entries:
    zipfile would build a ZipInfo per entry with no cap), but member data goes
    through our own decompressor, because ZipExtFile inflates bzip2 and LZMA
    members without an output bound.
  * tar: `tarfile` reads a whole pax/GNU long-name header into memory, however
    large it claims to be.
  * RAR: `rarfile` parses every header up front with no entry cap or
    deadline, and cannot decompress without unrar anyway; the header walk
    below follows the RAR 5.0 technote (rarlab.com/technote.htm) and the RAR
    2.x-4.x TechNote.txt block layout.
  * 7z: header parser after 7zFormat.txt of the LZMA SDK; LZMA/LZMA2 and the
    BCJ filters are liblzma's, through the stdlib `lzma` module.
"""

from __future__ import annotations

import bz2
import functools
import lzma
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol

from mailwarden.inspect import Finding, FindingKind, InspectLimits
from mailwarden.inspect.filenames import (
    ARCHIVE_EXTENSIONS,
    basename,
    effective_extension,
    executable_extension,
)
from mailwarden.inspect.filetypes import (
    RANDOM_ACCESS_KINDS,
    SNIFF_BYTES,
    OleError,
    Sniffed,
    inspect_ole,
    pdf_is_encrypted,
    sniff,
)

CHUNK = 64 * 1024
_XZ_MEMLIMIT = 128 * 1024 * 1024  # liblzma decoder memory for one .xz stream
_MAX_7Z_HEADER = 64 * 1024 * 1024
_MAX_TAR_EXT_HEADER = 1024 * 1024  # pax / GNU long name records
_OLE_DOCUMENT_EXTENSIONS = frozenset(
    {".doc", ".dot", ".xls", ".xlt", ".xla", ".ppt", ".pot", ".pps", ".msg", ".pub", ".vsd",
     ".vss", ".mpp", ".wps", ".hwp", ".docx", ".xlsx", ".pptx"}  # last three: encrypted OOXML
)
_LIMIT_TOKENS = frozenset(
    {"depth-limit", "entry-limit", "expanded-limit", "time-limit", "part-limit",
     "mime-depth-limit", "header-limit"}
)


class LimitReached(Exception):
    def __init__(self, detected: str, detail: str = "") -> None:
        super().__init__(detected, detail)
        self.detected = detected  # the Finding token: "time-limit", "expanded-limit" ...
        self.detail = detail


class CorruptArchive(ValueError):
    """The archive's structure does not parse."""


# Errors that malformed archives raise from the stdlib and from our parsers;
# each becomes an UNINSPECTABLE "corrupt-archive" finding for that file.
CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    CorruptArchive, OleError, zipfile.BadZipFile, zipfile.LargeZipFile, lzma.LZMAError,
    zlib.error, EOFError, OSError, ValueError, struct.error, IndexError, KeyError,
    OverflowError, NotImplementedError, UnicodeError,
)


class Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...


@dataclass
class Budget:
    limits: InspectLimits
    deadline: float
    clock: Callable[[], float]
    entries: int = 0
    declared: int = 0
    inflated: int = 0

    def check_time(self) -> None:
        if self.clock() >= self.deadline:
            raise LimitReached("time-limit", f"budget {self.limits.time_budget_s:g}s")

    def take_entries(self, n: int) -> bool:
        if self.entries + n > self.limits.max_archive_entries:
            self.entries = self.limits.max_archive_entries + 1
            return False
        self.entries += n
        return True

    def take_declared(self, n: int) -> bool:
        if self.declared + n > self.limits.max_expanded_bytes:
            return False
        self.declared += n
        return True

    def take_inflated(self, n: int) -> None:
        self.inflated += n
        if self.inflated > self.limits.max_expanded_bytes:
            raise LimitReached(
                "expanded-limit", f"more than {self.limits.max_expanded_bytes} bytes inflated"
            )


@dataclass
class Context:
    """Per-message state shared by the MIME walker and the archive walker."""

    limits: InspectLimits
    budget: Budget
    where: str = ""  # display path being examined, for limit findings
    findings: list[Finding] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    _seen: set[tuple[object, ...]] = field(default_factory=set)

    def add(self, kind: FindingKind, file: str, detected: str, detail: str = "") -> None:
        key: tuple[object, ...] = (
            (kind, detected) if detected in _LIMIT_TOKENS else (kind, file, detected)
        )
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.findings) >= self.limits.max_findings:
            self.defect("finding-limit")
            return
        self.findings.append(Finding(kind, file, detected, detail[:300]))

    def defect(self, name: str) -> None:
        if name not in self.defects and len(self.defects) < 100:
            self.defects.append(name)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


# ----------------------------------------------------------------- readers


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


class _Zlib:
    """zlib with the bz2/lzma decompressor interface (bounded output)."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._d.decompress(self._d.unconsumed_tail + data, max(max_length, 0))
        self.needs_input = not self._d.unconsumed_tail and (max_length < 0 or len(out) < max_length)
        return out


class DecompressReader:
    """Streaming decompression with output bounded by each read(n).

    `restart` (a magic prefix) continues into concatenated members, as gzip,
    bzip2 and xz files may hold; anything else after the end is ignored.
    """

    def __init__(self, src: Reader, make: Callable[[], _Decompressor],
                 restart: bytes = b"") -> None:
        self.src, self.make, self.restart = src, make, restart
        self.dec = make()
        self.pending = b""
        self.done = False

    def read(self, n: int) -> bytes:
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
                    break
            got = self.dec.decompress(data, n - len(out))
            out += got
            idle = 0 if (got or data) else idle + 1
            if idle > 3:
                raise CorruptArchive("decompressor made no progress")
        return bytes(out)


def _decompress_reader(kind: str, src: Reader) -> DecompressReader:
    if kind == "gzip":
        return DecompressReader(src, lambda: _Zlib(31), b"\x1f\x8b")
    if kind == "bzip2":
        return DecompressReader(src, bz2.BZ2Decompressor, b"BZh")
    return DecompressReader(
        src, lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT),
        b"\xfd7zXZ\0",
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


def _spool(ctx: Context) -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=ctx.limits.spool_memory_bytes)


# -------------------------------------------------------------- per file


def inspect_blob(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    """Check one seekable file; return its detected type."""
    ctx.where = path
    ctx.budget.check_time()
    f.seek(0)
    head = f.read(SNIFF_BYTES)
    return _dispatch(ctx, sniff(head), f, size, path, depth)


def _dispatch(ctx: Context, s: Sniffed, f: IO[bytes], size: int, path: str, depth: int) -> str:
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
        if s.archive:
            if depth >= ctx.limits.max_archive_depth:
                ctx.add(FindingKind.UNINSPECTABLE, path, "depth-limit",
                        f"archive nested deeper than {ctx.limits.max_archive_depth}")
                return s.kind
            return _walk_archive(ctx, s.kind, f, size, path, depth)
        if s.kind in ("unknown", "text") and effective_extension(path) in ARCHIVE_EXTENSIONS:
            # Named like an archive but not one at offset 0: a zip with data
            # prepended still opens in many tools, so try that before giving up.
            if depth < ctx.limits.max_archive_depth and zipfile.is_zipfile(f):
                return _walk_archive(ctx, "zip", f, size, path, depth)
            ctx.add(FindingKind.UNINSPECTABLE, path, "corrupt-archive",
                    f"named {effective_extension(path)} but content is {s.kind}")
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


def _check_ole(ctx: Context, f: IO[bytes], size: int, path: str) -> str:
    info = inspect_ole(f, size)
    if info.kind in ("msi", "msp", "mst"):
        ctx.add(FindingKind.EXECUTABLE, path, "msi", f"Windows Installer {info.kind}")
    if info.encrypted:
        ctx.add(FindingKind.ENCRYPTED_DOCUMENT, path, "office-encrypted", info.encrypted)
    return info.kind


def _walk_archive(ctx: Context, kind: str, f: IO[bytes], size: int, path: str,
                  depth: int) -> str:
    if kind == "zip":
        return _walk_zip(ctx, f, size, path, depth)
    if kind == "7z":
        _walk_7z(ctx, f, size, path, depth)
    elif kind in ("rar4", "rar5"):
        _walk_rar(ctx, kind, f, size, path, depth)
    elif kind == "tar":
        f.seek(0)
        _walk_tar(ctx, FileView(f, 0, size), path, depth)
    else:
        return _walk_compressed(ctx, kind, f, path, depth)
    return kind


def check_name(ctx: Context, name: str, display: str) -> None:
    ext = executable_extension(name, ctx.limits.executable_extensions)
    if ext:
        ctx.add(FindingKind.EXECUTABLE, display, f"name:{ext}")


def _member(ctx: Context, parent: str, name: str, depth: int, stream: Reader | None) -> None:
    """Name and content checks for one archive member (at depth + 1)."""
    display = f"{parent}/{name}"
    ctx.where = display
    check_name(ctx, name, display)
    if stream is None:
        return
    head = read_up_to(stream, SNIFF_BYTES)
    s = sniff(head)
    if s.executable:
        ctx.add(FindingKind.EXECUTABLE, display, s.kind, s.detail)
        return
    named_archive = (s.kind in ("unknown", "text")
                     and effective_extension(name) in ARCHIVE_EXTENSIONS)
    if not (s.archive or s.kind in RANDOM_ACCESS_KINDS or named_archive):
        return
    if (s.archive or named_archive) and depth + 1 >= ctx.limits.max_archive_depth:
        ctx.add(FindingKind.UNINSPECTABLE, display, "depth-limit",
                f"archive nested deeper than {ctx.limits.max_archive_depth}")
        return
    with _spool(ctx) as copy:
        copy.write(head)
        size = len(head)
        while True:
            ctx.budget.check_time()
            data = stream.read(CHUNK)
            if not data:
                break
            copy.write(data)
            size += len(data)
        _dispatch(ctx, s, copy, size, display, depth + 1)


def _given(stream: Reader | None) -> Callable[[], Reader | None]:
    return lambda: stream


def _member_safely(ctx: Context, parent: str, name: str, depth: int,
                   open_stream: Callable[[], Reader | None]) -> None:
    """`_member`, with a corrupt member reported without ending the walk."""
    try:
        stream = open_stream()
    except CORRUPT_ERRORS as exc:
        check_name(ctx, name, f"{parent}/{name}")
        ctx.add(FindingKind.UNINSPECTABLE, f"{parent}/{name}", "corrupt-archive", describe(exc))
        return
    try:
        _member(ctx, parent, name, depth, stream)
    except CORRUPT_ERRORS as exc:
        ctx.add(FindingKind.UNINSPECTABLE, f"{parent}/{name}", "corrupt-archive", describe(exc))


def _declared_ok(ctx: Context, path: str, declared: int) -> bool:
    if ctx.budget.take_declared(declared):
        return True
    ctx.add(FindingKind.UNINSPECTABLE, path, "expanded-limit",
            f"declares {declared} uncompressed bytes")
    return False


def _entries_ok(ctx: Context, path: str, n: int) -> bool:
    if ctx.budget.take_entries(n):
        return True
    ctx.add(FindingKind.UNINSPECTABLE, path, "entry-limit",
            f"more than {ctx.limits.max_archive_entries} archive entries")
    return False


# -------------------------------------------------------------------- zip

_ZIP_METHODS = {0: "store", 8: "deflate", 12: "bzip2", 14: "lzma", 95: "xz"}


def _zip_entry_count(f: IO[bytes], size: int, stop_after: int) -> int:
    """Count central directory entries (stopping past `stop_after`) before
    zipfile parses them all into memory."""
    f.seek(max(0, size - 65557))
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise zipfile.BadZipFile("no end of central directory")
    eocd_pos = size - len(tail) + at
    entries, cd_size = (int(v) for v in struct.unpack_from("<HI", tail, at + 10))
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        loc = tail[at - 20 : at] if at >= 20 else b""
        if loc[:4] == b"PK\x06\x07":
            f.seek(struct.unpack_from("<Q", loc, 8)[0])
            rec = f.read(56)
            if rec[:4] == b"PK\x06\x06" and len(rec) == 56:
                return int(struct.unpack_from("<Q", rec, 32)[0])
        return entries
    pos = eocd_pos - cd_size
    if pos < 0:
        raise zipfile.BadZipFile("central directory before start of file")
    count = 0
    end = eocd_pos
    while pos + 46 <= end and count <= stop_after:
        f.seek(pos)
        fixed = f.read(46)
        if fixed[:4] != b"PK\x01\x02":
            break
        n, m, k = struct.unpack_from("<HHH", fixed, 28)
        pos += 46 + n + m + k
        count += 1
    return count


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


def _zip_member_reader(f: IO[bytes], info: zipfile.ZipInfo) -> Reader:
    f.seek(info.header_offset)
    local = f.read(30)
    if local[:4] != b"PK\x03\x04":
        raise CorruptArchive("bad local file header")
    n, m = struct.unpack_from("<HH", local, 26)
    raw = FileView(f, info.header_offset + 30 + n + m, info.compress_size)
    method = info.compress_type
    src: Reader
    if method == 0:
        src = raw
    elif method == 8:
        src = DecompressReader(raw, lambda: _Zlib(-15))
    elif method == 12:
        src = DecompressReader(raw, bz2.BZ2Decompressor)
    elif method == 95:
        src = _decompress_reader("xz", raw)
    else:  # 14: LZMA, with zip's 4-byte preamble before the 5 property bytes
        pre = raw.read(4)
        if len(pre) < 4:
            raise CorruptArchive("short LZMA header")
        props = raw.read(struct.unpack_from("<H", pre, 2)[0])
        filt = _lzma1_filter(props, info.file_size)
        src = DecompressReader(
            raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])
        )
    return Limited(src, info.file_size)


def _walk_zip(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> str:
    remaining = ctx.limits.max_archive_entries - ctx.budget.entries
    if not _entries_ok(ctx, path, 0) or _zip_entry_count(f, size, remaining) > remaining:
        _entries_ok(ctx, path, remaining + 1)
        return "zip"
    f.seek(0)
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
    if not _entries_ok(ctx, path, len(infos)):
        return "zip"
    content = _declared_ok(ctx, path, sum(i.file_size for i in infos))
    kind, evidence = _zip_kind([i.filename for i in infos])
    if kind in ("jar", "apk", "appx"):
        ctx.add(FindingKind.EXECUTABLE, path, kind, evidence)
    encrypted: dict[str, list[str]] = {}
    for info in infos:
        if info.flag_bits & 0x1:
            token = ("zip-aes" if info.compress_type == 99
                     else "zip-strong" if info.flag_bits & 0x40 else "zipcrypto")
            encrypted.setdefault(token, []).append(info.filename)
    for token, members in encrypted.items():
        ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, token,
                f"{len(members)} encrypted entries, first {members[0]!r}")
    for info in infos:
        ctx.budget.check_time()
        if info.is_dir():
            continue
        opener = _given(None)
        if content and not info.flag_bits & 0x1:
            if info.compress_type in _ZIP_METHODS:
                opener = _bind_counted(ctx, functools.partial(_zip_member_reader, f, info))
            else:
                ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{info.filename}",
                        "unsupported-method", f"zip method {info.compress_type}")
        _member_safely(ctx, path, info.filename, depth, opener)
    return kind


def _bind_counted(ctx: Context, make: Callable[[], Reader]) -> Callable[[], Reader | None]:
    return lambda: Counted(make(), ctx.budget)


# ----------------------------------------------------------- gzip/bz2/xz


def _gzip_name(f: IO[bytes]) -> str:
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
    return basename(hdr[pos:end].decode("latin-1"))


def _inner_name(kind: str, f: IO[bytes], path: str) -> str:
    name = _gzip_name(f) if kind == "gzip" else ""
    if name:
        return name
    base = basename(path)
    lowered = base.lower()
    for ext, repl in ((".tgz", ".tar"), (".tbz2", ".tar"), (".tbz", ".tar"), (".txz", ".tar"),
                      (".gz", ""), (".bz2", ""), (".xz", "")):
        if lowered.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)] + repl
    return base or "data"


def _walk_compressed(ctx: Context, kind: str, f: IO[bytes], path: str, depth: int) -> str:
    name = _inner_name(kind, f, path)
    f.seek(0)
    reader = Counted(_decompress_reader(kind, FileView(f, 0, 1 << 62)), ctx.budget)
    head = read_up_to(reader, SNIFF_BYTES)
    if sniff(head).kind == "tar":
        # .tar.gz is one archive: its members sit one level below it.
        _walk_tar(ctx, Prepend(head, reader), path, depth)
        return f"tar+{kind}"
    if not _entries_ok(ctx, path, 1):
        return kind
    _member(ctx, path, name, depth, Prepend(head, reader))
    return kind


# -------------------------------------------------------------------- tar


def _tar_number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise CorruptArchive("bad octal number in tar header")
    return int(text, 8)


def _tar_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pax_path(data: bytes) -> str | None:
    path = None
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
        if key == b"path":
            path = value.rstrip(b"\n").decode("utf-8", "replace")
        pos += length
    return path


def _walk_tar(ctx: Context, src: Reader, path: str, depth: int) -> None:
    long_name: str | None = None
    while True:
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
        data = Limited(src, size)
        padding = -size % 512
        if typeflag in (b"x", b"L", b"g", b"K", b"X"):
            if size > _MAX_TAR_EXT_HEADER:
                raise CorruptArchive(f"tar extended header of {size} bytes")
            ext = read_up_to(data, size)
            if typeflag in (b"x", b"X"):
                long_name = _pax_path(ext) or long_name
            elif typeflag == b"L":
                long_name = ext.split(b"\0", 1)[0].decode("utf-8", "replace")
        else:
            if long_name is not None:
                name, long_name = long_name, None
            if not _entries_ok(ctx, path, 1):
                return
            if typeflag in (b"0", b"\0", b"7"):
                if _declared_ok(ctx, path, size):
                    _member_safely(ctx, path, name, depth, _given(data))
                else:
                    check_name(ctx, name, f"{path}/{name}")
            elif typeflag != b"5":
                check_name(ctx, name, f"{path}/{name}")
        data.drain()
        read_up_to(src, padding)


# -------------------------------------------------------------------- RAR


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


def rar5_entries(f: IO[bytes], size: int) -> Iterator[RarEntry | RarHeaderEncrypted]:
    """File headers of a RAR 5.0 archive (technote: "General archive block
    format", "File header and service header", "Archive encryption header")."""
    pos = 8
    while pos < size:
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


def rar4_entries(f: IO[bytes], size: int) -> Iterator[RarEntry | RarHeaderEncrypted]:
    """File headers of a RAR 2.x-4.x archive (TechNote.txt block layout)."""
    pos = 7
    while pos + 7 <= size:
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


def _walk_rar(ctx: Context, kind: str, f: IO[bytes], size: int, path: str, depth: int) -> None:
    entries = rar5_entries(f, size) if kind == "rar5" else rar4_entries(f, size)
    content = True
    encrypted: list[str] = []
    for entry in entries:
        ctx.budget.check_time()
        if isinstance(entry, RarHeaderEncrypted):
            ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, f"{kind}-encrypted-header",
                    "file names are encrypted too")
            return
        if not _entries_ok(ctx, path, 1):
            break
        if entry.is_dir:
            continue
        if entry.encrypted:
            encrypted.append(entry.name)
        if content and not _declared_ok(ctx, path, entry.unpacked):
            content = False
        opener = _given(None)
        if content and entry.stored and not entry.encrypted:
            # Stored members are readable as they are; compressed RAR data
            # needs unrar, which Debian main does not ship: names only.
            opener = _given(FileView(f, entry.data_offset, min(entry.packed, entry.unpacked)))
        _member_safely(ctx, path, entry.name, depth, opener)
    if encrypted:
        ctx.add(FindingKind.ENCRYPTED_ARCHIVE, path, f"{kind}-encrypted",
                f"{len(encrypted)} encrypted entries, first {encrypted[0]!r}")


# --------------------------------------------------------------------- 7z

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

    def __init__(self, data: bytes) -> None:
        self.d, self.p = data, 0

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
    for _ in range(buf.count()):
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
    pairs = [(buf.number(), buf.number()) for _ in range(total_out - 1)]
    n_packed = total_in - len(pairs)
    if n_packed < 1:
        raise CorruptArchive("7z folder without packed streams")
    if n_packed == 1:
        bound_in = {i for i, _ in pairs}
        packed = [i for i in range(total_in) if i not in bound_in][:1]
    else:
        packed = [buf.number() for _ in range(n_packed)]
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
                st.pack_sizes = [buf.number() for _ in range(n)]
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
        st.folders = [_read_folder(buf) for _ in range(n)]
        if buf.byte() != 0x0C:
            raise CorruptArchive("7z folders without unpack sizes")
        for folder in st.folders:
            folder.unpack_sizes = [buf.number() for _ in range(sum(c.n_out for c in folder.coders))]
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
            counts = [buf.count() for _ in st.folders]
            prop = buf.byte()
        sizes: list[list[int]] = []
        for folder, count in zip(st.folders, counts, strict=True):
            if count == 0:
                sizes.append([])
                continue
            these = [buf.number() for _ in range(count - 1)] if prop == 0x09 else []
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
        data = _Buf(buf.take(buf.number()))
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


def _lzma1_filter(props: bytes, out_size: int) -> dict[str, int]:
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
        src = DecompressReader(raw, lambda: _Zlib(-15))
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
            filters.append(_lzma1_filter(last.props, last_size))
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
        buf = _Buf(header)
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


def _walk_7z(ctx: Context, f: IO[bytes], size: int, path: str, depth: int) -> None:
    header = _read_7z_header(ctx, f, size, path)
    if not header:
        return
    buf = _Buf(header)
    if buf.byte() != 0x01:
        raise CorruptArchive("7z header does not start with kHeader")
    prop = buf.byte()
    if prop == 0x02:  # ArchiveProperties: skip
        while buf.number() != 0:
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
            _entries_ok(ctx, path, left + 1)
            return
        files = got
    if not _entries_ok(ctx, path, len(files)):
        return
    content = _declared_ok(ctx, path, sum(fo.unpack_size for fo in st.folders))
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
    for folder, (offset, packed), sizes in zip(st.folders, offsets, st.substreams, strict=True):
        members = [next(streams, None) for _ in sizes]
        reader: Reader | str | None = None
        if content and not folder.encrypted:
            try:
                reader = _folder_reader(f, folder, offset, packed)
            except CORRUPT_ERRORS as exc:
                ctx.add(FindingKind.UNINSPECTABLE, path, "corrupt-archive", describe(exc))
        if isinstance(reader, str):
            first = next((m.name for m in members if m), "")
            ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{first}", "unsupported-method", reader)
            reader = None
        counted = Counted(reader, ctx.budget) if reader is not None else None
        for member, member_size in zip(members, sizes, strict=True):
            ctx.budget.check_time()
            if member is None:
                break
            if member.is_dir:
                continue
            if counted is None:
                check_name(ctx, member.name, f"{path}/{member.name}")
                continue
            part = Limited(counted, member_size)
            _member_safely(ctx, path, member.name, depth, _given(part))
            try:
                part.drain()
            except CORRUPT_ERRORS as exc:
                ctx.add(FindingKind.UNINSPECTABLE, f"{path}/{member.name}", "corrupt-archive",
                        describe(exc))
                counted = None
