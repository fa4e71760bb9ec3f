"""Attachment rules: executables, encrypted archives, the size cap.

Input is the MessageModel of inspect/ (what is in the message); output is one
Verdict per reason. The citations and the cap come from the profile through
AttachmentSettings; nothing here knows a regulation number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mailwarden.inspect import Finding, FindingKind, MessageModel
from mailwarden.verdict import Verdict, accept, defer, monitored, reject, reply_safe, rule_id

EXECUTABLE = rule_id("attachment.executable")
ENCRYPTED_ARCHIVE = rule_id("attachment.encrypted_archive")
ENCRYPTED_DOCUMENT = rule_id("attachment.encrypted_document")
UNINSPECTABLE = rule_id("attachment.uninspectable")
SIZE = rule_id("attachment.size")
RULE_IDS = (EXECUTABLE, ENCRYPTED_ARCHIVE, ENCRYPTED_DOCUMENT, UNINSPECTABLE, SIZE)

_BASE64_LINE = 76  # RFC 2045 line length, plus CRLF


@dataclass(frozen=True)
class AttachmentSettings:
    enforce: bool
    max_bytes: int
    size_overhead: int
    encrypted_documents: str  # "log" | "reject"
    uninspectable: str  # "reject" | "defer" | "accept"
    size_citation: str
    executable_citation: str
    encrypted_citation: str


def reply_name(name: str, limit: int = 60) -> str:
    """A file name fit for an SMTP reply: printable ASCII, bounded, no quotes."""
    return reply_safe(name, limit, unsafe='"')


def mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def base64_size(n: int) -> int:
    """Bytes `n` decoded bytes take in a message as base64 with CRLF line ends."""
    encoded = math.ceil(n / 3) * 4
    return encoded + math.ceil(encoded / _BASE64_LINE) * 2


def largest_passable(s: AttachmentSettings) -> int:
    """The biggest raw message that could carry attachments within the cap."""
    return base64_size(s.max_bytes) + s.size_overhead


def _finding_verdict(f: Finding, s: AttachmentSettings) -> Verdict | None:
    name = reply_name(f.file)
    detail = {"file": f.file, "detected": f.detected}
    if f.detail:
        detail["why"] = f.detail
    if f.kind is FindingKind.EXECUTABLE:
        return reject(EXECUTABLE, f'Khong duoc gui/nhan tep thuc thi "{name}" '
                      f"({s.executable_citation}). Executable attachment refused: {name}",
                      s.executable_citation, detail=detail)
    if f.kind is FindingKind.ENCRYPTED_ARCHIVE:
        return reject(ENCRYPTED_ARCHIVE, f'Khong duoc gui/nhan tep nen co mat khau "{name}" '
                      f"({s.encrypted_citation}). Password-protected archive refused: {name}",
                      s.encrypted_citation, detail=detail)
    if f.kind is FindingKind.ENCRYPTED_DOCUMENT:
        text = (f'Tai lieu co mat khau "{name}" khong kiem tra duoc ({s.encrypted_citation}). '
                f"Password-protected document refused: {name}")
        if s.encrypted_documents == "reject":
            return reject(ENCRYPTED_DOCUMENT, text, s.encrypted_citation, detail=detail)
        return accept(ENCRYPTED_DOCUMENT, "logged", s.encrypted_citation, detail=detail)
    if f.kind is FindingKind.UNINSPECTABLE:
        why = reply_safe(f.detected, 40, unsafe='"%')  # our token, but kept safe all the same
        text = (f'Tep dinh kem "{name}" khong kiem tra duoc ({why}) '
                f"({s.executable_citation}). Attachment could not be inspected "
                f"({why}): {name}")
        if s.uninspectable == "reject":
            return reject(UNINSPECTABLE, text, s.executable_citation, detail=detail)
        if s.uninspectable == "defer":
            return defer(UNINSPECTABLE, text, s.executable_citation, detail=detail)
        return accept(UNINSPECTABLE, "logged", s.executable_citation, detail=detail)
    return None  # pragma: no cover - every kind is handled above


def decide(model: MessageModel, s: AttachmentSettings) -> list[Verdict]:
    """Every reason this message breaks an attachment rule (empty: none).

    ACCEPT verdicts in the list are findings to log without refusing
    (encrypted documents by default, uninspectable content when configured).
    """
    out = [v for f in model.findings if (v := _finding_verdict(f, s)) is not None]
    if model.total_attachment_bytes > s.max_bytes:
        total, cap = mib(model.total_attachment_bytes), mib(s.max_bytes)
        out.append(reject(
            SIZE, f"Tong dung luong tep dinh kem {total} vuot qua {cap} ({s.size_citation}). "
            f"Attachments total {total}, over the {cap} limit",
            s.size_citation, code=552, enhanced="5.3.4",
            size=str(model.total_attachment_bytes), limit=str(s.max_bytes)))
    return [monitored(v, s.enforce) for v in out]


def decide_announced_size(size: int, s: AttachmentSettings) -> list[Verdict]:
    """MAIL FROM ... SIZE=n: refuse before the upload what can never pass."""
    limit = largest_passable(s)
    if size <= limit:
        return []
    cap = mib(s.max_bytes)
    v = reject(SIZE, f"Thu {mib(size)} qua lon: tep dinh kem toi da {cap} "
               f"({s.size_citation}). Message of {mib(size)} cannot pass: attachments are "
               f"limited to {cap}", s.size_citation, code=552, enhanced="5.3.4",
               announced=str(size), limit=str(limit))
    return [monitored(v, s.enforce)]
