"""Verdict: what a rule decided, with everything the reply and the log need."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Action(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DEFER = "defer"  # temporary failure: 4xx, the client keeps the mail


@dataclass(frozen=True)
class Verdict:
    action: Action
    rule: str  # stable dotted id, e.g. "ratelimit.external_recipients"
    smtp_code: int  # 550, 552, 451 ...
    enhanced_code: str  # RFC 3463, e.g. "5.7.1"
    text: str  # ASCII reply text, names the rule and cites the article
    article: str = ""  # e.g. "QD 162/2025/QD-UBND Dieu 7.2.b"
    # Extra key=value pairs for the decision log line (never sent to the client).
    detail: dict[str, str] = field(default_factory=dict)
    monitor: bool = False  # decided in monitor mode: logged, not enforced

    @property
    def reply(self) -> str:
        return f"{self.smtp_code} {self.enhanced_code} {self.text}"

    @property
    def enforced(self) -> bool:
        return self.action is not Action.ACCEPT and not self.monitor


def reject(rule: str, text: str, article: str = "", *, code: int = 550,
           enhanced: str = "5.7.1", detail: Mapping[str, str] | None = None,
           **extra: str) -> Verdict:
    return Verdict(Action.REJECT, rule, code, enhanced, text, article,
                   {**(detail or {}), **extra})


def defer(rule: str, text: str, article: str = "", *, code: int = 451,
          enhanced: str = "4.7.1", detail: Mapping[str, str] | None = None,
          **extra: str) -> Verdict:
    return Verdict(Action.DEFER, rule, code, enhanced, text, article,
                   {**(detail or {}), **extra})


def reply_safe(text: str, limit: int, *, unsafe: str = "") -> str:
    """Text from a message or an operator, fit for an SMTP reply: printable ASCII only
    (anything else, and the characters in `unsafe`, become "?"), at most `limit`
    characters ("..." marks a cut)."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c not in unsafe else "?" for c in text)
    return clean if len(clean) <= limit else clean[: max(0, limit - 3)] + "..."
