"""ClamAV's answer as a verdict (Dieu 4.2, 10.2.d). No sockets: the milter scans."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailwarden.verdict import Action, Verdict, defer, reject, reply_safe

INFECTED = "av.infected"
UNAVAILABLE = "av.unavailable"
RULE_IDS = (INFECTED, UNAVAILABLE)


@dataclass(frozen=True)
class AntivirusSettings:
    enforce: bool
    on_error_defer: bool
    citation: str


def decide(status: str, s: AntivirusSettings, *, signature: str = "", error: str = "",
           part: str = "") -> Verdict | None:
    """status is "clean", "infected" or "error" (clients.clamd.ScanStatus values)."""
    detail = {"part": part} if part else {}
    if status == "infected":
        sig = reply_safe(signature, 100)
        v = reject(INFECTED, f"Thu co virus/ma doc {sig} ({s.citation}). Virus found: {sig}",
                   s.citation, detail=detail, signature=signature)
        return v if s.enforce else replace(v, monitor=True)
    if status == "error":
        if s.on_error_defer:
            return defer(UNAVAILABLE, "Tam thoi khong quet virus duoc, vui long thu lai sau. "
                         "Virus scan temporarily unavailable, try again later",
                         detail=detail, error=error)
        return Verdict(Action.ACCEPT, UNAVAILABLE, 250, "2.0.0", "accepted unscanned",
                       detail={"error": error, "policy": "accept", **detail})
    return None
