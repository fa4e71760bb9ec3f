"""Message inspection: raw RFC 5322 message -> MessageModel, pure and bounded.

No sockets, no logging, no config loading: everything configurable arrives in
an `InspectLimits`, and time is a caller-given deadline on a caller-given
monotonic clock. The only I/O is reading the spooled message and writing the
decoded parts to temporary files. See docs/inspection.md.

Public API (everything else in the sub-modules is internal):

    inspect_message(fp, limits, deadline, *, on_part=None, clock=time.monotonic)
    InspectLimits, DEFAULT_EXECUTABLE_EXTENSIONS
    MessageModel, AttachmentInfo, Finding, FindingKind, DecodedPart, PartCallback
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from mailwarden.inspect.filenames import DEFAULT_EXECUTABLE_EXTENSIONS


class FindingKind(enum.Enum):
    EXECUTABLE = "executable"
    ENCRYPTED_ARCHIVE = "encrypted_archive"
    ENCRYPTED_DOCUMENT = "encrypted_document"
    UNINSPECTABLE = "uninspectable"  # content that could not be examined


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    file: str  # display path, nested with "/": "invoice.zip/inner.7z/setup.exe"
    detected: str  # short token: "pe32", "name:.exe", "zipcrypto", "depth-limit" ...
    detail: str = ""


@dataclass(frozen=True)
class AttachmentInfo:
    name: str  # decoded best filename, "" if the part has none
    content_type: str  # lower-cased "type/subtype" as declared
    decoded_size: int
    detected_type: str  # from content sniffing: "pdf", "zip", "docx", "pe32", "unknown" ...


@dataclass
class MessageModel:
    headers: list[tuple[str, str]] = field(default_factory=list)
    attachments: list[AttachmentInfo] = field(default_factory=list)
    total_attachment_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DecodedPart:
    """What `on_part` is told about each decoded leaf part."""

    index: int  # 0-based, in message order, counting every leaf part
    path: str  # display path: "invoice.pdf", "fwd.eml/scan.jpg", "" for a nameless body
    info: AttachmentInfo
    is_attachment: bool  # False for the text/html body parts


# Called once per decoded leaf part, with the decoded bytes positioned at 0.
# The stream is only valid during the call. Exceptions raised by the callback
# propagate out of inspect_message unchanged (they are the caller's, not ours).
PartCallback = Callable[[DecodedPart, BinaryIO], None]


@dataclass(frozen=True)
class InspectLimits:
    """Every bound the inspector enforces. Defaults are engineering bounds,
    not regulation numbers (those live in conf/profiles/)."""

    executable_extensions: frozenset[str]  # lower-case, with dot: ".exe", ...
    max_archive_depth: int = 3  # archive nesting levels opened: a.zip/b.zip/c.zip
    max_archive_entries: int = 10_000  # across all archives of one message
    # Both the sum of declared uncompressed sizes and the bytes actually
    # inflated while sniffing are held to this, each across the message.
    max_expanded_bytes: int = 200 * 1024 * 1024
    max_parts: int = 1000  # MIME entities (leaves and containers)
    max_header_bytes: int = 256 * 1024  # one header block
    time_budget_s: float = 10.0  # for callers that build the deadline from it
    spool_memory_bytes: int = 1024 * 1024  # decoded parts above this go to a temp file
    max_mime_depth: int = 32  # multipart / message/rfc822 nesting
    # Findings kept. When more arrive, the last slot is an UNINSPECTABLE
    # "finding-limit" finding and later findings replace less severe ones, so
    # none that decides a verdict is lost (archives/budget.py, Context.add).
    max_findings: int = 100

    def __post_init__(self) -> None:
        for ext in self.executable_extensions:
            if not ext.startswith(".") or ext != ext.lower() or len(ext) < 2:
                raise ValueError(f"executable extension {ext!r}: want lower case with a dot")
        for name in ("max_archive_depth", "max_archive_entries", "max_expanded_bytes",
                     "max_parts", "max_header_bytes", "spool_memory_bytes",
                     "max_mime_depth", "max_findings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: want a non-negative integer, got {value!r}")
        if not (self.time_budget_s > 0 and math.isfinite(self.time_budget_s)):
            raise ValueError(f"time_budget_s: want a positive number, got {self.time_budget_s!r}")


__all__ = [
    "DEFAULT_EXECUTABLE_EXTENSIONS",
    "AttachmentInfo",
    "DecodedPart",
    "Finding",
    "FindingKind",
    "InspectLimits",
    "MessageModel",
    "PartCallback",
    "inspect_message",
]

# Imported last: mimewalk imports the model above from this package.
from mailwarden.inspect.mimewalk import inspect_message  # noqa: E402
