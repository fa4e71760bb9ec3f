"""rules/forwarding.py: automatic forwarding across the state boundary (issue #4).

Two kinds of tests: the annotated samples in tests/data/forwarding/ (headers
modelled on each system's real ones, read through the same inspection the
milter uses, so only the top-level header block reaches the rule), and small
tables that show each signal alone, with its confidence and direction.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailwarden.config import load_config
from mailwarden.inspect import DEFAULT_EXECUTABLE_EXTENSIONS, InspectLimits, inspect_message
from mailwarden.rules import forwarding
from mailwarden.rules.forwarding import (
    Confidence,
    Direction,
    ForwardInputs,
    ForwardSettings,
    analyse,
    parse_orcpt,
)
from mailwarden.settings import Settings
from mailwarden.verdict import Action, Verdict

DATA = Path(__file__).resolve().parents[1] / "data" / "forwarding"
CITATION = "QD 162/2025/QD-UBND Dieu 4.5"


def settings(**values: Any) -> ForwardSettings:
    cfg = load_config(None, {"forwarding.state_allow": ["chinhphu.vn"],
                             "forwarding.mailbox_hosts": ["10.0.5.0/24"], **values})
    return Settings.from_config(cfg).content.forwarding


S = settings()


# -- the annotated samples -----------------------------------------------------------------
@dataclass
class Sample:
    name: str
    notes: dict[str, str]
    inputs: ForwardInputs
    expect: dict[str, str] = field(default_factory=dict)  # rule id -> "reject" | "log"

    def flag(self, key: str) -> bool:
        return self.notes.get(key, "no") == "yes"


def _split(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def load_sample(path: Path) -> Sample:
    raw = path.read_bytes()
    notes: dict[str, str] = {}
    expect: dict[str, str] = {}
    lines = raw.split(b"\n")
    while lines and lines[0].startswith(b"#"):
        key, _, value = lines.pop(0)[1:].decode().strip().partition(":")
        if key == "expect":
            rule, action = value.split()
            expect[rule] = action
        else:
            notes[key.strip()] = value.strip()
    message = b"\r\n".join(lines)
    limits = InspectLimits(executable_extensions=frozenset(DEFAULT_EXECUTABLE_EXTENSIONS))
    model = inspect_message(io.BytesIO(message), limits, time.monotonic() + 10)
    sender = notes.get("envelope-from", "")
    inputs = ForwardInputs(
        headers=model.headers,
        mail_from="" if sender == "<>" else sender,
        recipients=_split(notes["envelope-to"]),
        client_addr=notes.get("client", ""),
        authenticated=notes.get("authenticated") == "yes",
        original_recipients=_split(notes.get("orcpt", "")),
        final_hop=notes.get("final-hop") == "yes",
    )
    return Sample(path.stem, notes, inputs, expect)


SAMPLES = [load_sample(p) for p in sorted(DATA.glob("*.eml"))]


def sample_settings(sample: Sample) -> ForwardSettings:
    return settings(**{"forwarding.promote_medium": sample.flag("promote-medium"),
                       "forwarding.mode": "monitor" if sample.flag("monitor") else "enforce"})


def by_rule(verdicts: tuple[Verdict, ...]) -> dict[str, Verdict]:
    out = {v.rule: v for v in verdicts}
    assert len(out) == len(verdicts), "at most one verdict per rule"
    return out


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_sample(sample: Sample) -> None:
    s = sample_settings(sample)
    decision = analyse(sample.inputs, s)
    verdicts = by_rule(decision.verdicts)
    tokens = {sig.token() for sig in decision.signals}
    assert set(verdicts) == set(sample.expect), (tokens, verdicts)
    for token in sample.notes.get("signals", "").split():
        assert token in tokens, f"{token} not among {sorted(tokens)}"
    for rule, action in sample.expect.items():
        v = verdicts[rule]
        assert v.article == CITATION
        assert v.detail["signals"] and v.detail["confidence"] in ("high", "medium")
        if action == "log":
            assert v.action is Action.ACCEPT and not v.enforced
            continue
        assert v.action is Action.REJECT and v.reply.startswith("550 5.7.1 ")
        assert v.monitor is sample.flag("monitor") and v.enforced is not sample.flag("monitor")
        assert v.text.isascii() and CITATION in v.text
        assert "Automatic forwarding" in v.text and "not allowed" in v.text
        named = sample.notes["mailbox"]
        shown = "khong ro/unknown" if named == "unknown" else named
        assert f"(forwarding mailbox: {shown})" in v.text
        assert v.detail["mailbox"] == sample.notes["mailbox"]


def test_every_rule_has_samples_on_both_sides() -> None:
    """Each rule id: a sample it refuses and a sample of its direction it lets pass."""
    direction_of = {forwarding.EXTERNAL_AUTO: "outbound", forwarding.INBOUND_AUTO: "inbound"}
    assert set(direction_of) == set(forwarding.RULE_IDS)
    for rule, direction in direction_of.items():
        mine = [s for s in SAMPLES if s.notes["direction"] == direction]
        refused = [s.name for s in mine if s.expect.get(rule) == "reject"
                   and not s.flag("monitor")]
        passed = [s.name for s in mine if rule not in s.expect]
        logged = [s.name for s in mine if s.expect.get(rule) == "log"]
        assert refused and passed, (rule, refused, passed)
        assert logged, f"{rule}: no medium (logged) sample"
    for s in SAMPLES:  # annotation typos would silently weaken the corpus
        assert s.notes["direction"] in ("outbound", "inbound"), s.name
        assert set(s.expect) <= set(forwarding.RULE_IDS), s.name
        assert set(s.expect.values()) <= {"reject", "log"}, s.name
        assert s.notes.get("case"), s.name


def test_attached_message_headers_do_not_count_but_the_same_on_top_do() -> None:
    """Guard for the manual-forward sample: its attached headers are strong when top-level."""
    sample = next(s for s in SAMPLES if s.name == "manual-forward-thunderbird-attached")
    assert analyse(sample.inputs, S).verdicts == ()
    attached = [("X-Sieve-Redirected-From", "alice@ninhbinh.gov.vn"),
                ("Auto-Submitted", "auto-forwarded")]
    top = ForwardInputs(headers=attached + list(sample.inputs.headers),
                        mail_from=sample.inputs.mail_from,
                        recipients=sample.inputs.recipients, authenticated=True)
    [v] = analyse(top, S).verdicts
    assert v.rule == forwarding.EXTERNAL_AUTO and v.action is Action.REJECT


# -- each signal alone ---------------------------------------------------------------------
HOST = "10.0.5.20"  # one of the mailbox hosts in S
OUTSIDE = "198.51.100.7"


def inp(headers: list[tuple[str, str]] | None = None, *, sender: str = "x@partner.com.vn",
        to: tuple[str, ...] = ("y@gmail.com",), client: str = OUTSIDE, auth: bool = False,
        hosts: bool = False, orcpt: tuple[str, ...] = (), final: bool = False) -> ForwardInputs:
    return ForwardInputs(headers=headers or [], mail_from=sender, recipients=to,
                         client_addr=client, authenticated=auth, from_our_mailbox_hosts=hosts,
                         original_recipients=orcpt, final_hop=final)


def from_host(headers: list[tuple[str, str]] | None = None, **kw: Any) -> ForwardInputs:
    """Submitted by one of our mailbox hosts (Dovecot/Zimbra)."""
    return inp(headers, client=HOST, **kw)


def to_local(headers: list[tuple[str, str]] | None = None, **kw: Any) -> ForwardInputs:
    """Arriving from outside for one of our mailboxes."""
    return inp(headers, to=("bob@ninhbinh.gov.vn",), **kw)

SIGNAL_CASES = [
    # outbound: from our side to a private recipient
    ("out-sieve-local",
     from_host([("X-Sieve-Redirected-From", "alice@ninhbinh.gov.vn")],
               sender="bob@ninhbinh.gov.vn"),
     {"sieve-redirect:high=alice@ninhbinh.gov.vn"}),
    ("out-sieve-subdomain-local",
     from_host([("X-Sieve-Redirected-From", "<an@sotc.ninhbinh.gov.vn>")],
               sender="bob@ninhbinh.gov.vn"),
     {"sieve-redirect:high=an@sotc.ninhbinh.gov.vn"}),
    ("out-sieve-no-address",
     from_host([("X-Sieve-Redirected-From", "alice")], sender="bob@ninhbinh.gov.vn"),
     {"sieve-redirect:medium"}),
    ("out-zimbra",
     from_host([("X-Zimbra-Forwarded", "tuan@ninhbinh.gov.vn")], sender="bob@ninhbinh.gov.vn"),
     {"zimbra-forward:high=tuan@ninhbinh.gov.vn"}),
    ("out-our-srs",
     inp(sender="SRS0=Ab12=TZ=partner.com.vn=hoa@ninhbinh.gov.vn", final=True),
     {"our-srs:high"}),
    ("out-our-srs1",
     inp(sender="SRS1=Zz9q=relay.example==Ab12=TZ=partner.com.vn=hoa@ninhbinh.gov.vn",
         final=True),
     {"our-srs:high"}),
    ("out-our-srs-named-by-orcpt",
     inp(sender="SRS0=Ab12=TZ=p.vn=h@ninhbinh.gov.vn", final=True,
         orcpt=("hoa@ninhbinh.gov.vn",)),
     {"our-srs:high=hoa@ninhbinh.gov.vn", "rewritten-recipient:high=hoa@ninhbinh.gov.vn"}),
    ("out-structural", from_host(), {"structural:high"}),
    ("out-structural-flag-from-adapter", inp(client="127.0.0.1", hosts=True),
     {"structural:high"}),
    ("out-structural-state-sender", from_host(sender="lan@hanoi.gov.vn"), {"structural:high"}),
    ("out-structural-authenticated", from_host(auth=True), {"structural:medium"}),
    ("out-auto-submitted",
     inp([("Auto-Submitted", "auto-forwarded; owner=alice")], sender="alice@ninhbinh.gov.vn",
         auth=True),
     {"auto-submitted-forwarded:high=alice@ninhbinh.gov.vn"}),
    ("out-ms-autoforwarded",
     from_host([("X-MS-Exchange-Organization-AutoForwarded", "True")],
               sender="alice@ninhbinh.gov.vn"),
     {"ms-autoforwarded:high=alice@ninhbinh.gov.vn"}),
    ("out-x400",
     from_host([("Autoforwarded", "TRUE")], sender="alice@ninhbinh.gov.vn"),
     {"x400-autoforwarded:high=alice@ninhbinh.gov.vn"}),
    ("out-x-forwarded-to",
     from_host([("X-Forwarded-To", "alice@ninhbinh.gov.vn")], sender="bob@ninhbinh.gov.vn"),
     {"x-forwarded-to:high=alice@ninhbinh.gov.vn"}),
    ("out-x-forwarded-for",
     from_host([("X-Forwarded-For", "alice@ninhbinh.gov.vn y@gmail.com")],
               sender="bob@ninhbinh.gov.vn"),
     {"x-forwarded-for:high=alice@ninhbinh.gov.vn"}),
    ("out-rewritten-recipient",
     inp(sender="bob@ninhbinh.gov.vn", client="127.0.0.1", orcpt=("user@ninhbinh.gov.vn",),
         final=True),
     {"rewritten-recipient:high=user@ninhbinh.gov.vn"}),
    ("out-rewritten-upstream",
     inp(sender="bob@ninhbinh.gov.vn", client="127.0.0.1", orcpt=("old@partner.com.vn",),
         final=True),
     {"rewritten-recipient:medium"}),
    ("out-delivered-to",
     from_host([("Delivered-To", "alice@ninhbinh.gov.vn")], sender="alice@ninhbinh.gov.vn"),
     {"delivered-to:medium=alice@ninhbinh.gov.vn"}),
    # inbound: from outside to one of our mailboxes
    ("in-gmail-caf",
     to_local(sender="alice+caf_=bob=ninhbinh.gov.vn@gmail.com"),
     {"gmail-caf:high=alice@gmail.com"}),
    ("in-x-forwarded-for",
     to_local([("X-Forwarded-For", "alice@gmail.com bob@ninhbinh.gov.vn")],
              sender="news@shop.example"),
     {"x-forwarded-for:high=alice@gmail.com"}),
    ("in-x-forwarded-to-private",
     to_local([("X-Forwarded-To", "alice@gmail.com")], sender="news@shop.example"),
     {"x-forwarded-to:high=alice@gmail.com"}),
    ("in-ms-forwarding-loop",
     to_local([("X-MS-Exchange-ForwardingLoop",
                "minh@contoso.com;72f988bf-86f1-41af-91ab-2d7cd011db47")],
              sender="hoa@partner.com.vn"),
     {"ms-forwarding-loop:high=minh@contoso.com"}),
    ("in-sieve-foreign",
     to_local([("X-Sieve-Redirected-From", "hung@mailbox.example")], sender="news@shop.example"),
     {"sieve-redirect:high=hung@mailbox.example"}),
    ("in-zimbra-foreign",
     to_local([("X-Zimbra-Forwarded", "hung@congty-abc.vn")], sender="news@shop.example"),
     {"zimbra-forward:high=hung@congty-abc.vn"}),
    ("in-foreign-srs",
     to_local(sender="SRS0=h7Gq=TZ=partner.com.vn=hoa@pobox.example"),
     {"foreign-srs:medium=@pobox.example"}),
    ("in-m365-srs",
     to_local(sender="minh+SRS=Ab3xY=4Q=partner.com.vn=hoa@contoso.com"),
     {"foreign-srs:medium=minh@contoso.com"}),
    ("in-rules-loop-alone",
     to_local([("X-MS-Exchange-Inbox-Rules-Loop", "thu@outlook.com")], sender="thu@outlook.com"),
     {"ms-inbox-rules-loop:low=thu@outlook.com"}),
    ("in-rules-loop-with-srs",
     to_local([("X-MS-Exchange-Inbox-Rules-Loop", "thu@outlook.com")],
              sender="thu+SRS=Q9=5B=a.example=b@outlook.com"),
     {"ms-inbox-rules-loop:high=thu@outlook.com", "foreign-srs:medium=thu@outlook.com"}),
    ("in-auto-submitted-named-by-caf",
     to_local([("Auto-Submitted", "auto-forwarded")],
              sender="al+caf_=bob=ninhbinh.gov.vn@gmail.com"),
     {"auto-submitted-forwarded:high=al@gmail.com", "gmail-caf:high=al@gmail.com"}),
    ("in-ms-autoforwarded-by-sender",
     to_local([("X-MS-Exchange-Organization-AutoForwarded", "true")], sender="minh@contoso.com"),
     {"ms-autoforwarded:high=minh@contoso.com"}),
    ("in-declared-forwarder-unknown",
     to_local([("Autoforwarded", "TRUE")], sender=""),
     {"x400-autoforwarded:medium"}),
    ("in-delivered-to-private",
     to_local([("Delivered-To", "alice@gmail.com")], sender="news@shop.example"),
     {"delivered-to:medium=alice@gmail.com"}),
    # weak signals: recorded, low, never more
    ("weak-resent",
     inp([("Resent-From", "bob@ninhbinh.gov.vn")], sender="bob@ninhbinh.gov.vn", auth=True),
     {"resent:low"}),
    ("weak-auto-replied",
     from_host([("Auto-Submitted", "auto-replied")], sender=""),
     {"auto-replied:low"}),
    ("weak-fwd-subject",
     inp([("Subject", "Fwd: Hop dong")], sender="bob@ninhbinh.gov.vn", auth=True),
     {"fwd-subject:low"}),
    ("weak-fwd-subject-encoded",
     inp([("Subject", "=?utf-8?Q?Chuy=E1=BB=83n_ti=E1=BA=BFp:_x?=")],
         sender="bob@ninhbinh.gov.vn", auth=True),
     {"fwd-subject:low"}),
    ("weak-list-id",
     to_local([("List-Id", "<dev.lists.example>")], sender="l@lists.example"),
     {"mailing-list:low"}),
    ("weak-list-unsubscribe",
     to_local([("List-Unsubscribe", "<mailto:leave@lists.example>")], sender="l@lists.example"),
     {"mailing-list:low"}),
    ("weak-precedence-list",
     to_local([("Precedence", "list")], sender="l@lists.example"),
     {"mailing-list:low"}),
    # nothing at all
    ("none-internal-redirect",
     from_host([("X-Sieve-Redirected-From", "alice@ninhbinh.gov.vn")],
               to=("bob@ninhbinh.gov.vn",)),
     set()),
    ("none-to-state",
     from_host([("X-Sieve-Redirected-From", "alice@ninhbinh.gov.vn")], to=("lan@hanoi.gov.vn",)),
     set()),
    ("none-to-allow-listed-state",
     from_host([("Auto-Submitted", "auto-forwarded")], sender="alice@ninhbinh.gov.vn",
               to=("vt@chinhphu.vn",)),
     set()),
    ("none-null-sender-bounce", from_host(sender=""), set()),
    ("none-local-sender-from-host", from_host(sender="alice@ninhbinh.gov.vn"), set()),
    ("none-structural-not-a-host", inp(client="203.0.113.9", auth=True), set()),
    ("none-structural-at-final-hop", inp(client="10.0.5.20", final=True), set()),
    ("none-caf-from-state-workspace",
     to_local(sender="an+caf_=bob=ninhbinh.gov.vn@hanoi.gov.vn"),
     set()),
    ("none-caf-from-our-side",
     inp(sender="an+caf_=bob=ninhbinh.gov.vn@gmail.com", to=("bob@ninhbinh.gov.vn",),
         auth=True),
     set()),
    ("none-foreign-srs-of-state",
     to_local(sender="SRS0=h7Gq=TZ=a.example=b@hanoi.gov.vn"),
     set()),
    ("none-declared-forwarder-is-state",
     to_local([("Auto-Submitted", "auto-forwarded")], sender="lan@hanoi.gov.vn"),
     set()),
    ("none-orcpt-equal",
     inp(sender="bob@ninhbinh.gov.vn", orcpt=("Y@Gmail.com",), final=True),
     set()),
    ("none-orcpt-local-to-local",
     inp(sender="bob@ninhbinh.gov.vn", to=("c@ninhbinh.gov.vn",),
         orcpt=("user@ninhbinh.gov.vn",), final=True),
     set()),
    ("none-auto-generated",
     from_host([("Auto-Submitted", "auto-generated")], sender="alice@ninhbinh.gov.vn"),
     set()),
    ("none-ms-autoforwarded-false",
     from_host([("X-MS-Exchange-Organization-AutoForwarded", "false")],
               sender="alice@ninhbinh.gov.vn"),
     set()),
    ("none-x-forwarded-for-ip",
     inp([("X-Forwarded-For", "203.0.113.77, 10.0.5.2")], sender="alice@ninhbinh.gov.vn",
         auth=True),
     set()),
    ("none-inbound-signal-from-our-side",
     from_host([("X-Sieve-Redirected-From", "h@mailbox.example")], sender="a@ninhbinh.gov.vn",
               to=("b@ninhbinh.gov.vn",)),
     set()),
    ("none-domainless-recipient",
     from_host([("X-Sieve-Redirected-From", "alice@ninhbinh.gov.vn")], to=("postmaster",)),
     set()),
]


@pytest.mark.parametrize("inputs,expected", [pytest.param(i, e, id=n)
                                             for n, i, e in SIGNAL_CASES])
def test_signal_alone(inputs: ForwardInputs, expected: set[str]) -> None:
    assert {sig.token() for sig in analyse(inputs, S).signals} == expected


def test_signal_cases_cover_every_signal_name() -> None:
    names = {tok.split(":")[0] for _, _, exp in SIGNAL_CASES for tok in exp}
    assert names == {
        "sieve-redirect", "zimbra-forward", "our-srs", "structural", "auto-submitted-forwarded",
        "ms-autoforwarded", "x400-autoforwarded", "x-forwarded-to", "x-forwarded-for",
        "rewritten-recipient", "delivered-to", "gmail-caf", "ms-forwarding-loop", "foreign-srs",
        "ms-inbox-rules-loop", "resent", "auto-replied", "fwd-subject", "mailing-list",
    }


@pytest.mark.parametrize("confidence,promote,action", [
    (Confidence.HIGH, False, Action.REJECT),
    (Confidence.MEDIUM, False, Action.ACCEPT),
    (Confidence.MEDIUM, True, Action.REJECT),
    (Confidence.LOW, True, None),
], ids=["high-refuses", "medium-logged", "medium-promoted", "low-never"])
def test_confidence_to_action(confidence: Confidence, promote: bool,
                              action: Action | None) -> None:
    case = {Confidence.HIGH: "out-structural", Confidence.MEDIUM: "out-structural-authenticated",
            Confidence.LOW: "weak-resent"}[confidence]
    inputs = next(i for n, i, _ in SIGNAL_CASES if n == case)
    verdicts = analyse(inputs, settings(**{"forwarding.promote_medium": promote})).verdicts
    assert [v.action for v in verdicts] == ([action] if action else [])


def test_monitor_mode_enforces_nothing() -> None:
    s = settings(**{"forwarding.mode": "monitor", "forwarding.promote_medium": True})
    for _, inputs, _ in SIGNAL_CASES:
        assert not any(v.enforced for v in analyse(inputs, s).verdicts)
    assert any(v.monitor for _, i, _ in SIGNAL_CASES for v in analyse(i, s).verdicts)


def test_a_private_recipient_makes_the_mail_ours() -> None:
    """A private recipient next to a local one, from a client Postfix agreed to relay for,
    with evidence both ways: Postfix relays outside only for clients it trusts, so the
    mail is ours and only the outbound direction applies (addresses.Ours)."""
    inputs = inp([("X-Forwarded-For", "alice@gmail.com"), ("X-Zimbra-Forwarded",
                                                           "tuan@ninhbinh.gov.vn")],
                 sender="news@shop.example", to=("bob@ninhbinh.gov.vn", "x@yahoo.com"),
                 hosts=False)
    rules = {v.rule: v for v in analyse(inputs, S).verdicts}
    assert set(rules) == {forwarding.EXTERNAL_AUTO}
    assert rules[forwarding.EXTERNAL_AUTO].detail["recipients"] == "x@yahoo.com"
    assert "Khong duoc tu dong chuyen tiep" in rules[forwarding.EXTERNAL_AUTO].text


def test_inbound_text_names_the_private_forwarder() -> None:
    inputs = inp([("X-Forwarded-For", "alice@gmail.com bob@ninhbinh.gov.vn")],
                 sender="news@shop.example", to=("bob@ninhbinh.gov.vn",), hosts=False)
    [v] = analyse(inputs, S).verdicts
    assert v.rule == forwarding.INBOUND_AUTO and v.detail["recipients"] == "bob@ninhbinh.gov.vn"
    assert "Khong nhan thu tu dong chuyen tiep" in v.text and "alice@gmail.com" in v.text


def test_trusted_relay_host_auto_forward_to_gmail_is_refused_by_default() -> None:
    """Issue 9: with the shipped defaults a mailbox server relaying without SASL (a
    trusted host, not in forwarding.mailbox_hosts) and declaring the forward is refused."""
    s = Settings.from_config(load_config(None)).content.forwarding
    for name, value in (("Auto-Submitted", "auto-forwarded"),
                        ("X-MS-Exchange-Organization-AutoForwarded", "true")):
        inputs = ForwardInputs(headers=[(name, value)], mail_from="alice@ninhbinh.gov.vn",
                               recipients=("x@gmail.com",), client_addr="127.0.0.1")
        [v] = analyse(inputs, s).verdicts
        assert v.rule == forwarding.EXTERNAL_AUTO and v.enforced, name
        # the same from that host to another state agency passes
        state = ForwardInputs(headers=[(name, value)], mail_from="alice@ninhbinh.gov.vn",
                              recipients=("x@hanoi.gov.vn",), client_addr="127.0.0.1")
        assert not any(v.enforced for v in analyse(state, s).verdicts)


def test_reply_is_ascii_bounded_and_names_a_hostile_mailbox_safely() -> None:
    evil = "a%s\u00e9b\"x" + "y" * 200 + "@ninhbinh.gov.vn"
    inputs = from_host([("X-Sieve-Redirected-From", evil)], sender="b@ninhbinh.gov.vn")
    [v] = analyse(inputs, S).verdicts
    assert v.text.isascii() and "%" not in v.text and '"' not in v.text
    assert len(v.reply) < 512


def test_reply_without_a_named_mailbox_says_unknown() -> None:
    [v] = analyse(inp(sender="SRS0=Ab12=TZ=p.vn=h@ninhbinh.gov.vn", final=True), S).verdicts
    assert "(forwarding mailbox: khong ro/unknown)" in v.text and v.detail["mailbox"] == "unknown"


def test_log_detail_lists_every_signal_of_the_direction() -> None:
    sample = next(s for s in SAMPLES if s.name == "dovecot-sieve-redirect-to-gmail")
    [v] = analyse(sample.inputs, S).verdicts
    assert v.detail["signals"].split(",") == [  # strongest first, then as found
        "sieve-redirect:high=alice@ninhbinh.gov.vn", "structural:high=alice@ninhbinh.gov.vn",
        "delivered-to:medium=alice@ninhbinh.gov.vn"]
    assert v.detail["direction"] == "outbound" and v.detail["confidence"] == "high"


def test_a_message_stuffed_with_forwarding_headers_stays_bounded() -> None:
    headers = [("X-Forwarded-For", " ".join(f"u{i}.{j}@ninhbinh.gov.vn" for j in range(40)))
               for i in range(3000)]
    headers.append(("Delivered-To", "last@ninhbinh.gov.vn"))
    d = analyse(from_host(headers, sender="a@ninhbinh.gov.vn"), S)
    assert len(d.signals) <= forwarding._MAX_SIGNALS + 1
    assert "delivered-to:medium=last@ninhbinh.gov.vn" in {sig.token() for sig in d.signals}
    [v] = d.verdicts
    tokens = v.detail["signals"].split(",")
    assert len(tokens) == forwarding._MAX_TOKENS_LOGGED + 1 and tokens[-1].startswith("+")
    assert v.action is Action.REJECT and v.detail["mailbox"] == "u0.0@ninhbinh.gov.vn"


def test_strongest() -> None:
    d = analyse(next(i for n, i, _ in SIGNAL_CASES if n == "in-rules-loop-with-srs"), S)
    assert d.strongest(Direction.INBOUND) is Confidence.HIGH
    assert d.strongest(Direction.OUTBOUND) is None


# -- helpers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("param,address", [
    ("ORCPT=rfc822;user@ninhbinh.gov.vn", "user@ninhbinh.gov.vn"),
    ("rfc822;bob+2Btag@ninhbinh.gov.vn", "bob+tag@ninhbinh.gov.vn"),
    ("orcpt=RFC822;a+3Db@x.vn", "a=b@x.vn"),
    ("ORCPT=rfc822;odd+2@x.vn", "odd+2@x.vn"),
    ("ORCPT=x400;c=VN;o=gov", ""),
    ("ORCPT=user@x.vn", ""),
], ids=["plain", "xtext-plus", "xtext-equals", "bad-xtext-kept", "not-rfc822", "no-type"])
def test_parse_orcpt(param: str, address: str) -> None:
    assert parse_orcpt(param) == address


@pytest.mark.parametrize("domain,cls", [
    ("hanoi.gov.vn", "state"), ("so.hanoi.gov.vn", "state"), ("hanoigov.vn", "private"),
    ("gov.vn.example.com", "private"), ("chinhphu.vn", "state"), ("ninhbinh.gov.vn", "local"),
    ("sotc.ninhbinh.gov.vn", "local"), ("gmail.com", "private"),
])
def test_address_classes(domain: str, cls: str) -> None:
    found = S.classify(f"x@{domain}")
    assert found is not None and found.value == cls


def test_settings_from_values_and_mailbox_hosts() -> None:
    s = settings(**{"forwarding.srs_domains": ["srs.ninhbinh.gov.vn"],
                    "forwarding.mailbox_hosts": ["10.0.5.0/24", "2001:db8::/64"]})
    assert s.citation == CITATION and s.enforce and not s.promote_medium
    assert s.local_domains == ("ninhbinh.gov.vn",) and s.state_suffixes == ("gov.vn",)
    assert forwarding.is_mailbox_host("10.0.5.9", s)
    assert forwarding.is_mailbox_host("2001:db8::5", s)
    assert not forwarding.is_mailbox_host("10.0.6.1", s)
    assert not forwarding.is_mailbox_host("unknown", s)
    assert s.is_ours_srs("srs.ninhbinh.gov.vn") and not s.is_ours_srs("ninhbinh.gov.vn.evil.com")
