"""Automatic forwarding across the state boundary (Dieu 4.5, "or vice versa").

Outbound (`forward.external_auto`): a message automatically forwarded from
one of our mailboxes to a private (non-state) mailbox. Inbound
(`forward.inbound_auto`): a message automatically forwarded from a private
mailbox into one of ours. Local -> state-issued and state -> local forwards
are allowed, and so is anything a person forwards by hand.

Evidence comes as Signals, each with a confidence:

* HIGH   refuses (550 5.7.1), unless the family is in monitor mode;
* MEDIUM is logged (an ACCEPT verdict carrying the signals) unless
  `promote_medium` makes it refuse;
* LOW    never acts: weak hints (Resent-*, auto-replied, Fwd: subjects,
  mailing lists, an Inbox-Rules-Loop without other evidence). They are kept
  in the decision so a log line shows them next to stronger evidence.

Only the top-level header block counts: a message attached inside a manual
forward says nothing about how this one was sent. The rule is pure: the
adapter passes the headers, the envelope, and what it knows about the client;
see docs/forwarding.md for the signal table.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.header import decode_header

from mailwarden.addresses import (
    AddressClass,
    Network,
    Ours,
    classify_domain,
    in_domains,
    in_networks,
    routed_domains,
    split_address,
)
from mailwarden.auth.mailbox import decode_words, parse_mailbox
from mailwarden.verdict import Verdict, accept, monitored, reject, reply_safe, rule_id

EXTERNAL_AUTO = rule_id("forward.external_auto")
INBOUND_AUTO = rule_id("forward.inbound_auto")
RULE_IDS = (EXTERNAL_AUTO, INBOUND_AUTO)

_MAX_VALUE = 2000  # characters of one header value looked at
_MAX_ADDRESSES = 20  # addresses taken from one header value
_MAX_MAILBOX_IN_REPLY = 80
_MAX_SIGNALS = 32  # kept per message (then only a first of each direction and confidence)
_MAX_TOKENS_LOGGED = 12
_ADDRESS = re.compile(
    r"(?<![\w.!#$%&'*+/=?^`{|}~-])"
    r"([\w.!#$%&'*+/=?^`{|}~-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9-]{2,63})(?![\w-])")
_KEYWORD = re.compile(r"\s*([A-Za-z][A-Za-z0-9-]*)")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_SRS = re.compile(r"^srs[01][=+-]", re.IGNORECASE)
_FWD_SUBJECT = re.compile(r"^\s*(fwd?|tr|wg|rv|chuyen tiep|chuyển tiếp)\s*:", re.IGNORECASE)


class Confidence(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Direction(enum.Enum):
    OUTBOUND = "outbound"  # from one of our mailboxes to a private mailbox
    INBOUND = "inbound"  # from a private mailbox into one of ours


@dataclass(frozen=True)
class Signal:
    name: str  # stable token for logs and docs: "sieve-redirect", "gmail-caf", ...
    confidence: Confidence
    direction: Direction
    mailbox: str = ""  # the forwarding mailbox it names ("" unknown, "@domain" domain only)
    note: str = ""  # why the confidence is what it is, when not the signal's usual one

    def token(self) -> str:
        text = f"{self.name}:{self.confidence.label}"
        return f"{text}={self.mailbox}" if self.mailbox else text


@dataclass(frozen=True)
class ForwardInputs:
    """One message as the milter saw it. `headers` is the TOP-LEVEL block only,
    in message order (top first), values unfolded and not decoded."""

    headers: Sequence[tuple[str, str]]
    mail_from: str  # envelope sender, "" for the null sender
    recipients: tuple[str, ...]
    client_addr: str = ""
    authenticated: bool = False  # the client logged in (SASL / XCLIENT LOGIN)
    # The adapter knows this client is one of our mailbox hosts (Dovecot/Zimbra
    # delivery that may re-send). A client address inside
    # `ForwardSettings.mailbox_hosts` counts too. Whether the mail is ours at all is
    # decided by `ForwardSettings.ours` (addresses.Ours), not by this.
    from_our_mailbox_hosts: bool = False
    # DSN ORCPT of each recipient (same order; "" where none was given), as
    # decoded by parse_orcpt(). Postfix's smtp client sends the pre-alias address.
    original_recipients: tuple[str, ...] = ()
    # The message is on the final hop: our own Postfix re-injected it after
    # address rewriting, on its way to an external destination
    # (conf/postfix/final-hop). The client is then our MTA, not a mailbox host.
    final_hop: bool = False


@dataclass(frozen=True)
class ForwardSettings:
    ours: Ours  # our domains and hosts: the one definition (addresses.Ours)
    state_suffixes: tuple[str, ...] = ("gov.vn",)
    state_allow: tuple[str, ...] = ()
    srs_domains: tuple[str, ...] = ()  # our SRS rewrite domains; empty = local_domains
    mailbox_hosts: tuple[Network, ...] = ()  # for the structural signal only
    promote_medium: bool = False
    enforce: bool = True  # False = monitor: decide and log, refuse nothing
    citation: str = ""  # "QD 162/2025/QD-UBND Dieu 4.5"

    @property
    def local_domains(self) -> tuple[str, ...]:
        return self.ours.local_domains

    def classify(self, address: str) -> AddressClass | None:
        """Class of where an address is delivered; None when it has no domain.

        Postfix routes "bob%gmail.com@here" and "gmail.com!bob@here" outside: the
        least trusted of the domains it may go to is the address's class.
        """
        classes = [classify_domain(d, self.ours.local_domains, self.ours.include_subdomains,
                                   self.state_suffixes, self.state_allow)
                   for d in routed_domains(address)]
        if not classes:
            return None
        for cls in (AddressClass.PRIVATE, AddressClass.STATE):
            if cls in classes:
                return cls
        return AddressClass.LOCAL

    def is_ours_srs(self, domain: str) -> bool:
        return in_domains(domain, self.srs_domains or self.ours.local_domains,
                          self.ours.include_subdomains)


@dataclass(frozen=True)
class ForwardDecision:
    signals: tuple[Signal, ...] = ()  # everything that fired, any confidence
    verdicts: tuple[Verdict, ...] = ()  # at most one per direction

    def strongest(self, direction: Direction) -> Confidence | None:
        levels = [s.confidence for s in self.signals if s.direction is direction]
        return max(levels) if levels else None


# -- helpers the adapter calls ------------------------------------------------------------
def is_mailbox_host(client_addr: str, s: ForwardSettings) -> bool:
    return in_networks(client_addr, s.mailbox_hosts)


def parse_orcpt(param: str) -> str:
    """`ORCPT=rfc822;bob+2Bx@ninhbinh.gov.vn` (or its value) -> "bob+x@ninhbinh.gov.vn".

    RFC 3461 xtext: "+XX" is a hex-encoded byte. Non-rfc822 types give "".
    """
    value = param.split("=", 1)[1] if param[:6].upper() == "ORCPT=" else param
    kind, sep, addr = value.partition(";")
    if not sep or kind.strip().lower() != "rfc822":
        return ""
    out: list[str] = []
    i = 0
    while i < len(addr):
        c = addr[i]
        if c == "+" and _HEX2.fullmatch(addr[i + 1:i + 3]):
            out.append(chr(int(addr[i + 1:i + 3], 16)))
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out).strip().strip("<>")


# -- evidence -----------------------------------------------------------------------------
# A token of a header value that may hold an address: quoted strings kept whole
# ("john doe"@example.org), separated by whitespace, commas, semicolons, angle brackets.
_TOKEN = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^\s,;<>"])+')


def addresses_in(value: str) -> list[str]:
    """The addresses a header value names, read by THE strict mailbox parser
    (auth/mailbox.py): encoded words decoded first, quoted local parts, IDN domains and
    local parts of any length included. A token with an "@" the parser refuses is kept as
    written (classified as it stands: never dropped), and the older pattern's finds
    are added, so nothing it saw is lost."""
    text = decode_words(value[:_MAX_VALUE])
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if "@" not in token:
            continue
        box = parse_mailbox(token)
        out.append(box.address if box is not None else token.strip(".:()[]'"))
    for m in _ADDRESS.finditer(text):
        out.append(m.group(1))
    return list(dict.fromkeys(out))[:_MAX_ADDRESSES]


def _decoded(value: str) -> str:
    try:
        parts = decode_header(value[:_MAX_VALUE])
    except Exception:  # malformed encoded words: use the raw text
        return value
    out = []
    for text, charset in parts:
        if isinstance(text, bytes):
            out.append(text.decode(charset or "ascii", "replace") if _known(charset)
                       else text.decode("ascii", "replace"))
        else:
            out.append(text)
    return "".join(out)


def _known(charset: str | None) -> bool:
    try:
        codecs.lookup(charset or "ascii")
    except LookupError:
        return False
    return True


@dataclass
class _Envelope:
    private_rcpts: list[str]
    local_rcpts: list[str]
    our_side: bool  # sent by one of our users or mailbox hosts (or the final hop)
    from_hosts: bool
    resent_top: int | None  # index of the top-most Resent-* header


@dataclass
class _Found:
    seen: dict[Signal, None] = field(default_factory=dict)  # insertion-ordered set
    weak: list[tuple[str, int]] = field(default_factory=list)  # (name, header index)

    @property
    def signals(self) -> list[Signal]:
        return list(self.seen)

    def add(self, sig: Signal) -> None:
        # Bounded: a message stuffed with forwarding headers cannot grow the work or
        # the log line; the strongest evidence comes first in any real message.
        if len(self.seen) < _MAX_SIGNALS or not any(
                (o.direction, o.confidence) == (sig.direction, sig.confidence)
                for o in self.seen):
            self.seen.setdefault(sig, None)


def _envelope(inp: ForwardInputs, s: ForwardSettings) -> _Envelope:
    private, local = [], []
    for r in inp.recipients:
        cls = s.classify(r)
        if cls is AddressClass.PRIVATE:
            private.append(r)
        elif cls is AddressClass.LOCAL:
            local.append(r)
    from_hosts = not inp.final_hop and (inp.from_our_mailbox_hosts
                                        or is_mailbox_host(inp.client_addr, s))
    resent = next((i for i, (n, _) in enumerate(inp.headers)
                   if n.strip().lower().startswith("resent-")), None)
    ours = inp.final_hop or from_hosts or s.ours.sent_by_us(
        authenticated=inp.authenticated, client_addr=inp.client_addr,
        recipients=inp.recipients)
    return _Envelope(private, local, ours, from_hosts, resent)


def _named_mailbox_signal(found: _Found, name: str, addr: str, conf: Confidence,
                          env: _Envelope, s: ForwardSettings, index: int) -> None:
    """A header names `addr` as the forwarding mailbox: which direction does it cross?"""
    cls = s.classify(addr)
    note = ""
    if env.resent_top is not None and env.resent_top < index:
        conf, note = Confidence.LOW, "manual-resend-after"  # the last hop was a person
    if cls is AddressClass.LOCAL and env.private_rcpts:
        found.add(Signal(name, conf, Direction.OUTBOUND, addr.lower(), note))
    elif cls is AddressClass.PRIVATE and env.local_rcpts and not env.our_side:
        found.add(Signal(name, conf, Direction.INBOUND, addr.lower(), note))


# Headers whose value names the mailbox that forwarded the message.
_NAMING_HEADERS: dict[str, tuple[str, Confidence]] = {
    "x-sieve-redirected-from": ("sieve-redirect", Confidence.HIGH),  # Dovecot Pigeonhole
    "x-zimbra-forwarded": ("zimbra-forward", Confidence.HIGH),  # Zimbra filter/forward
    "x-ms-exchange-forwardingloop": ("ms-forwarding-loop", Confidence.HIGH),  # Microsoft 365
    "x-forwarded-for": ("x-forwarded-for", Confidence.HIGH),  # Gmail: "from to"
    "x-forwarded-to": ("x-forwarded-to", Confidence.HIGH),  # Gmail: the target
    "delivered-to": ("delivered-to", Confidence.MEDIUM),  # delivered, then re-sent whole
}
# Headers in which a system declares the forward without naming a mailbox.
_DECLARING_HEADERS: dict[str, tuple[str, str]] = {
    "auto-submitted": ("auto-submitted-forwarded", "auto-forwarded"),
    "x-ms-exchange-organization-autoforwarded": ("ms-autoforwarded", "true"),
    "autoforwarded": ("x400-autoforwarded", "true"),  # RFC 2156
}
_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post", "list-help", "mailing-list")


def collect_signals(inp: ForwardInputs, s: ForwardSettings) -> tuple[Signal, ...]:
    """Every signal that fired, in the order found (envelope and declarations last)."""
    return _collect(inp, s, _envelope(inp, s))


def _collect(inp: ForwardInputs, s: ForwardSettings, env: _Envelope) -> tuple[Signal, ...]:
    found = _Found()
    declared: list[tuple[str, int]] = []
    rules_loop: list[tuple[str, int]] = []
    auto_replied = False
    for index, (raw_name, value) in enumerate(inp.headers):
        name = raw_name.strip().lower()
        if name in _NAMING_HEADERS:
            signal_name, conf = _NAMING_HEADERS[name]
            addrs = addresses_in(value)
            for addr in addrs:
                _named_mailbox_signal(found, signal_name, addr, conf, env, s, index)
            if not addrs and name in ("x-sieve-redirected-from", "x-zimbra-forwarded") \
                    and env.our_side and env.private_rcpts:
                found.add(Signal(signal_name, Confidence.MEDIUM, Direction.OUTBOUND,
                                 note="no-address-in-header"))
        elif name in _DECLARING_HEADERS:
            signal_name, keyword = _DECLARING_HEADERS[name]
            m = _KEYWORD.match(value)  # "auto-replied (vacation)", "auto-forwarded; x=y"
            keyword_seen = m.group(1).lower() if m else ""
            if keyword_seen == keyword:
                declared.append((signal_name, index))
            elif name == "auto-submitted" and keyword_seen == "auto-replied":
                auto_replied = True
                found.weak.append(("auto-replied", index))
        elif name == "x-ms-exchange-inbox-rules-loop":
            rules_loop += [(a, index) for a in addresses_in(value)]
        elif name.startswith("resent-"):
            found.weak.append(("resent", index))
        elif name in _LIST_HEADERS or (name == "precedence"
                                       and value.strip().lower() == "list"):
            found.weak.append(("mailing-list", index))
        elif name == "precedence" and value.strip().lower() in ("bulk", "junk"):
            found.weak.append(("precedence-bulk", index))
        elif name == "subject" and _FWD_SUBJECT.match(_decoded(value)):
            found.weak.append(("fwd-subject", index))

    _envelope_signals(found, inp, env, s)
    for signal_name, index in declared:
        _declared_signal(found, signal_name, index, inp, env, s)
    _rules_loop_signals(found, rules_loop, auto_replied, env, s)
    _weak_signals(found, env)
    return tuple(found.signals)


def _envelope_signals(found: _Found, inp: ForwardInputs, env: _Envelope,
                      s: ForwardSettings) -> None:
    sender = inp.mail_from.strip().strip("<>")
    local_part, domain = split_address(sender)
    sender_cls = s.classify(sender) if sender else None
    low = local_part.lower()

    # Gmail / Google Workspace auto-forward: alice+caf_=bob=ninhbinh.gov.vn@gmail.com
    cut = low.find("+caf_=")
    if cut > 0 and domain:
        forwarder = f"{local_part[:cut]}@{domain}"
        if s.classify(forwarder) is AddressClass.PRIVATE and env.local_rcpts \
                and not env.our_side:
            found.add(Signal("gmail-caf", Confidence.HIGH, Direction.INBOUND, forwarder.lower()))

    # SRS: ours says we forwarded it; a foreign one says someone else did.
    if domain and _SRS.match(local_part):
        if s.is_ours_srs(domain):
            if env.private_rcpts:
                found.add(Signal("our-srs", Confidence.HIGH, Direction.OUTBOUND,
                                 _local_mailbox(inp, found, s)))
        elif sender_cls is AddressClass.PRIVATE and env.local_rcpts and not env.our_side:
            found.add(Signal("foreign-srs", Confidence.MEDIUM, Direction.INBOUND, "@" + domain))
    # Microsoft 365 rewrites a forwarded message's sender to forwarder+SRS=...@domain.
    cut = low.find("+srs=")
    if cut > 0 and domain and sender_cls is AddressClass.PRIVATE and env.local_rcpts \
            and not env.our_side:
        found.add(Signal("foreign-srs", Confidence.MEDIUM, Direction.INBOUND,
                         f"{local_part[:cut]}@{domain}".lower()))

    # Structural: mail that came from outside going back out through our mailbox hosts.
    if sender and sender_cls is not AddressClass.LOCAL and sender_cls is not None \
            and env.from_hosts and env.private_rcpts and not _SRS.match(local_part):
        conf, note = (Confidence.MEDIUM, "authenticated-client") if inp.authenticated \
            else (Confidence.HIGH, "")
        found.add(Signal("structural", conf, Direction.OUTBOUND,
                         _local_mailbox(inp, found, s), note))

    # The recipient was rewritten (virtual alias, .forward, aliases) from a local mailbox
    # to a private one: Postfix's smtp client sends the pre-rewrite address as ORCPT.
    bounce = _is_bounce(inp)
    for rcpt, orcpt in zip(inp.recipients, inp.original_recipients, strict=False):
        if not orcpt or orcpt.lower() == rcpt.lower() or \
                s.classify(rcpt) is not AddressClass.PRIVATE:
            continue
        if bounce and srs_reversed(orcpt, s) == rcpt.lower():
            # A bounce of mail we forwarded, returned through our SRS address to the
            # original sender: the sender must learn of the failure (issue 14).
            continue
        if s.classify(orcpt) is AddressClass.LOCAL:
            found.add(Signal("rewritten-recipient", Confidence.HIGH, Direction.OUTBOUND,
                             orcpt.lower()))
        else:  # rewritten, but the original address we were given is not ours
            found.add(Signal("rewritten-recipient", Confidence.MEDIUM, Direction.OUTBOUND,
                             note="orcpt-not-local"))


def _is_bounce(inp: ForwardInputs) -> bool:
    """A delivery status notification: null sender, or a multipart/report (RFC 6522)."""
    if not inp.mail_from.strip().strip("<>"):
        return True
    return any(n.strip().lower() == "content-type" and
               v.strip().lower().startswith("multipart/report") for n, v in inp.headers)


def srs_reversed(address: str, s: ForwardSettings) -> str:
    """The original address an SRS address of ours stands for ("" when it is not one):
    SRS0=HASH=TT=domain=local@ours, SRS1=HASH=fwd==HASH=TT=domain=local@ours."""
    local, domain = split_address(address)
    if not domain or not _SRS.match(local) or not s.is_ours_srs(domain):
        return ""
    tail = local
    if local[:4].upper() == "SRS1":
        _, sep, rest = local.partition("==")
        if not sep:
            return ""
        tail = "SRS0=" + rest
    parts = tail.split("=", 4)  # SRS0, hash, tt, domain, local
    if len(parts) != 5 or not parts[3] or not parts[4]:
        return ""
    return f"{parts[4]}@{parts[3]}".lower()


def _local_mailbox(inp: ForwardInputs, found: _Found, s: ForwardSettings) -> str:
    """Best guess at which of our mailboxes forwarded an outbound message."""
    for rcpt, orcpt in zip(inp.recipients, inp.original_recipients, strict=False):
        if orcpt and s.classify(orcpt) is AddressClass.LOCAL and \
                s.classify(rcpt) is AddressClass.PRIVATE:
            return orcpt.lower()
    for sig in found.signals:
        if sig.direction is Direction.OUTBOUND and sig.mailbox and \
                sig.confidence > Confidence.LOW:
            return sig.mailbox
    for name, value in inp.headers:
        if name.strip().lower() in ("delivered-to", "x-original-to"):
            for addr in addresses_in(value):
                if s.classify(addr) is AddressClass.LOCAL:
                    return addr.lower()
    sender = inp.mail_from.strip().strip("<>")
    if sender and s.classify(sender) is AddressClass.LOCAL and \
            not _SRS.match(split_address(sender)[0]):
        return sender.lower()
    return ""


def _inbound_forwarder(inp: ForwardInputs, found: _Found, s: ForwardSettings) -> str:
    """Best guess at which outside mailbox forwarded an inbound message."""
    for sig in found.signals:
        if sig.direction is Direction.INBOUND and sig.mailbox and \
                sig.confidence > Confidence.LOW:
            return sig.mailbox
    return inp.mail_from.strip().strip("<>").lower()


def _declared_signal(found: _Found, name: str, index: int, inp: ForwardInputs,
                     env: _Envelope, s: ForwardSettings) -> None:
    conf, note = Confidence.HIGH, ""
    if env.resent_top is not None and env.resent_top < index:
        conf, note = Confidence.LOW, "manual-resend-after"
    if env.private_rcpts and env.our_side:
        found.add(Signal(name, conf, Direction.OUTBOUND, _local_mailbox(inp, found, s), note))
    elif env.local_rcpts and not env.our_side:
        forwarder = _inbound_forwarder(inp, found, s)  # an address, "@domain" or ""
        cls = s.classify(forwarder) if forwarder else None
        if cls is AddressClass.PRIVATE:
            found.add(Signal(name, conf, Direction.INBOUND, forwarder, note))
        elif cls is None:  # no idea who forwarded it: log, do not refuse
            found.add(Signal(name, min(conf, Confidence.MEDIUM), Direction.INBOUND,
                             note=note or "forwarder-unknown"))


def _rules_loop_signals(found: _Found, loops: list[tuple[str, int]], auto_replied: bool,
                        env: _Envelope, s: ForwardSettings) -> None:
    """X-MS-Exchange-Inbox-Rules-Loop is on out-of-office replies too: it only counts
    together with other evidence of the same direction, and never on an auto-reply."""
    for addr, index in loops:
        cls = s.classify(addr)
        if cls is AddressClass.LOCAL and env.private_rcpts:
            direction = Direction.OUTBOUND
        elif cls is AddressClass.PRIVATE and env.local_rcpts and not env.our_side:
            direction = Direction.INBOUND
        else:
            continue
        other = any(sig.direction is direction and sig.confidence > Confidence.LOW
                    for sig in found.signals)
        if auto_replied:
            conf, note = Confidence.LOW, "auto-replied"
        elif env.resent_top is not None and env.resent_top < index:
            conf, note = Confidence.LOW, "manual-resend-after"
        elif other:
            conf, note = Confidence.HIGH, "corroborated"
        else:
            conf, note = Confidence.LOW, "alone"
        found.add(Signal("ms-inbox-rules-loop", conf, direction, addr.lower(), note))


def _weak_signals(found: _Found, env: _Envelope) -> None:
    if env.private_rcpts and env.our_side:
        direction = Direction.OUTBOUND
    elif env.local_rcpts and not env.our_side:
        direction = Direction.INBOUND
    else:
        return
    for name in dict.fromkeys(n for n, _ in found.weak):
        found.add(Signal(name, Confidence.LOW, direction))


# -- decision -----------------------------------------------------------------------------
def _reply_mailbox(mailbox: str) -> str:
    return reply_safe(mailbox, _MAX_MAILBOX_IN_REPLY, unsafe=' "%') or "khong ro/unknown"


def _text(direction: Direction, mailbox: str, citation: str) -> str:
    box = _reply_mailbox(mailbox)
    cite = f"; {citation}" if citation else ""
    if direction is Direction.OUTBOUND:
        return (f"Khong duoc tu dong chuyen tiep thu tu hop thu cong vu sang hop thu khong do "
                f"co quan nha nuoc cap (hop thu chuyen tiep: {box}{cite}). Automatic "
                f"forwarding to mailboxes not issued by a state agency is not allowed "
                f"(forwarding mailbox: {box})")
    return (f"Khong nhan thu tu dong chuyen tiep tu hop thu khong do co quan nha nuoc cap "
            f"(hop thu chuyen tiep: {box}{cite}). Automatic forwarding from mailboxes not "
            f"issued by a state agency into official mailboxes is not allowed "
            f"(forwarding mailbox: {box})")


def _tokens(signals: Sequence[Signal]) -> str:
    """Strongest first (stable), at most _MAX_TOKENS_LOGGED, then "+N"."""
    ranked = sorted(signals, key=lambda sig: -sig.confidence)
    text = ",".join(sig.token() for sig in ranked[:_MAX_TOKENS_LOGGED])
    return text + (f",+{len(ranked) - _MAX_TOKENS_LOGGED}" if len(ranked) > _MAX_TOKENS_LOGGED
                   else "")


def _verdict(direction: Direction, signals: Sequence[Signal], env_rcpts: Iterable[str],
             s: ForwardSettings) -> Verdict | None:
    mine = [sig for sig in signals if sig.direction is direction]
    acting = [sig for sig in mine if sig.confidence > Confidence.LOW]
    if not acting:
        return None
    top = max(sig.confidence for sig in acting)
    lead = next((sig for sig in acting if sig.confidence == top and sig.mailbox),
                next((sig for sig in acting if sig.mailbox), acting[0]))
    rule = EXTERNAL_AUTO if direction is Direction.OUTBOUND else INBOUND_AUTO
    detail = {
        "direction": direction.value,
        "confidence": top.label,
        "mailbox": lead.mailbox or "unknown",
        "signals": _tokens(mine),
        "recipients": ",".join(list(env_rcpts)[:10]),
    }
    refuse = top is Confidence.HIGH or (top is Confidence.MEDIUM and s.promote_medium)
    if not refuse:
        return accept(rule, "logged", s.citation, detail=detail)
    v = reject(rule, _text(direction, lead.mailbox, s.citation), s.citation, detail=detail)
    return monitored(v, s.enforce)


def decide(inputs: ForwardInputs, s: ForwardSettings) -> list[Verdict]:
    """Every reason to refuse or log this message (at most one per direction)."""
    return list(analyse(inputs, s).verdicts)


def analyse(inputs: ForwardInputs, s: ForwardSettings) -> ForwardDecision:
    """Signals and verdicts (at most one per direction; empty = nothing to say).

    An ACCEPT verdict is a finding to log without refusing (MEDIUM evidence);
    a REJECT with monitor=True is what enforce mode would have refused.
    """
    env = _envelope(inputs, s)
    signals = _collect(inputs, s, env)
    verdicts = [v for v in (
        _verdict(Direction.OUTBOUND, signals, env.private_rcpts, s),
        _verdict(Direction.INBOUND, signals, env.local_rcpts, s),
    ) if v is not None]
    return ForwardDecision(signals, tuple(verdicts))
