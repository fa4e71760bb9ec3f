"""ClamAV's answer as a verdict (Dieu 4.2, 10.2.d). No sockets: the engine scans.

clamd is our second parser (DESIGN.md, "Two parsers"): with the policy signatures of
conf/clamav/ it also flags executables by file type, and with AlertEncryptedArchive /
AlertEncryptedDoc encrypted archives and documents. Those detections are the attachment
rules' (same rule ids, same citations, same mode), not viruses: see `policy_finding`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden.inspect import Finding, FindingKind, MessageModel
from mailwarden.rules import attachments
from mailwarden.rules.attachments import AttachmentSettings
from mailwarden.verdict import Verdict, accept, defer, monitored, reject, reply_safe, rule_id

INFECTED = rule_id("av.infected")
UNAVAILABLE = rule_id("av.unavailable")
RULE_IDS = (INFECTED, UNAVAILABLE)


@dataclass(frozen=True)
class AntivirusSettings:
    enforce: bool
    on_error_defer: bool
    citation: str


@dataclass(frozen=True)
class ScanResult:
    """What the scan of one message found (clients.clamd.ScanOutcome, reduced)."""

    status: str  # "clean", "infected" or "error" (clients.clamd.ScanStatus values)
    signature: str = ""
    error: str = ""
    part: str = ""  # which part: "raw-message", "invoice.zip", ...


# Signature name prefixes (clamd appends ".UNOFFICIAL" to names from unsigned databases).
EXECUTABLE_PREFIX = "MailWarden.Executable."  # conf/clamav/mailwarden-policy.ndb
ENCRYPTED_PREFIX = "Heuristics.Encrypted."  # clamd AlertEncryptedArchive / AlertEncryptedDoc
ENCRYPTED_DOCUMENTS = ("Heuristics.Encrypted.PDF", "Heuristics.Encrypted.Office",
                       "Heuristics.Encrypted.Doc")


def policy_finding(scan: ScanResult) -> Finding | None:
    """A clamd detection that is one of the attachment rules', as an inspection finding
    (file = the part scanned, detected = "clamav:<signature>"); None for a virus."""
    if scan.status != "infected":
        return None
    sig = scan.signature
    detected = "clamav:" + sig.removesuffix(".UNOFFICIAL")
    where = scan.part or "message"
    if sig.startswith(EXECUTABLE_PREFIX):
        return Finding(FindingKind.EXECUTABLE, where, detected)
    if sig.startswith(ENCRYPTED_DOCUMENTS):
        return Finding(FindingKind.ENCRYPTED_DOCUMENT, where, detected)
    if sig.startswith(ENCRYPTED_PREFIX):
        return Finding(FindingKind.ENCRYPTED_ARCHIVE, where, detected)
    return None


def decide(scan: ScanResult, s: AntivirusSettings,
           policy: AttachmentSettings | None = None) -> list[Verdict]:
    """Infected: refuse. clamd failed: defer, or accept unscanned by config. Clean: [].

    With `policy` (the attachment rules' settings), a policy-signature detection is
    decided by rules/attachments.py instead: attachment.executable and friends."""
    detail = {"part": scan.part} if scan.part else {}
    finding = policy_finding(scan) if policy is not None else None
    if finding is not None and policy is not None:
        return attachments.decide(MessageModel(findings=[finding]), policy)
    if scan.status == "infected":
        sig = reply_safe(scan.signature, 100)
        v = reject(INFECTED, f"Thu co virus/ma doc {sig} ({s.citation}). Virus found: {sig}",
                   s.citation, detail=detail, signature=scan.signature)
        return [monitored(v, s.enforce)]
    if scan.status == "error":
        if s.on_error_defer:
            return [defer(UNAVAILABLE, "Tam thoi khong quet virus duoc, vui long thu lai sau. "
                          "Virus scan temporarily unavailable, try again later",
                          detail=detail, error=scan.error)]
        return [accept(UNAVAILABLE, "accepted unscanned",
                       detail={"error": scan.error, "policy": "accept", **detail})]
    return []
