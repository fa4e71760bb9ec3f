"""File types from content: magic numbers and the few structures behind them.

`sniff(head)` looks only at the first bytes of a file (`SNIFF_BYTES`), so it
works on an archive member read through streaming decompression. Compound
(OLE) files and PDFs keep what matters away from the start, so they have
random-access helpers (`inspect_ole`, `pdf_is_encrypted`) that the caller
runs on a seekable copy.

Format references (specifications, not code):
  PE/COFF      Microsoft "PE Format" (learn.microsoft.com/windows/win32/debug/pe-format)
  ELF          System V ABI, Tool Interface Standard ELF 1.2
  Mach-O       Apple <mach-o/loader.h>, <mach-o/fat.h> magic values
  Java class   JVM Specification chapter 4.1 (magic, minor, major)
  CFB / OLE    [MS-CFB] Compound File Binary File Format
  MSI          root storage CLSIDs 000C1084 (database), 000C1086 (patch), 000C1082 (transform)
  .doc FIB     [MS-DOC] 2.5.2 FibBase (fEncrypted); .xls [MS-XLS] 2.4.117 FilePass
  OOXML crypto [MS-OFFCRYPTO] 2.3.4 ("EncryptionInfo"/"EncryptedPackage" streams)
  LNK          [MS-SHLLINK] 2.1 ShellLinkHeader (HeaderSize 0x4C + LinkCLSID)
  PDF          ISO 32000-1 7.5.5 (trailer /Encrypt), 7.5.8 (cross-reference streams)
  tar          POSIX pax / ustar header layout
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import IO

SNIFF_BYTES = 64 * 1024

EXECUTABLE_KINDS = frozenset(
    {"pe32", "pe32+", "pe", "mz", "elf", "macho", "java-class", "dex", "lnk",
     "iso9660", "udf", "vhdx", "vhd"}
)
ARCHIVE_KINDS = frozenset(
    {"zip", "7z", "rar4", "rar5", "gzip", "bzip2", "xz", "tar", "tnef"}
)
# Types whose decisive structure can sit anywhere in the file: the caller must
# give `inspect_ole` / `pdf_is_encrypted` a seekable copy.
RANDOM_ACCESS_KINDS = frozenset({"ole", "pdf"})


@dataclass(frozen=True)
class Sniffed:
    kind: str  # "pe32", "zip", "pdf", "ole", "text", "unknown" ...
    detail: str = ""

    @property
    def executable(self) -> bool:
        return self.kind in EXECUTABLE_KINDS

    @property
    def archive(self) -> bool:
        return self.kind in ARCHIVE_KINDS


def _u16(b: bytes, off: int, fmt: str = "<H") -> int:
    return int(struct.unpack_from(fmt, b, off)[0])


def _u32(b: bytes, off: int, fmt: str = "<I") -> int:
    return int(struct.unpack_from(fmt, b, off)[0])


# ---------------------------------------------------------------- executables


def _sniff_mz(head: bytes) -> Sniffed | None:
    """MZ/ZM: a PE if e_lfanew points at "PE\\0\\0", otherwise a DOS program
    when the DOS header is self-consistent.

    A bare "MZ" is common at the start of plain text ("MZ report ..."), so it
    counts as an executable only when the header fields make sense: bytes in
    the last page < 512, at least one page, and a header that fits in the
    pages it claims. Printable text never satisfies the first test (two
    printable bytes are >= 0x2020).
    """
    if len(head) < 64 or head[:2] not in (b"MZ", b"ZM"):
        return None
    e_lfanew = _u32(head, 0x3C)
    if 0x40 <= e_lfanew and e_lfanew + 26 <= len(head):
        found = pe_at(head[e_lfanew : e_lfanew + 26])
        if found is not None:
            return found
    e_cblp, e_cp = _u16(head, 2), _u16(head, 4)
    e_cparhdr = _u16(head, 8)
    if e_cblp < 512 and e_cp >= 1 and 0 < e_cparhdr * 16 <= e_cp * 512:
        return Sniffed("mz", "DOS header without a PE header")
    return None


def pe_at(header: bytes) -> Sniffed | None:
    """The 26 bytes at e_lfanew: a PE signature and the optional header magic."""
    if len(header) < 26 or header[:4] != b"PE\0\0":
        return None
    magic = _u16(header, 24)
    if magic == 0x10B:
        return Sniffed("pe32")
    if magic == 0x20B:
        return Sniffed("pe32+")
    return Sniffed("pe", f"optional header magic 0x{magic:x}")


_MACHO_THIN = {
    b"\xfe\xed\xfa\xce": "32-bit big-endian",
    b"\xce\xfa\xed\xfe": "32-bit",
    b"\xfe\xed\xfa\xcf": "64-bit big-endian",
    b"\xcf\xfa\xed\xfe": "64-bit",
}


def _sniff_cafebabe(head: bytes) -> Sniffed | None:
    """0xCAFEBABE starts both Mach-O universal binaries and Java classes.

    The second big-endian word is nfat_arch for Mach-O (a handful of
    architectures) and (minor << 16 | major) for a class file, where major is
    45 or more; so small values are Mach-O, the rest Java (file(1) reasons
    the same way).
    """
    if len(head) < 8:
        return None
    second = _u32(head, 4, ">I")
    if second == 0:
        return None
    if second < 45:
        return Sniffed("macho", f"universal, {second} architectures")
    return Sniffed("java-class", f"class file version {_u16(head, 6, '>H')}")


def _sniff_executable(head: bytes) -> Sniffed | None:
    mz = _sniff_mz(head)
    if mz is not None:
        return mz
    if head[:4] == b"\x7fELF" and len(head) >= 5 and head[4] in (1, 2):
        return Sniffed("elf", "64-bit" if head[4] == 2 else "32-bit")
    if head[:4] in _MACHO_THIN:
        return Sniffed("macho", _MACHO_THIN[head[:4]])
    if head[:4] == b"\xca\xfe\xba\xbe":
        return _sniff_cafebabe(head)
    if head[:4] in (b"\xca\xfe\xba\xbf", b"\xbe\xba\xfe\xca", b"\xbf\xba\xfe\xca"):
        return Sniffed("macho", "universal")
    if re.match(rb"dex\n\d{3}\0", head[:8]):
        return Sniffed("dex")
    if head[:20] == b"\x4c\0\0\0\x01\x14\x02\0\0\0\0\0\xc0\0\0\0\0\0\0\x46":
        return Sniffed("lnk")
    if head[:8] == b"vhdxfile":
        return Sniffed("vhdx")
    if head[:8] == b"conectix":
        return Sniffed("vhd")
    if len(head) >= 0x8006:
        # ISO 9660 / UDF volume descriptors start at sector 16 (byte 32768).
        ident = head[0x8001:0x8006]
        if ident == b"CD001":
            return Sniffed("iso9660")
        if ident in (b"BEA01", b"NSR02", b"NSR03"):
            return Sniffed("udf")
    return None


# ------------------------------------------------------------------- the rest


def _tar_checksum_ok(block: bytes) -> bool:
    field = block[148:156].split(b"\0", 1)[0].strip()
    if not field or not all(48 <= c <= 55 for c in field):
        return False
    stored = int(field, 8)
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return stored == computed


def sniff(head: bytes) -> Sniffed:
    """Classify a file by its first bytes (`SNIFF_BYTES` is plenty)."""
    found = _sniff_executable(head)
    if found is not None:
        return found
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return Sniffed("zip")
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return Sniffed("7z")
    if head[:8] == b"Rar!\x1a\x07\x01\x00":
        return Sniffed("rar5")
    if head[:7] == b"Rar!\x1a\x07\x00":
        return Sniffed("rar4")
    if head[:3] == b"\x1f\x8b\x08":
        return Sniffed("gzip")
    if re.match(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)", head[:10]):
        return Sniffed("bzip2")
    if head[:6] == b"\xfd7zXZ\0":
        return Sniffed("xz")
    if head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return Sniffed("ole")
    if head[:8] == b"MSCF\0\0\0\0":
        return Sniffed("cab")
    if head[:4] == b"\x78\x9f\x3e\x22":  # TNEF (winmail.dat), [MS-OXTNEF] 2.1.3.1
        return Sniffed("tnef")
    if len(head) >= 512 and (head[257:262] == b"ustar" or _tar_checksum_ok(head[:512])):
        return Sniffed("tar")
    if b"%PDF-" in head[:1024]:  # readers accept the header anywhere in the first KiB
        return Sniffed("pdf")
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return Sniffed("png")
    if head[:3] == b"\xff\xd8\xff":
        return Sniffed("jpeg")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("gif")
    if head[:4] in (b"II*\0", b"MM\0*"):
        return Sniffed("tiff")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("webp")
    if head[:5] == b"{\\rtf":
        return Sniffed("rtf")
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return Sniffed("zstd")
    sample = head[:4096]
    if sample and b"\0" not in sample:
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 4:  # not just a character cut at the end
                return Sniffed("unknown")
        return Sniffed("text")
    return Sniffed("unknown")


# ---------------------------------------------------------- compound (OLE) files

_ENDOFCHAIN = 0xFFFFFFFE
_MAXREGSECT = 0xFFFFFFFA
_MSI_CLSIDS = {
    # On-disk GUID layout: Data1..3 little-endian, Data4 as stored.
    bytes.fromhex("84100c00000000" "00c000000000000046"): "msi",
    bytes.fromhex("86100c00000000" "00c000000000000046"): "msp",
    bytes.fromhex("82100c00000000" "00c000000000000046"): "mst",
}
_OFFICE_CLSIDS = {
    bytes.fromhex("06090200000000" "00c000000000000046"): "doc",
    bytes.fromhex("20080200000000" "00c000000000000046"): "xls",
    bytes.fromhex("10080200000000" "00c000000000000046"): "xls",
    bytes.fromhex("108d81649b4fcf1186ea00aa00b929e8"): "ppt",
}


class OleError(ValueError):
    """The compound file is malformed."""


@dataclass(frozen=True)
class OleInfo:
    kind: str  # "msi", "msp", "mst", "doc", "xls", "ppt", "ole"
    encrypted: str  # "" or what shows it: "EncryptedPackage", "fEncrypted", "FilePass" ...
    streams: tuple[str, ...]


class _Cfb:
    """Just enough of [MS-CFB] to list directory entries and read the start
    of a stream. Every chain walk is bounded by the file's sector count, so
    loops in a hostile FAT end with OleError."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        f.seek(0)
        hdr = f.read(512)
        if len(hdr) < 512 or hdr[:8] != b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
            raise OleError("short or bad header")
        shift = _u16(hdr, 0x1E)
        if shift not in (9, 12):
            raise OleError(f"sector shift {shift}")
        self.sector_size = 1 << shift
        self.mini_cutoff = _u32(hdr, 0x38)
        self.first_dir = _u32(hdr, 0x30)
        self.first_minifat = _u32(hdr, 0x3C)
        self.max_sectors = max(1, size // self.sector_size + 1)
        n_fat = _u32(hdr, 0x2C)
        if n_fat > self.max_sectors:
            raise OleError("FAT larger than the file")
        fat_sectors = [s for s in struct.unpack_from("<109I", hdr, 0x4C) if s <= _MAXREGSECT]
        difat = _u32(hdr, 0x44)
        per = self.sector_size // 4
        steps = 0
        while difat <= _MAXREGSECT and len(fat_sectors) < n_fat:
            steps += 1
            if steps > self.max_sectors:
                raise OleError("DIFAT loop")
            block = self._sector(difat)
            entries = struct.unpack_from(f"<{per}I", block)
            fat_sectors.extend(s for s in entries[:-1] if s <= _MAXREGSECT)
            difat = entries[-1]
        self.fat_sectors = fat_sectors[:n_fat]
        self._fat_cache: dict[int, tuple[int, ...]] = {}

    def _sector(self, n: int) -> bytes:
        if n > _MAXREGSECT or n >= self.max_sectors:
            raise OleError(f"sector {n} out of range")
        self.f.seek((n + 1) * self.sector_size)
        data = self.f.read(self.sector_size)
        if len(data) < self.sector_size:
            data += b"\0" * (self.sector_size - len(data))  # tolerate a short last sector
        return data

    def _next(self, n: int) -> int:
        per = self.sector_size // 4
        index, offset = divmod(n, per)
        if index >= len(self.fat_sectors):
            raise OleError("sector beyond the FAT")
        table = self._fat_cache.get(index)
        if table is None:
            table = struct.unpack_from(f"<{per}I", self._sector(self.fat_sectors[index]))
            self._fat_cache[index] = table
        return table[offset]

    def chain(self, start: int, max_bytes: int) -> bytes:
        out = bytearray()
        n = start
        seen: set[int] = set()
        while n <= _MAXREGSECT and len(out) < max_bytes:
            if n in seen:
                raise OleError("sector chain loop")
            seen.add(n)
            out += self._sector(n)
            n = self._next(n)
        return bytes(out[:max_bytes])

    def entries(self) -> list[tuple[str, int, bytes, int, int]]:
        """(name, type, clsid, start sector, size) for every directory entry."""
        raw = self.chain(self.first_dir, self.max_sectors * self.sector_size)
        result = []
        for off in range(0, len(raw) - 127, 128):
            entry = raw[off : off + 128]
            etype = entry[0x42]
            if etype not in (1, 2, 5):
                continue
            name_len = min(_u16(entry, 0x40), 64)
            name = entry[: max(0, name_len - 2)].decode("utf-16-le", "replace")
            size = struct.unpack_from("<Q", entry, 0x78)[0]
            if self.sector_size == 512:
                size &= 0xFFFFFFFF  # version 3: high half is undefined
            result.append((name, etype, entry[0x50:0x60], _u32(entry, 0x74), int(size)))
        return result

    def read_stream(self, start: int, size: int, root_start: int, max_bytes: int) -> bytes:
        want = min(size, max_bytes)
        if size >= self.mini_cutoff:
            return self.chain(start, want)
        # Small streams live in 64-byte mini sectors inside the root's stream.
        minifat = self.chain(self.first_minifat, self.max_sectors * self.sector_size)
        out = bytearray()
        n, steps = start, 0
        while n <= _MAXREGSECT and len(out) < want:
            steps += 1
            if steps > len(minifat) // 4 + 1:
                raise OleError("mini chain loop")
            out += self._mini_sector(root_start, n)
            if 4 * n + 4 > len(minifat):
                break
            n = _u32(minifat, 4 * n)
        return bytes(out[:want])

    def _mini_sector(self, root_start: int, n: int) -> bytes:
        per_sector = self.sector_size // 64
        index, within = divmod(n, per_sector)
        sector, steps = root_start, 0
        for _ in range(index):
            steps += 1
            if steps > self.max_sectors or sector > _MAXREGSECT:
                raise OleError("mini stream chain")
            sector = self._next(sector)
        data = self._sector(sector)
        return data[within * 64 : within * 64 + 64]


def _xls_has_filepass(workbook_head: bytes) -> bool:
    pos = 0
    while pos + 4 <= len(workbook_head):
        rtype, rlen = struct.unpack_from("<HH", workbook_head, pos)
        if rtype == 0x002F:  # FilePass
            return True
        if rtype in (0x000A, 0x0085):  # EOF, BoundSheet8: FilePass comes before these
            return False
        pos += 4 + rlen
    return False


def inspect_ole(f: IO[bytes], size: int) -> OleInfo:
    """Classify a compound file: MSI family by root CLSID, Office encryption
    by its streams. Raises OleError on malformed input."""
    cfb = _Cfb(f, size)
    entries = cfb.entries()
    if not entries or entries[0][1] != 5:
        raise OleError("no root entry")
    root_clsid, root_start = entries[0][2], entries[0][3]
    names = tuple(e[0] for e in entries[1:])
    kind = _MSI_CLSIDS.get(root_clsid) or _OFFICE_CLSIDS.get(root_clsid, "ole")
    encrypted = ""
    lowered = {n.lower(): e for n, e in zip(names, entries[1:], strict=True)}
    if "encryptedpackage" in lowered:
        encrypted = "EncryptedPackage"
    elif "encryptedsummary" in lowered:
        encrypted = "EncryptedSummary"
    elif "worddocument" in lowered:
        _, _, _, start, ssize = lowered["worddocument"]
        fib = cfb.read_stream(start, ssize, root_start, 32)
        if len(fib) >= 12 and _u16(fib, 0) == 0xA5EC and _u16(fib, 0x0A) & 0x0100:
            encrypted = "fEncrypted"
        if kind == "ole":
            kind = "doc"
    elif "workbook" in lowered or "book" in lowered:
        _, _, _, start, ssize = lowered.get("workbook") or lowered["book"]
        if _xls_has_filepass(cfb.read_stream(start, ssize, root_start, 8192)):
            encrypted = "FilePass"
        if kind == "ole":
            kind = "xls"
    return OleInfo(kind, encrypted, names)


# ----------------------------------------------------------------------- PDF

_ENCRYPT_KEY = re.compile(rb"/Encrypt(?![A-Za-z0-9#_.\-])\s*(?:\d+\s+\d+\s+R|<<)")
_STARTXREF = re.compile(rb"startxref\s+(\d{1,15})")


def pdf_is_encrypted(f: IO[bytes], size: int) -> bool:
    """True when the trailer (classic or cross-reference stream) has /Encrypt.

    Looks where trailers live: the dictionary `startxref` points at, and the
    first and last 64 KiB (linearized first-page trailer; last trailer; files
    with a broken startxref). Under encryption strings and streams are
    enciphered but dictionary keys are not, so the key is visible in clear.
    The pattern wants a reference or a dictionary after the name, which keeps
    /EncryptMetadata and prose out.
    """
    window = 64 * 1024
    f.seek(0)
    head = f.read(window)
    if _ENCRYPT_KEY.search(head):
        return True
    f.seek(max(0, size - window))
    tail = f.read(window)
    if _ENCRYPT_KEY.search(tail):
        return True
    found = list(_STARTXREF.finditer(tail))
    if found:
        offset = int(found[-1].group(1))
        if 0 <= offset < size:
            f.seek(offset)
            if _ENCRYPT_KEY.search(f.read(16 * 1024)):
                return True
    return False
