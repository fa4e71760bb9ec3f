"""The per-message budget and findings, shared by the MIME walk and every format.

Fail closed: every cap here ends in a finding, never in a silent drop.

  * `Budget` counts time (a deadline on the caller's clock), archive entries,
    header objects (7z folders, RAR blocks, zip records, tar headers: things
    a parser materialises or steps over that are not entries), declared and
    inflated bytes. Every parser loop calls `tick()` (time and objects) or
    `check_time()`; running out raises `LimitReached`, or the caller turns a
    refused `take_*` into an UNINSPECTABLE finding.
  * `Context.add` keeps at most `max_findings` findings. When the cap is hit,
    the last slot becomes an UNINSPECTABLE "finding-limit" finding (which the
    attachment rule refuses like any other), and a finding arriving past the
    cap replaces a less severe one already kept, so an EXECUTABLE found after a
    hundred encrypted PDFs is still in the list (severity: executable >
    encrypted archive > uninspectable > encrypted document).
"""

from __future__ import annotations

import lzma
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from mailwarden.inspect import Finding, FindingKind, InspectLimits
from mailwarden.inspect.filenames import executable_extension
from mailwarden.inspect.filetypes import OleError

CHUNK = 64 * 1024
TIME_CHECK_EVERY = 256  # loop iterations between two clock reads in tight parser loops
# Header objects (7z folders/coders/digests, RAR blocks, zip/tar records) a
# message may make us step over, per archive entry allowed, plus a floor.
OBJECTS_PER_ENTRY = 8
OBJECTS_FLOOR = 4096

LIMIT_TOKENS = frozenset(
    {"depth-limit", "entry-limit", "expanded-limit", "time-limit", "part-limit",
     "mime-depth-limit", "header-limit", "object-limit", "finding-limit",
     "header-param-limit", "embedded-archive-limit"}
)
_SEVERITY = {
    FindingKind.EXECUTABLE: 3,
    FindingKind.ENCRYPTED_ARCHIVE: 2,
    FindingKind.UNINSPECTABLE: 1,
    FindingKind.ENCRYPTED_DOCUMENT: 0,
}


class LimitReached(Exception):
    def __init__(self, detected: str, detail: str = "") -> None:
        super().__init__(detected, detail)
        self.detected = detected  # the Finding token: "time-limit", "expanded-limit" ...
        self.detail = detail


class CorruptArchive(ValueError):
    """The archive's structure does not parse."""


class Inconsistent(CorruptArchive):
    """The archive parses, but two of its records disagree (extractors differ)."""


# Errors that malformed archives raise from the stdlib and from our parsers;
# each becomes an UNINSPECTABLE "corrupt-archive" finding for that file.
CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    CorruptArchive, OleError, zipfile.BadZipFile, zipfile.LargeZipFile, lzma.LZMAError,
    zlib.error, EOFError, OSError, ValueError, struct.error, IndexError, KeyError,
    OverflowError, NotImplementedError, UnicodeError, RecursionError,
)


@dataclass
class Budget:
    limits: InspectLimits
    deadline: float
    clock: Callable[[], float]
    entries: int = 0
    declared: int = 0
    inflated: int = 0
    objects: int = 0
    _ticks: int = 0

    @property
    def max_objects(self) -> int:
        return self.limits.max_archive_entries * OBJECTS_PER_ENTRY + OBJECTS_FLOOR

    def check_time(self) -> None:
        if self.clock() >= self.deadline:
            raise LimitReached("time-limit", f"budget {self.limits.time_budget_s:g}s")

    def tick(self, n: int = 1) -> None:
        """One more header object stepped over (n of them): charge the object
        cap, and read the clock every TIME_CHECK_EVERY objects."""
        self.objects += n
        if self.objects > self.max_objects:
            raise LimitReached("object-limit",
                               f"more than {self.max_objects} archive header records")
        self._ticks += n
        if self._ticks >= TIME_CHECK_EVERY:
            self._ticks = 0
            self.check_time()

    def objects_left(self) -> int:
        return max(0, self.max_objects - self.objects)

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
    _capped: bool = False

    def add(self, kind: FindingKind, file: str, detected: str, detail: str = "") -> None:
        key: tuple[object, ...] = (
            (kind, detected) if detected in LIMIT_TOKENS else (kind, file, detected)
        )
        if key in self._seen:
            return
        self._seen.add(key)
        finding = Finding(kind, file, detected, detail[:300])
        cap = max(2, self.limits.max_findings)
        if not self._capped and len(self.findings) < cap - 1:
            self.findings.append(finding)
            return
        if not self._capped:
            # The last slot says the list is incomplete; the attachment rule
            # refuses it (attachment.uninspectable, detected=finding-limit).
            self._capped = True
            self.defect("finding-limit")
            self.findings.append(Finding(FindingKind.UNINSPECTABLE, "", "finding-limit",
                                         f"more than {cap - 1} findings"))
        self._keep_most_severe(finding)

    def _keep_most_severe(self, finding: Finding) -> None:
        """Past the cap: replace the least severe kept finding (not the
        finding-limit slot) if the new one is more severe."""
        weakest = -1
        for i, kept in enumerate(self.findings[:-1]):
            if weakest < 0 or _SEVERITY[kept.kind] < _SEVERITY[self.findings[weakest].kind]:
                weakest = i
        if weakest >= 0 and _SEVERITY[finding.kind] > _SEVERITY[self.findings[weakest].kind]:
            self.findings[weakest] = finding

    def defect(self, name: str) -> None:
        if name not in self.defects and len(self.defects) < 100:
            self.defects.append(name)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def check_name(ctx: Context, name: str, display: str) -> None:
    ext = executable_extension(name, ctx.limits.executable_extensions)
    if ext:
        ctx.add(FindingKind.EXECUTABLE, display, f"name:{ext}")


def declared_ok(ctx: Context, path: str, declared: int) -> bool:
    if ctx.budget.take_declared(declared):
        return True
    ctx.add(FindingKind.UNINSPECTABLE, path, "expanded-limit",
            f"declares {declared} uncompressed bytes")
    return False


def entries_ok(ctx: Context, path: str, n: int) -> bool:
    if ctx.budget.take_entries(n):
        return True
    ctx.add(FindingKind.UNINSPECTABLE, path, "entry-limit",
            f"more than {ctx.limits.max_archive_entries} archive entries")
    return False


def inconsistent(ctx: Context, path: str, why: str) -> None:
    """Two records of one archive disagree: extractors may read either."""
    ctx.add(FindingKind.UNINSPECTABLE, path, "inconsistent-archive", why)
