"""Forwarding edge cases found alongside issue 14: bang paths and percent hacks in
Sieve/.forward targets (first pass and audit), bounces of forwarded mail returned through
our SRS address, and X-Forwarded-For read by the one address parser."""

from __future__ import annotations

from typing import Any

import pytest

from mailwarden.audit.findings import FORWARD
from mailwarden.audit.forward_files import forward_file_findings
from mailwarden.audit.sieve import sieve_findings
from mailwarden.config import load_config
from mailwarden.rules import forwarding
from mailwarden.rules.forwarding import (
    Direction,
    ForwardInputs,
    ForwardSettings,
    addresses_in,
    srs_reversed,
)
from mailwarden.settings import Settings
from mailwarden.verdict import Action

LOCAL = "ninhbinh.gov.vn"
MAILBOX_HOST = "10.0.5.7"


def settings(**values: Any) -> ForwardSettings:
    cfg = load_config(None, {"forwarding.mailbox_hosts": ["10.0.5.0/24"], **values})
    return Settings.from_config(cfg).content.forwarding


S = settings()
ROUTED = [f"bob%gmail.com@{LOCAL}", f"gmail.com!bob@{LOCAL}", "gmail.com!bob",
          f'"bob@gmail.com"@{LOCAL}']


@pytest.mark.parametrize("target", ROUTED)
def test_sieve_redirect_to_a_routed_form_raises_a_signal_on_the_first_pass(target: str) -> None:
    headers = [("X-Sieve-Redirected-From", f"bob@{LOCAL}"), ("From", "alice@partner.example"),
               ("To", f"bob@{LOCAL}"), ("Subject", "hop")]
    inputs = ForwardInputs(headers=headers, mail_from="alice@partner.example",
                           recipients=(target,), client_addr=MAILBOX_HOST,
                           from_our_mailbox_hosts=True)
    decision = forwarding.analyse(inputs, S)
    assert decision.strongest(Direction.OUTBOUND) is not None, decision.signals
    assert [v.rule for v in decision.verdicts if v.action is Action.REJECT] == \
        [forwarding.EXTERNAL_AUTO]


@pytest.mark.parametrize("target", ROUTED[:3])
def test_the_audit_finds_routed_forms_in_sieve_and_forward_files(target: str) -> None:
    script = f'require "copy";\nredirect :copy "{target}";\n'
    found = sieve_findings("/home/bob/sieve/a.sieve", script, f"bob@{LOCAL}", S)
    assert [(f.kind, f.target) for f in found] == [(FORWARD, target.lower())]
    found = forward_file_findings("/home/bob/.forward", f"\\bob, {target}\n", f"bob@{LOCAL}",
                                  S, lambda p: None)
    # a bare "gmail.com!bob" is qualified with the owner's domain, as Postfix does
    assert [f.kind for f in found] == [FORWARD] and found[0].target.startswith(target.lower())


SRS = f"SRS0=HHH=TT=gmail.com=alice@{LOCAL}"


@pytest.mark.parametrize("address, original", [
    (SRS, "alice@gmail.com"),
    (f"SRS1=HHH=fwd.example==HHH=TT=gmail.com=alice@{LOCAL}", "alice@gmail.com"),
    ("SRS0=HHH=TT=gmail.com=alice@other.example", ""),  # not our SRS domain
    (f"alice@{LOCAL}", ""),
    (f"SRS0=HHH@{LOCAL}", ""),
])
def test_srs_reversal(address: str, original: str) -> None:
    assert srs_reversed(address, S) == original


def _final_hop(mail_from: str, *headers: tuple[str, str]) -> ForwardInputs:
    return ForwardInputs(headers=list(headers), mail_from=mail_from,
                         recipients=("alice@gmail.com",), original_recipients=(SRS,),
                         final_hop=True)


@pytest.mark.parametrize("name, inputs", [
    ("null sender bounce", _final_hop("", ("From", "MAILER-DAEMON@mx.partner.example"),
                                      ("Subject", "Undelivered Mail Returned to Sender"))),
    ("DSN with a sender", _final_hop(
        "bounces@mx.partner.example", ("From", "postmaster@mx.partner.example"),
        ("Content-Type", "multipart/report; report-type=delivery-status; boundary=x"))),
])
def test_a_bounce_returned_through_our_srs_address_passes(name: str,
                                                          inputs: ForwardInputs) -> None:
    decision = forwarding.analyse(inputs, S)
    assert not [v for v in decision.verdicts if v.action is Action.REJECT], \
        (name, decision.signals)
    assert "rewritten-recipient" not in {sig.name for sig in decision.signals}


def test_a_non_bounce_to_our_srs_address_still_counts_as_rewritten() -> None:
    inputs = _final_hop("x@partner.example", ("From", "x@partner.example"))
    assert "rewritten-recipient" in {s.name for s in forwarding.analyse(inputs, S).signals}


@pytest.mark.parametrize("value, expected", [
    ("alice@gmail.com bob@ninhbinh.gov.vn", ["alice@gmail.com", "bob@ninhbinh.gov.vn"]),
    ("=?utf-8?q?alice=40gmail=2Ecom?= bob@ninhbinh.gov.vn",
     ["alice@gmail.com", "bob@ninhbinh.gov.vn"]),
    ('"alice smith"@gmail.com bob@ninhbinh.gov.vn',
     ["alice smith@gmail.com", "bob@ninhbinh.gov.vn"]),
    ("alice@b\u00fccher.example bob@ninhbinh.gov.vn",
     ["alice@b\u00fccher.example", "bob@ninhbinh.gov.vn"]),
    ("a" * 90 + "@gmail.com bob@ninhbinh.gov.vn", ["a" * 90 + "@gmail.com",
                                                    "bob@ninhbinh.gov.vn"]),
])
def test_x_forwarded_for_read_by_the_one_address_parser(value: str,
                                                         expected: list[str]) -> None:
    assert addresses_in(value)[:2] == expected


@pytest.mark.parametrize("forwarder", ["=?utf-8?q?alice=40gmail=2Ecom?=",
                                       '"alice smith"@gmail.com', "alice@b\u00fccher.example",
                                       "a" * 90 + "@gmail.com"])
def test_inbound_forward_named_in_an_unusual_x_forwarded_for_is_seen(forwarder: str) -> None:
    inputs = ForwardInputs(headers=[("X-Forwarded-For", f"{forwarder} bob@{LOCAL}"),
                                    ("From", "news@shop.example")],
                           mail_from="alice@gmail.com", recipients=(f"bob@{LOCAL}",),
                           client_addr="203.0.113.9")
    decision = forwarding.analyse(inputs, S)
    assert forwarding.INBOUND_AUTO in {v.rule for v in decision.verdicts}, decision.signals
