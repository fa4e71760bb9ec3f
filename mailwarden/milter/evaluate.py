"""One message through inspection, the attachment rules and ClamAV.

Shared by the milter (milter/app.py) and `mailwarden check FILE.eml`, so an
operator explaining a bounce gets exactly the milter's verdict. The message
is a seekable binary file (the milter's spool); time is bounded by
`milter.content_budget`, and running out of it is a deferral, never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from mailwarden.clients import clamd
from mailwarden.inspect import (
    DecodedPart,
    Finding,
    FindingKind,
    MessageModel,
    inspect_message,
)
from mailwarden.inspect.headers import HeaderBlock, parse_headers
from mailwarden.rules import antivirus, attachments, forwarding
from mailwarden.rules.forwarding import ForwardInputs, ForwardSettings
from mailwarden.settings import ContentSettings
from mailwarden.verdict import Action, Verdict, defer, rule_id

TIMEOUT_RULE = rule_id("content.timeout")

Scanner = Callable[[BinaryIO, float, str], "clamd.ScanOutcome"]


@dataclass(frozen=True)
class Envelope:
    """What the SMTP session says about the message (the milter's macros and commands)."""

    mail_from: str = ""
    recipients: tuple[str, ...] = ()
    original_recipients: tuple[str, ...] = ()  # ORCPT per recipient, "" when none
    client_addr: str = ""
    authenticated: bool = False
    final_hop: bool = False  # the hop after address rewriting (conf/postfix/final-hop/)


@dataclass
class Evaluation:
    verdicts: list[Verdict] = field(default_factory=list)  # every reason, in order found
    model: MessageModel | None = None
    scanned_parts: int = 0
    elapsed_s: float = 0.0

    @property
    def decisive(self) -> Verdict | None:
        """The verdict that sets the reply: a refusal before a deferral; none = accept."""
        enforced = [v for v in self.verdicts if v.enforced]
        for action in (Action.REJECT, Action.DEFER):
            for v in enforced:
                if v.action is action:
                    return v
        return None


def _default_scanner(address: str) -> Scanner:
    def scan(fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        return clamd.scan_stream(fp, address=address, timeout_s=timeout_s)

    return scan


def _forwarding(headers: list[tuple[str, str]], env: Envelope,
                s: ForwardSettings) -> list[Verdict]:
    inputs = ForwardInputs(
        headers=headers, mail_from=env.mail_from, recipients=env.recipients,
        client_addr=env.client_addr, authenticated=env.authenticated,
        from_our_mailbox_hosts=forwarding.is_mailbox_host(env.client_addr, s),
        original_recipients=env.original_recipients, final_hop=env.final_hop)
    return forwarding.decide(inputs, s)


def top_level_headers(message: BinaryIO, limit: int) -> HeaderBlock:
    """The header block only (the final hop needs nothing else), read by THE header
    parser (inspect/headers.py), so both passes give the forwarding rule the same fields."""
    message.seek(0)
    return parse_headers(message, max_bytes=limit)


def evaluate(message: BinaryIO, s: ContentSettings, *, scanner: Scanner | None = None,
             envelope: Envelope | None = None,
             clock: Callable[[], float] = time.monotonic) -> Evaluation:
    """Inspect, apply the attachment rules, and scan each decoded part with clamd.

    Decoded parts (body text and attachments) are streamed to clamd one by one
    as the MIME walk produces them, so nothing is decoded twice and clamd does
    not re-parse the MIME structure. A message the walk found broken
    (defects) is also scanned raw, so a part we failed to decode is still seen.
    """
    start = clock()
    if envelope is not None and envelope.final_hop:
        # Content was judged on the first pass; after rewriting only forwarding matters.
        result = Evaluation()
        block = top_level_headers(message, s.limits.max_header_bytes)
        result.verdicts = _forwarding(block.fields, envelope, s.forwarding)
        if block.over_limit:  # fail closed: a block not read to its end is no pass
            result.verdicts.extend(attachments.decide(MessageModel(
                headers=block.fields, findings=[Finding(
                    FindingKind.UNINSPECTABLE, "", "header-limit",
                    f"header block over {s.limits.max_header_bytes} bytes")]),
                s.attachments))
        result.elapsed_s = clock() - start
        return result
    deadline = start + s.budget_s
    scan = scanner or _default_scanner(s.clamd_address)
    result = Evaluation()
    outcomes: list[clamd.ScanOutcome] = []

    def remaining() -> float:
        return min(s.scan_timeout_s, deadline - clock())

    def on_part(part: DecodedPart, fp: BinaryIO) -> None:
        if not s.scan or any(o.infected for o in outcomes):
            return
        budget = remaining()
        if budget <= 0:
            outcomes.append(clamd.ScanOutcome(clamd.ScanStatus.ERROR, error="no time left",
                                              part=part.path))
            return
        label = part.path or f"part{part.index}"
        outcomes.append(replace(scan(fp, budget, label), part=label))
        result.scanned_parts += 1

    message.seek(0)
    model = inspect_message(message, s.limits, deadline, on_part=on_part, clock=clock)
    result.model = model
    result.verdicts.extend(attachments.decide(model, s.attachments))
    if envelope is not None:
        result.verdicts.extend(_forwarding(model.headers, envelope, s.forwarding))

    if s.scan and (model.defects or result.scanned_parts == 0) and \
            not any(o.infected for o in outcomes):
        message.seek(0)
        budget = remaining()
        if budget > 0:
            outcomes.append(scan(message, budget, "raw-message"))
            result.scanned_parts += 1
        else:
            outcomes.append(clamd.ScanOutcome(clamd.ScanStatus.ERROR, error="no time left",
                                              part="raw-message"))
    if s.scan:
        infected = next((o for o in outcomes if o.infected), None)
        failed = next((o for o in outcomes if o.status is clamd.ScanStatus.ERROR), None)
        chosen = infected or failed
        if chosen is not None:
            result.verdicts.extend(antivirus.decide(antivirus.ScanResult(
                chosen.status.value, signature=chosen.signature, error=chosen.error,
                part=chosen.part), s.antivirus))

    result.elapsed_s = clock() - start
    if clock() > deadline and result.decisive is None:
        result.verdicts.append(defer(
            TIMEOUT_RULE, "Khong kiem tra kip thu, vui long thu lai sau. Message inspection "
            "took too long, try again later", budget=f"{s.budget_s:g}s"))
    return result
