"""Archives and single files: what is refused, what passes, and the limits."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import itertools
import lzma
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from mailwarden.inspect import Finding, FindingKind, InspectLimits
from mailwarden.inspect.archives import (
    Budget,
    Context,
    LimitReached,
    RarEntry,
    inspect_blob,
    rar4_entries,
    rar5_entries,
)
from tests.unit.test_inspect_builders import (
    ICS,
    JPEG,
    LIMITS,
    LNK,
    PNG,
    docx,
    dos_mz,
    elf,
    jar,
    java_class,
    macho_fat,
    msi,
    needs_7z,
    needs_zip,
    ooxml_encrypted,
    pdf,
    pe,
    rar4,
    rar5,
    run_tool,
    sevenzip,
    word_doc,
    xls,
    xlsx,
    zip_bytes,
)


@dataclasses.dataclass
class Result:
    detected: str
    findings: list[Finding]

    @property
    def tokens(self) -> set[str]:
        return {f.detected for f in self.findings}

    def files(self, token: str) -> list[str]:
        return [f.file for f in self.findings if f.detected == token]


def check(data: bytes, name: str, limits: InspectLimits = LIMITS,
          clock: Callable[[], float] = time.monotonic) -> Result:
    ctx = Context(limits, Budget(limits, clock() + 30, clock))
    detected = inspect_blob(ctx, io.BytesIO(data), len(data), name, 0)
    return Result(detected, ctx.findings)


def tar_bytes(files: dict[str, bytes], mode: str = "w", fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tf:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_named(data: bytes, inner: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=inner, mode="wb", fileobj=buf, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


# ------------------------------------------------------- clean files pass

CLEAN = [
    pytest.param(pdf(), "bao-cao.pdf", "pdf", id="pdf"),
    pytest.param(docx(), "quyet-dinh.docx", "docx", id="docx"),
    pytest.param(xlsx(), "so-lieu.xlsx", "xlsx", id="xlsx"),
    pytest.param(PNG, "anh.png", "png", id="png"),
    pytest.param(JPEG, "anh.jpg", "jpeg", id="jpeg"),
    pytest.param(ICS, "lich-hop.ics", "text", id="ics"),
    pytest.param(word_doc(), "cong-van.doc", "doc", id="legacy-ole-doc"),
    pytest.param(xls(), "bang-luong.xls", "xls", id="legacy-ole-xls"),
    pytest.param(zip_bytes({"a.pdf": pdf(), "b.pdf": pdf(), "c/d.docx": docx()}),
                 "ho-so.zip", "zip", id="zip-of-pdfs-and-docx"),
    pytest.param(tar_bytes({"a.pdf": pdf(), "b.txt": b"hello"}), "x.tar", "tar", id="tar"),
    pytest.param(tar_bytes({"a.pdf": pdf()}, "w:gz"), "x.tar.gz", "tar+gzip", id="tar-gz"),
    pytest.param(tar_bytes({"a.pdf": pdf()}, "w:bz2"), "x.tbz2", "tar+bzip2", id="tar-bz2"),
    pytest.param(tar_bytes({"a.pdf": pdf()}, "w:xz"), "x.txz", "tar+xz", id="tar-xz"),
    pytest.param(gzip_named(pdf(), "bao-cao.pdf"), "bao-cao.pdf.gz", "gzip", id="gzip-of-pdf"),
    pytest.param(bz2.compress(b"plain text\n" * 100), "notes.txt.bz2", "bzip2", id="bz2-of-text"),
    pytest.param(lzma.compress(pdf()), "a.pdf.xz", "xz", id="xz-of-pdf"),
    pytest.param(rar5([("a.pdf", pdf(), False), ("b.docx", docx(), False)]), "x.rar", "rar5",
                 id="rar5-stored"),
    pytest.param(rar4([("a.pdf", pdf(), False), ("tài liệu.pdf", pdf(), False)]), "x.rar",
                 "rar4", id="rar4-stored-unicode-name"),
    pytest.param(zip_bytes({"x/": b"", "x/a.pdf": pdf()}), "dirs.zip", "zip",
                 id="zip-with-directory-entry"),
]


@pytest.mark.parametrize(("data", "name", "kind"), CLEAN)
def test_clean_files_have_no_findings(data: bytes, name: str, kind: str) -> None:
    result = check(data, name)
    assert result.findings == []
    assert result.detected == kind


# -------------------------------------------------- executables are found

EXECUTABLES = [
    pytest.param(pe(), "hoa-don.pdf", "hoa-don.pdf", "pe32", id="pe-renamed-pdf"),
    pytest.param(pe("pe32+"), "x.jpg", "x.jpg", "pe32+", id="pe32plus-renamed-jpg"),
    pytest.param(dos_mz(), "old.txt", "old.txt", "mz", id="dos-program"),
    pytest.param(elf(), "report", "report", "elf", id="elf"),
    pytest.param(macho_fat(), "app.pdf", "app.pdf", "macho", id="macho-universal"),
    pytest.param(java_class(), "A.dat", "A.dat", "java-class", id="java-class"),
    pytest.param(LNK, "tai-lieu.pdf", "tai-lieu.pdf", "lnk", id="shortcut-renamed"),
    pytest.param(msi(), "update.doc", "update.doc", "msi", id="msi-renamed-doc"),
    pytest.param(jar(), "tool.zip", "tool.zip", "jar", id="jar-renamed-zip"),
    pytest.param(zip_bytes({"a/B.class": java_class()}), "x.zip", "x.zip", "jar",
                 id="zip-of-class-files-is-jar"),
    pytest.param(zip_bytes({"AndroidManifest.xml": b"x", "classes.dex": b"dex\n035\0"}),
                 "game.zip", "game.zip", "apk", id="apk"),
    pytest.param(zip_bytes({"a.pdf": pdf(), "setup.exe": b"not really"}), "ho-so.zip",
                 "ho-so.zip/setup.exe", "name:.exe", id="zip-member-named-exe"),
    pytest.param(zip_bytes({"hoa-don.pdf": pe()}), "ho-so.zip", "ho-so.zip/hoa-don.pdf", "pe32",
                 id="zip-member-pe-renamed"),
    pytest.param(zip_bytes({"a.pdf.exe. ": b"x"}), "x.zip", "x.zip/a.pdf.exe. ", "name:.exe",
                 id="zip-member-trailing-dot-space"),
    pytest.param(zip_bytes({"run.JS": b"x"}), "x.zip", "x.zip/run.JS", "name:.js",
                 id="zip-member-upper-case-js"),
    pytest.param(zip_bytes({"a.pdf": pe()}, zipfile.ZIP_STORED), "x.zip", "x.zip/a.pdf", "pe32",
                 id="zip-stored-member"),
    pytest.param(zip_bytes({"a.pdf": pe()}, zipfile.ZIP_BZIP2), "x.zip", "x.zip/a.pdf", "pe32",
                 id="zip-bzip2-member"),
    pytest.param(zip_bytes({"a.pdf": pe()}, zipfile.ZIP_LZMA), "x.zip", "x.zip/a.pdf", "pe32",
                 id="zip-lzma-member"),
    pytest.param(tar_bytes({"dir/" + "d" * 120 + "/x.scr": b"x"}), "x.tar",
                 "x.tar/dir/" + "d" * 120 + "/x.scr", "name:.scr", id="tar-pax-long-name"),
    pytest.param(tar_bytes({"g" * 150 + ".vbs": b"x"}, fmt=tarfile.GNU_FORMAT), "x.tar",
                 "x.tar/" + "g" * 150 + ".vbs", "name:.vbs", id="tar-gnu-long-name"),
    pytest.param(tar_bytes({"a.pdf": pe()}, "w:gz"), "x.tgz", "x.tgz/a.pdf", "pe32",
                 id="tgz-member-pe"),
    pytest.param(gzip_named(pe(), "invoice.pdf"), "invoice.gz", "invoice.gz/invoice.pdf", "pe32",
                 id="gzip-of-pe"),
    pytest.param(gzip_named(b"x", "setup.exe"), "setup.gz", "setup.gz/setup.exe", "name:.exe",
                 id="gzip-fname-exe"),
    pytest.param(bz2.compress(b"echo"), "run.bat.bz2", "run.bat.bz2/run.bat", "name:.bat",
                 id="bz2-stripped-name-bat"),
    pytest.param(rar5([("a.pdf", pdf(), False), ("setup.exe", b"x", False)]), "x.rar",
                 "x.rar/setup.exe", "name:.exe", id="rar5-member-named-exe"),
    pytest.param(rar5([("scan.pdf", pe(), False)]), "x.rar", "x.rar/scan.pdf", "pe32",
                 id="rar5-stored-member-pe"),
    pytest.param(rar4([("tài liệu.exe", b"x", False)]), "x.rar", "x.rar/tài liệu.exe",
                 "name:.exe", id="rar4-unicode-name-exe"),
    pytest.param(rar4([("scan.pdf", pe(), False)]), "x.rar", "x.rar/scan.pdf", "pe32",
                 id="rar4-stored-member-pe"),
    pytest.param(zip_bytes({"inner.zip": zip_bytes({"deep.zip": zip_bytes({"a.exe": b"x"})})}),
                 "outer.zip", "outer.zip/inner.zip/deep.zip/a.exe", "name:.exe",
                 id="nested-three-levels"),
    pytest.param(zip_bytes({"a.msi": b"x", "b.doc": msi()}), "x.zip", "x.zip/b.doc", "msi",
                 id="zip-member-msi-by-content"),
]


@pytest.mark.parametrize(("data", "name", "file", "token"), EXECUTABLES)
def test_executables_are_found(data: bytes, name: str, file: str, token: str) -> None:
    result = check(data, name)
    assert Finding(FindingKind.EXECUTABLE, file, token) in [
        dataclasses.replace(f, detail="") for f in result.findings]


def test_prepended_zip_named_zip_is_still_walked() -> None:
    data = b"junk before the archive\n" + zip_bytes({"setup.exe": b"x"})
    assert check(data, "a.zip").files("name:.exe") == ["a.zip/setup.exe"]


def test_not_an_archive_but_named_like_one_is_uninspectable() -> None:
    result = check(b"\x00\x01\x02 random bytes" * 10, "a.zip")
    assert result.tokens == {"corrupt-archive"}


# ------------------------------------------------------------ encryption


@needs_zip
def test_zipcrypto_from_zip_dash_P(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf())
    run_tool(["zip", "-q", "-P", "secret", "enc.zip", "a.pdf"], cwd=tmp_path)
    result = check((tmp_path / "enc.zip").read_bytes(), "enc.zip")
    assert result.tokens == {"zipcrypto"}
    assert result.findings[0].kind is FindingKind.ENCRYPTED_ARCHIVE
    assert result.findings[0].file == "enc.zip"


@needs_7z
def test_zip_aes_from_7z(tmp_path: Path) -> None:
    data = sevenzip(tmp_path, {"a.pdf": pdf()}, "-tzip", "-psecret", "-mem=AES256",
                    name="aes.zip")
    assert check(data, "aes.zip").tokens == {"zip-aes"}


@needs_zip
def test_encrypted_zip_still_has_its_names_checked(tmp_path: Path) -> None:
    (tmp_path / "setup.exe").write_bytes(b"x")
    run_tool(["zip", "-q", "-P", "secret", "enc.zip", "setup.exe"], cwd=tmp_path)
    assert check((tmp_path / "enc.zip").read_bytes(), "enc.zip").tokens == {
        "zipcrypto", "name:.exe"}


@pytest.mark.parametrize(("data", "token"), [
    pytest.param(rar5([("a.pdf", pdf(), True)]), "rar5-encrypted", id="rar5-encrypted-member"),
    pytest.param(rar5([], header_encrypted=True), "rar5-encrypted-header",
                 id="rar5-encrypted-header"),
    pytest.param(rar4([("a.pdf", pdf(), True)]), "rar4-encrypted", id="rar4-encrypted-member"),
    pytest.param(rar4([], header_encrypted=True), "rar4-encrypted-header",
                 id="rar4-encrypted-header"),
])
def test_encrypted_rar(data: bytes, token: str) -> None:
    result = check(data, "x.rar")
    assert result.tokens == {token}
    assert result.findings[0].kind is FindingKind.ENCRYPTED_ARCHIVE


@pytest.mark.parametrize(("data", "token"), [
    pytest.param(ooxml_encrypted(), "office-encrypted", id="ooxml-encrypted"),
    pytest.param(word_doc(encrypted=True), "office-encrypted", id="doc-encrypted"),
    pytest.param(xls(encrypted=True), "office-encrypted", id="xls-encrypted"),
    pytest.param(pdf(encrypted=True), "pdf-encrypted", id="pdf-encrypted"),
    pytest.param(zip_bytes({"a/b.pdf": pdf(encrypted=True)}), "pdf-encrypted",
                 id="pdf-encrypted-inside-zip"),
])
def test_encrypted_documents(data: bytes, token: str) -> None:
    result = check(data, "tai-lieu.docx")
    assert result.tokens == {token}
    assert result.findings[0].kind is FindingKind.ENCRYPTED_DOCUMENT


# -------------------------------------------------------------------- 7z


@needs_7z
@pytest.mark.parametrize(("options", "files", "expect"), [
    pytest.param((), {"a.pdf": pdf(), "b.txt": b"hello"}, set(), id="clean-lzma2-solid"),
    pytest.param((), {"a.txt": b"hello " * 5000, "scan.pdf": pe()}, {"pe32"},
                 id="pe-second-in-solid-block"),
    pytest.param(("-m0=LZMA",), {"scan.pdf": pe()}, {"pe32"}, id="lzma1"),
    pytest.param(("-m0=Copy",), {"scan.pdf": pe()}, {"pe32"}, id="copy"),
    pytest.param(("-m0=Deflate",), {"scan.pdf": pe()}, {"pe32"}, id="deflate"),
    pytest.param(("-m0=BZip2",), {"scan.pdf": pe()}, {"pe32"}, id="bzip2"),
    pytest.param(("-mf=BCJ",), {"scan.pdf": pe()}, {"pe32"}, id="bcj-x86-filter"),
    pytest.param(("-mf=Delta:4",), {"scan.pdf": pe()}, {"pe32"}, id="delta-filter"),
    pytest.param(("-mhc=off",), {"setup.exe": b"x"}, {"name:.exe"}, id="plain-header"),
    pytest.param((), {"dir/sub/run.ps1": b"x", "empty.vbs": b""}, {"name:.ps1", "name:.vbs"},
                 id="names-incl-empty-file"),
    pytest.param(("-psecret",), {"a.pdf": pdf()}, {"7z-aes"}, id="encrypted-content"),
    pytest.param(("-psecret",), {"setup.exe": b"x"}, {"7z-aes", "name:.exe"},
                 id="encrypted-content-names-visible"),
    pytest.param(("-psecret", "-mhe=on"), {"setup.exe": b"x"}, {"7z-encrypted-header"},
                 id="encrypted-header"),
    pytest.param(("-m0=PPMd",), {"a.txt": b"text " * 100}, set(),
                 id="ppmd-through-libarchive"),
    pytest.param(("-m0=PPMd",), {"a.pdf": pe()}, {"pe32"}, id="ppmd-pe-through-libarchive"),
    pytest.param(("-m0=BCJ2", "-m1=LZMA", "-m2=LZMA", "-m3=LZMA", "-mb0:1", "-mb0s1:2",
                  "-mb0s2:3"), {"a.pdf": pe()}, {"pe32"}, id="bcj2-pe-through-libarchive"),
])
def test_7z(tmp_path: Path, options: tuple[str, ...], files: dict[str, bytes],
            expect: set[str]) -> None:
    assert check(sevenzip(tmp_path, files, *options), "a.7z").tokens == expect


@needs_7z
def test_7z_inside_zip_inside_7z(tmp_path: Path) -> None:
    inner = sevenzip(tmp_path, {"payload.doc": pe()}, name="inner.7z")
    middle = zip_bytes({"inner.7z": inner})
    outer = sevenzip(tmp_path, {"middle.zip": middle}, name="outer.7z")
    assert check(outer, "outer.7z").files("pe32") == ["outer.7z/middle.zip/inner.7z/payload.doc"]


def test_truncated_7z_is_corrupt() -> None:
    data = b"7z\xbc\xaf\x27\x1c\0\x04" + b"\0" * 4 + struct.pack("<QQ", 1000, 50) + b"\0" * 4
    assert check(data, "a.7z").tokens == {"corrupt-archive"}


# ---------------------------------------------------------------- RAR walk


def test_rar_walkers_list_what_rarfile_lists() -> None:
    files = [("hoá đơn.pdf", b"%PDF", False), ("b/c.exe", b"MZ", True)]
    r5, r4 = rar5(files), rar4(files)
    got5 = [(e.name, e.encrypted, e.stored) for e in rar5_entries(io.BytesIO(r5), len(r5))
            if isinstance(e, RarEntry)]
    got4 = [(e.name, e.encrypted, e.stored) for e in rar4_entries(io.BytesIO(r4), len(r4))
            if isinstance(e, RarEntry)]
    want = [("hoá đơn.pdf", False, True), ("b/c.exe", True, True)]
    assert got5 == want
    assert got4 == want


def test_compressed_rar_member_libarchive_cannot_read_is_uninspectable() -> None:
    # Mark a stored member as compressed (method 0x33): the bytes are not a
    # RAR stream, libarchive (our decoder of RAR compression) fails on them,
    # and what cannot be read is uninspectable, not passed on its name.
    data = bytearray(rar4([("scan.pdf", pe(), False)]))
    method_at = data.index(b"scan.pdf") - 7  # METHOD byte sits 7 bytes before the name
    assert data[method_at] == 0x30
    data[method_at] = 0x33
    assert check(bytes(data), "x.rar").tokens == {"unreadable-member"}


def test_corrupt_rar_is_uninspectable() -> None:
    data = b"Rar!\x1a\x07\x01\x00" + b"\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"
    assert check(data, "x.rar").tokens == {"corrupt-archive"}


# ----------------------------------------------------------------- limits


def nested_zip(levels: int, leaf: dict[str, bytes]) -> bytes:
    data = zip_bytes(leaf)
    for level in range(levels - 1, 0, -1):
        data = zip_bytes({f"level{level + 1}.zip": data})
    return data


def test_depth_limit_four_levels() -> None:
    data = nested_zip(4, {"a.pdf": pdf()})
    result = check(data, "level1.zip")
    assert result.tokens == {"depth-limit"}
    assert result.files("depth-limit") == ["level1.zip/level2.zip/level3.zip/level4.zip"]


def test_three_levels_is_within_depth() -> None:
    assert check(nested_zip(3, {"a.pdf": pdf()}), "level1.zip").findings == []


def test_depth_limit_is_configurable() -> None:
    limits = dataclasses.replace(LIMITS, max_archive_depth=1)
    assert check(nested_zip(2, {"a.pdf": pdf()}), "a.zip", limits).tokens == {"depth-limit"}


def _repeated_deflate(total: int, unit: int = 1 << 20) -> tuple[bytes, int]:
    """Raw deflate of `total` zero bytes, built from one full-flushed block
    repeated (after a full flush, deflating the same input gives the same
    bytes), so a 1 GiB member is made without compressing 1 GiB."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(b"\0" * unit) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(b"\0" * unit) + comp.flush(zlib.Z_FULL_FLUSH)
    assert again == block
    crc = 0
    zero = b"\0" * unit
    for _ in range(total // unit):
        crc = zlib.crc32(zero, crc)
    return block * (total // unit) + comp.flush(), crc


def zip_with_raw_member(name: str, raw: bytes, size: int, crc: int, method: int = 8) -> bytes:
    """A one-member zip written by hand, for members zipfile would take too
    long to compress."""
    n = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(raw),
                        min(size, 0xFFFFFFFF), len(n), 0) + n
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc,
                          len(raw), min(size, 0xFFFFFFFF), len(n), 0, 0, 0, 0, 0, 0) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                      len(local) + len(raw), 0)
    return local + raw + central + end


def test_gigabyte_of_zeros_is_expanded_limit_quickly() -> None:
    raw, crc = _repeated_deflate(1 << 30)
    data = zip_with_raw_member("zeros.bin", raw, 1 << 30, crc)
    assert len(data) < 2 * 1024 * 1024
    start = time.monotonic()
    result = check(data, "bomb.zip")
    assert result.tokens == {"expanded-limit"}
    assert time.monotonic() - start < 2


def test_lying_declared_size_is_inconsistent() -> None:
    # The member says 100 bytes but inflates to 64 MiB: extractors write the
    # 64 MiB (what is sniffed is the real data), and the lie is uninspectable.
    raw, crc = _repeated_deflate(64 << 20)
    data = zip_with_raw_member("zeros.bin", raw, 100, crc)
    start = time.monotonic()
    assert check(data, "liar.zip").tokens == {"inconsistent-archive"}
    assert time.monotonic() - start < 2


def test_inflated_bytes_are_budgeted() -> None:
    # A gzip whose content is a 3 MiB zip: copying the zip out to walk it
    # inflates 3 MiB, over a 1 MiB budget.
    inner = zip_bytes({"a.bin": bytes(range(256)) * 12_288}, zipfile.ZIP_STORED)
    limits = dataclasses.replace(LIMITS, max_expanded_bytes=1 << 20)
    with pytest.raises(LimitReached) as caught:
        check(gzip.compress(inner), "x.zip.gz", limits)
    assert caught.value.detected == "expanded-limit"


def test_42_style_nested_bomb_is_quick() -> None:
    # Like 42.zip: 16 copies per level, five levels, 1 GiB of zeros at the
    # bottom (16**4 GiB in all); each level deflates the repeats again.
    leaf, crc = _repeated_deflate(1 << 30)
    data = zip_with_raw_member("0.bin", leaf, 1 << 30, crc)
    for level in range(4):
        data = zip_bytes({f"{level}-{i}.zip": data for i in range(16)})
    assert len(data) < 1024 * 1024
    start = time.monotonic()
    result = check(data, "42.zip")
    assert result.tokens & {"depth-limit", "expanded-limit", "entry-limit"}
    assert result.tokens <= {"depth-limit", "expanded-limit", "entry-limit"}
    assert time.monotonic() - start < 10


def test_entry_limit_default() -> None:
    data = zip_bytes({f"f{i}.txt": b"" for i in range(10_001)}, zipfile.ZIP_STORED)
    assert check(data, "many.zip").tokens == {"entry-limit"}


def test_entry_limit_counts_across_archives() -> None:
    limits = dataclasses.replace(LIMITS, max_archive_entries=10)
    data = zip_bytes({f"{i}.zip": zip_bytes({"a.txt": b"", "b.txt": b""}) for i in range(5)})
    assert check(data, "x.zip", limits).tokens == {"entry-limit"}


def test_entry_limit_tar() -> None:
    limits = dataclasses.replace(LIMITS, max_archive_entries=5)
    data = tar_bytes({f"{i}.txt": b"x" for i in range(6)})
    assert check(data, "x.tar", limits).tokens == {"entry-limit"}


def test_tar_declared_sizes_count() -> None:
    limits = dataclasses.replace(LIMITS, max_expanded_bytes=1000)
    data = tar_bytes({"a.txt": b"x" * 600, "b.exe": b"x" * 600})
    # The second member goes over the budget: still name-checked.
    assert check(data, "x.tar", limits).tokens == {"expanded-limit", "name:.exe"}


def test_time_limit_raises_for_the_walker() -> None:
    ticks = itertools.count()

    def clock() -> float:
        return float(next(ticks))  # one second per look at the clock

    limits = dataclasses.replace(LIMITS, time_budget_s=1.0)
    ctx = Context(limits, Budget(limits, 5.0, clock))
    data = zip_bytes({f"{i}.pdf": pdf() for i in range(50)})
    with pytest.raises(LimitReached) as caught:
        inspect_blob(ctx, io.BytesIO(data), len(data), "slow.zip", 0)
    assert caught.value.detected == "time-limit"


def test_unsupported_zip_method_is_uninspectable() -> None:
    data = bytearray(zip_bytes({"a.pdf": pdf()}))
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.index(sig)
        offset = at + (8 if sig == b"PK\x03\x04" else 10)
        data[offset : offset + 2] = (9).to_bytes(2, "little")  # Deflate64
    assert check(bytes(data), "x.zip").tokens == {"unsupported-method"}


def test_corrupt_member_does_not_stop_the_walk() -> None:
    data = bytearray(zip_bytes({"a.pdf": pdf(), "b.exe": b"x"}))
    data[data.index(b"PK\x03\x04") + 30 + 5] ^= 0xFF  # inside a.pdf's name: header mismatch ok
    first_data = data.index(b"a.pdf") + 5
    data[first_data : first_data + 8] = b"\xff" * 8  # garbage deflate data
    assert check(bytes(data), "x.zip").tokens == {"corrupt-archive", "name:.exe"}


def test_truncated_zip_is_corrupt() -> None:
    data = zip_bytes({"a.pdf": pdf()})
    assert check(data[: len(data) // 2], "x.zip").tokens == {"corrupt-archive"}


def test_truncated_gzip_keeps_what_it_has() -> None:
    data = gzip_named(pe() + b"\0" * 100_000, "a.pdf")
    assert check(data[:300], "a.gz").tokens == {"pe32"}


def test_prepended_zip_inside_a_zip() -> None:
    inner = b"MZ? no, just junk\n" + zip_bytes({"setup.exe": b"x"})
    result = check(zip_bytes({"inner.zip": inner}), "outer.zip")
    assert result.files("name:.exe") == ["outer.zip/inner.zip/setup.exe"]


def test_member_named_like_an_archive_but_not_one() -> None:
    result = check(zip_bytes({"a.7z": b"\x00\x01 not an archive" * 20}), "outer.zip")
    assert result.files("corrupt-archive") == ["outer.zip/a.7z"]


@pytest.mark.parametrize(("name", "uninspectable"), [
    pytest.param("cong-van.doc", False, id="document-name-is-a-defect-only"),
    pytest.param("setup.bin", True, id="other-name-is-uninspectable"),
])
def test_corrupt_compound_file(name: str, uninspectable: bool) -> None:
    data = word_doc()[:700]
    ctx = Context(LIMITS, Budget(LIMITS, time.monotonic() + 30, time.monotonic))
    inspect_blob(ctx, io.BytesIO(data), len(data), name, 0)
    assert ({f.detected for f in ctx.findings} == {"corrupt-document"}) is uninspectable
    assert ("corrupt-document" in ctx.defects) is not uninspectable
