"""One message through inspection, the rules, authentication and ClamAV.

The same code judges a message for the milter (milter/app.py) and for
`mailwarden check FILE.eml`, so an operator explaining a bounce gets exactly
the milter's verdict, authentication included. Two steps:

* `analyse` — the parsing of hostile bytes: inspection (inspect/), the attachment and
  forwarding rules, and authentication (auth/: SPF, DKIM, DMARC, or DKIM signing of our
  own mail). Pure CPU and DNS; the milter runs it in a worker process with memory and CPU
  limits (engine/workers.py), `check` in-process. Its result (`Analysis`) is picklable.
* the scan — clamd gets the raw message, always (our second parser: its MIME, TNEF,
  uuencode, archive parsers plus the policy signatures of conf/clamav/), inside ONE
  deadline for the message (`antivirus.timeout`). Decide once: when a rule has already
  refused the message, clamd is not asked; when the only refusal is
  attachment.uninspectable, clamd gets `antivirus.refused_scan` (a few seconds) to name a
  more specific reason (an executable in TNEF, a virus), and whatever else it says
  (timeout, error, clean) leaves the refusal as it is: a 100,000-entry zip refused as
  uninspectable does not then wait 60 s for clamd.

The message is a seekable binary file; the whole evaluation is bounded by
`milter.content_budget`: running out of it is a deferral, never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

from mailwarden.clients import clamd
from mailwarden.inspect import Finding, FindingKind, MessageModel, inspect_message
from mailwarden.inspect.headers import HeaderBlock, parse_headers
from mailwarden.rules import antivirus, attachments, forwarding
from mailwarden.rules.forwarding import ForwardInputs, ForwardSettings
from mailwarden.settings import ContentSettings
from mailwarden.verdict import Action, Verdict, defer, rule_id

if TYPE_CHECKING:
    from mailwarden.addresses import Ours
    from mailwarden.auth.engine import Authenticator
    from mailwarden.auth.results import HeaderField

TIMEOUT_RULE = rule_id("content.timeout")
RAW_LABEL = "raw-message"

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
    helo: str = ""


@dataclass
class Analysis:
    """What the parsing step found (picklable: a worker process sends it back)."""

    verdicts: list[Verdict] = field(default_factory=list)
    model: MessageModel | None = None
    remove_headers: list[tuple[str, int]] = field(default_factory=list)  # (name, 1-based)
    add_headers: list[HeaderField] = field(default_factory=list)  # top-down order
    auth_detail: dict[str, str] = field(default_factory=dict)  # for the auth log line
    auth_skipped: int = 0  # size of a message too big to authenticate, else 0
    elapsed_s: float = 0.0


@dataclass
class Evaluation:
    verdicts: list[Verdict] = field(default_factory=list)  # every reason, in order found
    model: MessageModel | None = None
    scanned_parts: int = 0
    scan_skipped: bool = False  # a rule had refused: clamd was not asked (decide once)
    elapsed_s: float = 0.0
    analysis: Analysis = field(default_factory=Analysis)

    @property
    def decisive(self) -> Verdict | None:
        """The verdict that sets the reply: a refusal before a deferral; none = accept."""
        return decisive(self.verdicts)


def decisive(verdicts: list[Verdict]) -> Verdict | None:
    enforced = [v for v in verdicts if v.enforced]
    for action in (Action.REJECT, Action.DEFER):
        for v in enforced:
            if v.action is action:
                return v
    return None


def refused(verdicts: list[Verdict]) -> bool:
    return any(v.enforced and v.action is Action.REJECT for v in verdicts)


def refused_only_as_uninspectable(verdicts: list[Verdict]) -> bool:
    rules = {v.rule for v in verdicts if v.enforced and v.action is Action.REJECT}
    return rules == {attachments.UNINSPECTABLE}


class Authenticate(Protocol):
    def __call__(self, message: BinaryIO, envelope: Envelope, deadline: float) -> Analysis:
        """SPF/DKIM/DMARC (theirs) or DKIM signing (ours): verdicts and header changes."""


class AuthStep:
    """auth/ as one step of the engine: who is ours, the size cap, the call."""

    def __init__(self, authenticator: Authenticator, ours: Ours, max_bytes: int) -> None:
        self.authenticator = authenticator
        self.ours = ours
        self.max_bytes = max_bytes
        # inspect.signature costs ~0.1 ms: once per worker, not once per message
        self.takes_deadline = _accepts_deadline(authenticator)

    def __call__(self, message: BinaryIO, envelope: Envelope, deadline: float) -> Analysis:
        out = Analysis()
        # auth/ handles every size itself (issue 14): over max_bytes it checks the
        # header and envelope and skips DKIM; outcome.oversize says so.
        message.seek(0)
        ours = self.ours.sent_by_us(authenticated=envelope.authenticated,
                                    client_addr=envelope.client_addr,
                                    recipients=envelope.recipients)
        kwargs: dict[str, float] = {}
        if self.takes_deadline:  # auth/ grows a deadline (issue 14)
            kwargs["deadline"] = deadline
        outcome = self.authenticator.process(message, client_ip=envelope.client_addr,
                                             helo=envelope.helo, mail_from=envelope.mail_from,
                                             ours=ours, **kwargs)
        out.verdicts = list(outcome.verdicts)
        out.remove_headers = list(outcome.remove_headers)
        out.add_headers = list(outcome.add_headers)
        out.auth_detail = outcome.log_detail()
        out.auth_skipped = getattr(outcome, "oversize", 0)
        return out


def _accepts_deadline(authenticator: Authenticator) -> bool:
    import inspect

    try:
        return "deadline" in inspect.signature(authenticator.process).parameters
    except (TypeError, ValueError):
        return False


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


def analyse(message: BinaryIO, s: ContentSettings, envelope: Envelope | None,
            deadline: float, *, authenticate: Authenticate | None = None,
            clock: Callable[[], float] = time.monotonic) -> Analysis:
    """Inspection + attachment/forwarding rules (+ authentication): the hostile parsing."""
    start = clock()
    result = Analysis()
    if envelope is not None and envelope.final_hop:
        # Content was judged on the first pass; after rewriting only forwarding matters.
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
    message.seek(0)
    model = inspect_message(message, s.limits, deadline, clock=clock)
    result.model = model
    result.verdicts.extend(attachments.decide(model, s.attachments))
    if envelope is not None:
        result.verdicts.extend(_forwarding(model.headers, envelope, s.forwarding))
        if authenticate is not None and not refused(result.verdicts):
            auth = authenticate(message, envelope, deadline)
            result.verdicts.extend(auth.verdicts)
            result.remove_headers, result.add_headers = auth.remove_headers, auth.add_headers
            result.auth_detail, result.auth_skipped = auth.auth_detail, auth.auth_skipped
    result.elapsed_s = clock() - start
    return result


def scan_raw(message: BinaryIO, s: ContentSettings, scanner: Scanner, deadline: float,
             clock: Callable[[], float] = time.monotonic) -> list[Verdict]:
    """clamd on the raw message inside ONE deadline (antivirus.timeout, and what is left of
    the message's budget): policy detections -> attachment rules, viruses -> av.infected,
    trouble -> av.unavailable."""
    budget = min(s.scan_timeout_s, deadline - clock())
    if budget <= 0:
        outcome = clamd.ScanOutcome(clamd.ScanStatus.ERROR, error="no time left",
                                    part=RAW_LABEL)
    else:
        message.seek(0)
        outcome = scanner(message, budget, RAW_LABEL)
    return aggregate_scans([outcome], s)


def aggregate_scans(outcomes: list[clamd.ScanOutcome], s: ContentSettings) -> list[Verdict]:
    """Several outcomes (raw message, parts) -> verdicts: an infection (or a policy
    detection) beats an error, an error beats clean."""
    infected = next((o for o in outcomes if o.infected), None)
    failed = next((o for o in outcomes if o.status is clamd.ScanStatus.ERROR), None)
    chosen = infected or failed
    if chosen is None:
        return []
    return antivirus.decide(antivirus.ScanResult(
        chosen.status.value, signature=chosen.signature, error=chosen.error,
        part=chosen.part or RAW_LABEL), s.antivirus, s.attachments)


Analyser = Callable[[BinaryIO, Envelope | None, float], Analysis]


def evaluate(message: BinaryIO, s: ContentSettings, *, scanner: Scanner | None = None,
             envelope: Envelope | None = None, authenticate: Authenticate | None = None,
             analyser: Analyser | None = None,
             clock: Callable[[], float] = time.monotonic) -> Evaluation:
    """Analyse (in-process, or through `analyser`: the milter's worker pool), then have
    clamd scan the raw message unless a rule already refused it."""
    start = clock()
    deadline = start + s.budget_s
    if analyser is not None:
        analysis = analyser(message, envelope, deadline)
    else:
        analysis = analyse(message, s, envelope, deadline, authenticate=authenticate,
                           clock=clock)
    result = Evaluation(verdicts=list(analysis.verdicts), model=analysis.model,
                        analysis=analysis)
    final_hop = envelope is not None and envelope.final_hop
    if s.scan and not final_hop:
        scan = scanner or default_scanner(s.clamd_address)
        if not refused(result.verdicts):
            result.verdicts.extend(scan_raw(message, s, scan, deadline, clock))
            result.scanned_parts = 1
        elif refused_only_as_uninspectable(result.verdicts) and s.refused_scan_s > 0:
            # A short look for a more specific reason; it goes first (it sets the reply).
            brief = getattr(scan, "without_breaker", scan)
            found = scan_raw(message, s, brief,
                             min(deadline, clock() + s.refused_scan_s), clock)
            found = [v for v in found if v.action is Action.REJECT]
            result.verdicts[:0] = found
            result.scanned_parts = 1
        else:
            result.scan_skipped = True
    result.elapsed_s = clock() - start
    if clock() > deadline and result.decisive is None:
        result.verdicts.append(defer(
            TIMEOUT_RULE, "Khong kiem tra kip thu, vui long thu lai sau. Message inspection "
            "took too long, try again later", budget=f"{s.budget_s:g}s"))
    return result


def default_scanner(address: str) -> Scanner:
    def scan(fp: BinaryIO, timeout_s: float, label: str) -> clamd.ScanOutcome:
        return clamd.scan_stream(fp, address=address, timeout_s=timeout_s)

    return scan
