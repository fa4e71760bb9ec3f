"""rules/accounts.py: login refusal of a locked account, the failed-login lock, the
per-address delays and cap, and inactivity; table-driven, one readable name a case."""

from __future__ import annotations

import calendar
from dataclasses import replace

import pytest

from mailwarden.config import load_config
from mailwarden.rules import accounts
from mailwarden.rules.accounts import AllowInputs, FailureInputs, InactiveInputs
from mailwarden.rules.ratelock import LockInfo
from mailwarden.settings import accounts_from, ours_from

ALICE = "alice@ninhbinh.gov.vn"


def settings(**over: object) -> accounts.AccountSettings:
    cfg = load_config(None, dict(over))
    return accounts_from(cfg, ours_from(cfg))


S = settings()
LOCK = LockInfo(ALICE, "over 250 external recipients in 10m", 1_760_000_000.0, "rate",
                "policyd", 251)


def epoch(y: int, m: int, d: int) -> float:
    return float(calendar.timegm((y, m, d, 8, 0, 0)))


@pytest.mark.parametrize(("case", "login", "expected"), [
    ("full address", "Alice@NinhBinh.gov.vn", ALICE),
    ("bare name gets the first local domain", "alice", ALICE),
    ("recipient delimiter tag dropped", "alice+imap@ninhbinh.gov.vn", ALICE),
    ("agency subdomain is ours", "x@sotc.ninhbinh.gov.vn", "x@sotc.ninhbinh.gov.vn"),
    ("foreign domain is not an account of ours", "a@gmail.com", ""),
    ("control characters", "al\tice@ninhbinh.gov.vn", ""),
    ("empty", "", ""),
    ("absurdly long", "a" * 300 + "@ninhbinh.gov.vn", ""),
])
def test_login_account(case: str, login: str, expected: str) -> None:
    assert accounts.login_account(login, S) == expected, case


@pytest.mark.parametrize(("case", "remote", "expected"), [
    ("IPv4 per host", "203.0.113.7", "203.0.113.7/32"),
    ("IPv6 per /64", "2001:db8::1:2", "2001:db8::/64"),
    ("IPv4-mapped IPv6 is the IPv4 host", "::ffff:203.0.113.7", "203.0.113.7/32"),
    ("bracketed", "[2001:db8::5]", "2001:db8::/64"),
    ("not an address", "unknown", ""),
    ("missing", "", ""),
])
def test_address_key(case: str, remote: str, expected: str) -> None:
    assert accounts.address_key(remote, S) == expected, case


def test_address_key_prefix_is_configurable() -> None:
    s = settings(**{"authpolicy.address_prefix_v4": 24})
    assert accounts.address_key("203.0.113.7", s) == "203.0.113.0/24"


@pytest.mark.parametrize(("failures", "delay"), [
    (0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 4), (6, 8), (7, 15), (50, 15), (10**6, 15),
])
def test_delays_double_after_the_free_failures_up_to_the_cap(failures: int, delay: int) -> None:
    assert accounts.delay_for(failures, S) == delay


@pytest.mark.parametrize(("case", "inputs", "rule", "answer"), [
    ("a locked account is refused with why", AllowInputs(ALICE, "203.0.113.7/32", lock=LOCK),
     "account.login_locked", -1),
    ("the lock wins over an exempt address", AllowInputs(ALICE, "10.0.0.1/32", lock=LOCK,
                                                         exempt=True),
     "account.login_locked", -1),
    ("a clean address logs in", AllowInputs(ALICE, "203.0.113.7/32"), None, 0),
    ("two failures are free", AllowInputs(ALICE, "203.0.113.7/32", address_failures=2),
     None, 0),
    ("the third failure delays the next login",
     AllowInputs(ALICE, "203.0.113.7/32", address_failures=3), "account.login_throttled", 1),
    ("past the account cap the address is refused",
     AllowInputs(ALICE, "203.0.113.7/32", address_failures=10, address_accounts=10),
     "account.login_throttled", -1),
    ("an exempt address is never delayed",
     AllowInputs(ALICE, "10.0.0.30/32", address_failures=40, address_accounts=40,
                 exempt=True), None, 0),
    ("Dovecot's second check after a success is not delayed again",
     AllowInputs(ALICE, "203.0.113.7/32", address_failures=5, first_check=False), None, 0),
    ("an unknown address is not throttled", AllowInputs(ALICE, "", address_failures=9),
     None, 0),
])
def test_decide_allow(case: str, inputs: AllowInputs, rule: str | None, answer: int) -> None:
    verdicts = accounts.decide_allow(inputs, S)
    assert [v.rule for v in verdicts] == ([rule] if rule else []), case
    assert accounts.dovecot_answer(verdicts)["status"] == answer, case


def test_locked_refusal_says_why_and_cites_dieu_7_1() -> None:
    (v,) = accounts.decide_allow(AllowInputs(ALICE, "", lock=LOCK), S)
    msg = str(accounts.dovecot_answer([v])["msg"])
    assert msg.startswith("Hop thu bi tam khoa tu 2025-10-09 08:53 UTC (rate: over 250")
    assert "QD 162/2025/QD-UBND Dieu 7.1" in msg and "So Khoa hoc va Cong nghe" in msg
    assert msg.isascii() and v.article == "QD 162/2025/QD-UBND Dieu 7.1"


def test_a_hostile_lock_reason_stays_printable_ascii() -> None:
    lock = replace(LOCK, reason="x\r\n* OK injected\x00 \u00e9" * 20)
    (v,) = accounts.decide_allow(AllowInputs(ALICE, "", lock=lock), S)
    msg = str(accounts.dovecot_answer([v])["msg"])
    assert all(0x20 <= ord(c) < 0x7F for c in msg) and len(msg) <= 400


def test_a_profile_without_login_refusal_lets_a_locked_account_log_in() -> None:
    s = settings(**{"profile.name": "tuyenquang-12-2013"})
    assert not s.lock_refuses_login
    assert accounts.decide_allow(AllowInputs(ALICE.replace("ninhbinh", "tuyenquang"), "",
                                             lock=LOCK), s) == []


@pytest.mark.parametrize(("case", "status", "count", "locked"), [
    ("the twelfth consecutive failure locks", "locked_now", 12, "yes"),
    ("eleven do not", "counted", 11, None),
    ("a repeated password is not a new failure", "repeat", 11, None),
    ("an address past its cap counts for nobody", "capped", 11, None),
    ("an account already locked is not locked again", "locked", 0, None),
    ("not one of our accounts", "off", 0, None),
])
def test_decide_failure(case: str, status: str, count: int, locked: str | None) -> None:
    verdicts = accounts.decide_failure(FailureInputs(ALICE, status, count, "203.0.113.7/32"), S)
    if locked is None:
        assert verdicts == [], case
        return
    (v,) = verdicts
    assert v.rule == "account.failed_logins" and v.detail["locked"] == locked, case
    assert v.article == "QD 162/2025/QD-UBND Dieu 7.2.a" and v.enforced


def test_failed_login_monitor_mode_logs_what_would_lock() -> None:
    s = settings(**{"accounts.failed_login_mode": "monitor"})
    (v,) = accounts.decide_failure(FailureInputs(ALICE, "counted", 12), s)
    assert v.monitor and not v.enforced and v.detail["locked"] == "no"


def test_no_failed_login_lock_where_the_profile_has_none() -> None:
    s = settings(**{"profile.name": "hanam-27-2023"})
    assert s.failed_login_limit == 0
    assert accounts.decide_failure(FailureInputs("a@hanam.gov.vn", "counted", 500), s) == []


def test_the_operator_can_override_the_limit() -> None:
    s = settings(**{"accounts.failed_login_limit": 5})
    assert accounts.decide_failure(FailureInputs(ALICE, "locked_now", 5), s)


@pytest.mark.parametrize(("case", "now", "months", "expected"), [
    ("three months", epoch(2026, 11, 30), 3, epoch(2026, 8, 30)),
    ("across a year", epoch(2026, 2, 15), 6, epoch(2025, 8, 15)),
    ("31 May minus 3 months is 28 February", epoch(2026, 5, 31), 3, epoch(2026, 2, 28)),
    ("leap year", epoch(2028, 5, 31), 3, epoch(2028, 2, 29)),
    ("twelve months", epoch(2026, 11, 30), 12, epoch(2025, 11, 30)),
])
def test_months_before(case: str, now: float, months: int, expected: float) -> None:
    assert accounts.months_before(now, months) == expected, case


NOW = epoch(2026, 11, 30)
SINCE = epoch(2024, 1, 1)


def inactive(profile: str, last_login: float | None, last_send: float | None = None,
             days: int | None = None) -> list[str]:
    s = settings(**{"profile.name": profile})
    vs = accounts.decide_inactive(InactiveInputs(ALICE, last_login, last_send, SINCE, NOW,
                                                 None, days), s)
    return [f"{v.rule} remove={v.detail.get('remove', '-')[:3]}" for v in vs]


@pytest.mark.parametrize(("case", "profile", "login", "send", "days", "expected"), [
    ("162/2025 sets no period", "ninhbinh-162-2025", epoch(2020, 1, 1), None, None, []),
    ("162/2025 with --days", "ninhbinh-162-2025", epoch(2026, 10, 1), None, 30,
     ["account.inactive remove=-"]),
    ("Ha Nam: 2 months is in use", "hanam-27-2023", epoch(2026, 10, 1), None, None, []),
    ("Ha Nam: 4 months locks", "hanam-27-2023", epoch(2026, 7, 29), None, None,
     ["account.inactive remove=-"]),
    ("Ha Nam: a recent send is use", "hanam-27-2023", epoch(2026, 1, 1), epoch(2026, 11, 1),
     None, []),
    ("Ha Nam: 7 months is due for revocation", "hanam-27-2023", epoch(2026, 4, 1), None,
     None, ["account.inactive remove=due"]),
    ("Tien Giang: 5 months is in use", "tiengiang-51-2016", epoch(2026, 7, 1), None, None,
     []),
    ("Tien Giang: 7 months locks", "tiengiang-51-2016", epoch(2026, 4, 1), None, None,
     ["account.inactive remove=-"]),
    ("Tien Giang: 13 months is due for deletion", "tiengiang-51-2016", epoch(2025, 10, 1),
     None, None, ["account.inactive remove=due"]),
    ("28/2020: a send is not a login", "ninhbinh-28-2020", epoch(2026, 4, 1),
     epoch(2026, 11, 1), None, ["account.inactive remove=-"]),
    ("28/2020: 5 months since a login", "ninhbinh-28-2020", epoch(2026, 7, 1), None, None,
     []),
    ("never seen counts from when recording started", "hanam-27-2023", None, None, None,
     ["account.inactive remove=due"]),
])
def test_decide_inactive(case: str, profile: str, login: float | None, send: float | None,
                         days: int | None, expected: list[str]) -> None:
    assert inactive(profile, login, send, days) == expected, case


def test_inactive_verdict_carries_the_dates_and_article() -> None:
    s = settings(**{"profile.name": "hanam-27-2023"})
    (v,) = accounts.decide_inactive(InactiveInputs(
        "a@hanam.gov.vn", epoch(2026, 7, 1), None, SINCE, NOW, None), s)
    assert v.article == "QD 27/2023/QD-UBND Dieu 7.2.a"
    assert v.detail["last_login"] == "2026-07-01 08:00 UTC" and v.detail["last_send"] == "never"
    assert v.detail["idle_days"] == "152" and v.detail["locked"] == "no"
