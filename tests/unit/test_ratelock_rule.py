"""rules/ratelock.py: who sends, what counts, what the replies say."""

from __future__ import annotations

import ipaddress

import pytest

from mailwarden.config import load_config
from mailwarden.rules import ratelock
from mailwarden.rules.ratelock import LockInfo, RateSettings, Scope
from mailwarden.settings import Settings
from mailwarden.verdict import Action


def settings(**over: object) -> RateSettings:
    cfg = load_config(None, {"ratelimit.overrides": {
        "bulk@ninhbinh.gov.vn": {"limit": 2000}, "noreply@ninhbinh.gov.vn": {"exempt": True}},
        **over})
    return Settings.from_config(cfg).rate


def req(**kw: str) -> dict[str, str]:
    base = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
            "client_address": "203.0.113.9", "instance": "1a.2b", "sender": "", "recipient": ""}
    base.update(kw)
    return base


S = settings()


@pytest.mark.parametrize("attrs,scope,account", [
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", sender="alice@ninhbinh.gov.vn",
                     recipient="x@gmail.com"), Scope.EXTERNAL, "alice@ninhbinh.gov.vn",
                 id="sasl-user-to-gmail"),
    pytest.param(req(sasl_username="Alice+x@NinhBinh.gov.vn", recipient="x@gmail.com"),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="login-normalised"),
    pytest.param(req(sasl_username="alice", recipient="x@gmail.com"), Scope.EXTERNAL,
                 "alice@ninhbinh.gov.vn", id="bare-login-gets-local-domain"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", recipient="bob@ninhbinh.gov.vn"),
                 Scope.INTERNAL, "alice@ninhbinh.gov.vn", id="internal-never-counts"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", recipient="b@sotc.ninhbinh.gov.vn"),
                 Scope.INTERNAL, "alice@ninhbinh.gov.vn", id="subdomain-is-internal"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", recipient="b@hanoi.gov.vn"),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="other-gov-vn-is-external"),
    pytest.param(req(sender="webmail@ninhbinh.gov.vn", client_address="127.0.0.1",
                     recipient="x@gmail.com"), Scope.EXTERNAL, "webmail@ninhbinh.gov.vn",
                 id="trusted-host-local-sender"),
    pytest.param(req(sender="alice@ninhbinh.gov.vn", client_address="203.0.113.9",
                     recipient="bob@ninhbinh.gov.vn"), Scope.INBOUND, "",
                 id="untrusted-client-claiming-local-sender"),
    # Postfix relayed to an outside domain, so it trusts the client (mynetworks): ours,
    # counted, whatever policyd's own list says.
    pytest.param(req(sender="alice@ninhbinh.gov.vn", client_address="203.0.113.9",
                     recipient="x@gmail.com"), Scope.EXTERNAL, "alice@ninhbinh.gov.vn",
                 id="relayed-outside-is-ours"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", recipient="gmail.com!x"),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="bang-path-counts"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn",
                     recipient="gmail.com!x@ninhbinh.gov.vn"),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="bang-path-at-local-counts"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn",
                     recipient="x%gmail.com@ninhbinh.gov.vn"),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="percent-hack-counts"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn",
                     recipient='"x@gmail.com"@ninhbinh.gov.vn'),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="quoted-at-counts"),
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", recipient="bob"),
                 Scope.INTERNAL, "alice@ninhbinh.gov.vn", id="bare-local-part-is-ours"),
    # not provably local (Postfix may route it to "b"): counted, the fail-safe side
    pytest.param(req(sasl_username="alice@ninhbinh.gov.vn", recipient="a%b@ninhbinh.gov.vn"),
                 Scope.EXTERNAL, "alice@ninhbinh.gov.vn", id="percent-to-unqualified-counts"),
    pytest.param(req(sender="x@gmail.com", recipient="alice@ninhbinh.gov.vn"), Scope.INBOUND, "",
                 id="inbound-mail"),
    pytest.param(req(sender="", client_address="127.0.0.1", recipient="alice@ninhbinh.gov.vn"),
                 Scope.INBOUND, "", id="null-sender-bounce"),
    pytest.param(req(sasl_username="noreply@ninhbinh.gov.vn", recipient="x@gmail.com"),
                 Scope.EXEMPT, "noreply@ninhbinh.gov.vn", id="exempt-account"),
])
def test_classify(attrs: dict[str, str], scope: Scope, account: str) -> None:
    c = ratelock.classify(attrs, S)
    assert (c.scope, c.account) == (scope, account)


def test_recipient_member_dedupes_tag_and_case_within_a_message() -> None:
    a = ratelock.classify(req(sasl_username="a@ninhbinh.gov.vn", recipient="Bob+x@Gmail.com"), S)
    b = ratelock.classify(req(sasl_username="a@ninhbinh.gov.vn", recipient="bob@gmail.com"), S)
    c = ratelock.classify(req(sasl_username="a@ninhbinh.gov.vn", recipient="bob@gmail.com",
                              instance="other"), S)
    assert a.member == b.member != c.member


def test_message_mode_counts_the_transaction_once() -> None:
    s = settings(**{"ratelimit.count": "messages"})
    a = ratelock.classify(req(sasl_username="a@ninhbinh.gov.vn", recipient="x@gmail.com"), s)
    b = ratelock.classify(req(sasl_username="a@ninhbinh.gov.vn", recipient="y@yahoo.com"), s)
    assert a.member == b.member == "m:1a.2b"


def test_disabled_profile_counts_nothing() -> None:
    s = settings(**{"ratelimit.enabled": False})
    c = ratelock.classify(req(sasl_username="a@ninhbinh.gov.vn", recipient="x@gmail.com"), s)
    assert c.scope is Scope.EXEMPT  # lock checks still apply


def test_limits_and_overrides_come_from_profile_and_config() -> None:
    assert ratelock.limit_for("alice@ninhbinh.gov.vn", S) == 250  # profile 162/2025
    assert ratelock.limit_for("bulk@ninhbinh.gov.vn", S) == 2000
    assert S.window_s == 600.0


def test_over_limit_reply_names_limit_and_article() -> None:
    v = ratelock.over_limit("alice@ninhbinh.gov.vn", 251, S)
    assert v.action is Action.REJECT and v.enforced
    assert v.reply.startswith("550 5.7.1 ")
    assert "250" in v.text and "10m" in v.text and "Dieu 7.2.b" in v.text
    assert v.article == "QD 162/2025/QD-UBND Dieu 7.2.b"
    assert v.text.isascii() and len(v.reply) < 450


def test_monitor_mode_verdict_is_not_enforced() -> None:
    v = ratelock.over_limit("a@ninhbinh.gov.vn", 251, settings(**{"ratelimit.mode": "monitor"}))
    assert v.monitor and not v.enforced


def test_locked_reply_says_why_since_and_whom_to_contact() -> None:
    lock = LockInfo("a@ninhbinh.gov.vn", "virus: Trojan \u00e9\nX", 1_760_000_000, "manual")
    v = ratelock.locked(lock, S)
    assert v.rule == "account.locked" and v.reply.startswith("550 5.7.1")
    assert "2025-10-09 08:53 UTC" in v.text
    assert "So Khoa hoc va Cong nghe" in v.text
    assert "Dieu 7.2" in v.article
    assert v.text.isascii() and "\n" not in v.text  # operator text cannot break the reply


def test_trusted_networks_parse() -> None:
    assert ipaddress.ip_address("127.0.0.1") in S.ours.trusted_networks[0]
