"""ClamAV's answer as a verdict (Dieu 4.2, 10.2.d). No sockets: the engine scans."""

from __future__ import annotations

from dataclasses import dataclass

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


def decide(scan: ScanResult, s: AntivirusSettings) -> list[Verdict]:
    """Infected: refuse. clamd failed: defer, or accept unscanned by config. Clean: []."""
    detail = {"part": scan.part} if scan.part else {}
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
