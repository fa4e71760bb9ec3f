"""`mailwarden inactive` on a real Redis with planted last-use dates: exactly the accounts
past each profile's threshold are listed, with their dates; --lock locks them (kind
inactive, citing the profile's article). And the abuse guard at scale, on the real
scripts: one address spraying many accounts locks none. Issue #11.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import write_config
from harness.redis import RedisInstance
from mailwarden.authpolicy.service import Attempt, AuthPolicyService
from mailwarden.clock import FakeClock
from mailwarden.config import load_config
from mailwarden.store.redis_store import RedisStore

pytestmark = pytest.mark.integration

DAY = 86400.0
NOW = time.time()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def plant(redis: RedisInstance, uses: dict[str, tuple[float | None, float | None]]) -> None:
    """account -> (days since last login, days since last send); None = never."""

    async def go() -> None:
        store = RedisStore(redis.url)
        try:
            await store.client.set(store.keys.activity_since, int((NOW - 800 * DAY) * 1000))
            for account, (login, sent) in uses.items():
                await store.set_activity(
                    account, login=NOW - login * DAY if login is not None else None,
                    send=NOW - sent * DAY if sent is not None else None)
        finally:
            await store.close()

    asyncio.run(go())


# Days since last login / last send, per account, and who each profile lists.
USES: dict[str, tuple[float | None, float | None]] = {
    "fresh@x.gov.vn": (5, 5),
    "two-months@x.gov.vn": (62, None),
    "four-months@x.gov.vn": (125, None),
    "sends-only@x.gov.vn": (250, 10),
    "seven-months@x.gov.vn": (215, 215),
    "thirteen-months@x.gov.vn": (400, None),
    "send-long-ago@x.gov.vn": (None, 201),
}
LISTED = {
    # Ha Nam: 3 months of neither sending nor logging in; revoke at 6.
    "hanam-27-2023": {"four-months@x.gov.vn": "", "seven-months@x.gov.vn": "due",
                      "thirteen-months@x.gov.vn": "due", "send-long-ago@x.gov.vn": "due"},
    # Tien Giang: 6 months unused; delete at 12.
    "tiengiang-51-2016": {"seven-months@x.gov.vn": "", "thirteen-months@x.gov.vn": "due",
                          "send-long-ago@x.gov.vn": ""},
    # Ninh Binh 28/2020: 6 months without a LOGIN (sending does not count).
    "ninhbinh-28-2020": {"sends-only@x.gov.vn": "", "seven-months@x.gov.vn": "",
                         "thirteen-months@x.gov.vn": "", "send-long-ago@x.gov.vn": ""},
}


@pytest.mark.parametrize("profile", sorted(LISTED))
def test_inactive_lists_exactly_the_accounts_past_the_profile_threshold(
        tmp_path: Path, redis_server: RedisInstance, profile: str) -> None:
    plant(redis_server, USES)
    config = write_config(tmp_path / "mw.toml", {"profile.name": profile,
                                                 "redis.url": redis_server.url})
    out = cli(config, "inactive", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["account"]: ("due" if "remove" in r else "") for r in rows} == LISTED[profile]
    for r in rows:
        assert r["locked"] == "no" and r["locked_now"] is False
        assert r["article"].endswith(load_config(config).profile.inactive_article)
    text = cli(config, "inactive").stdout
    assert text.splitlines()[0].startswith("# unused for ")
    assert "never" in text


def test_162_2025_has_no_period_but_days_can_be_given(tmp_path: Path,
                                                      redis_server: RedisInstance) -> None:
    plant(redis_server, USES)
    config = write_config(tmp_path / "mw.toml", {"redis.url": redis_server.url})
    out = cli(config, "inactive")
    assert out.returncode == 2 and "no inactivity period" in out.stderr
    assert cli(config, "inactive", "--scheduled").returncode == 0
    rows = json.loads(cli(config, "inactive", "--days", "200", "--json").stdout)
    assert {r["account"] for r in rows} == {"seven-months@x.gov.vn",
                                            "thirteen-months@x.gov.vn",
                                            "send-long-ago@x.gov.vn"}


def test_lock_applies_inactive_locks_and_the_timer_only_when_configured(
        tmp_path: Path, redis_server: RedisInstance) -> None:
    plant(redis_server, USES)
    accounts_file = tmp_path / "mailboxes.txt"
    accounts_file.write_text("# doveadm user '*'\nnever-seen@x.gov.vn\nfresh@x.gov.vn\n")
    config = write_config(tmp_path / "mw.toml", {"profile.name": "tiengiang-51-2016",
                                                 "redis.url": redis_server.url})
    rows = json.loads(cli(config, "inactive", "--accounts", str(accounts_file),
                          "--json").stdout)
    (never,) = [r for r in rows if r["account"] == "never-seen@x.gov.vn"]
    assert never["last_login"] == "never" and never["idle_days"] >= 799
    # The timer's run lists but does not lock unless accounts.inactive_auto_lock is set.
    assert cli(config, "inactive", "--scheduled").returncode == 0
    assert "no locked accounts" in cli(config, "locks").stdout

    out = cli(config, "inactive", "--lock", "--by", "ops1")
    assert out.returncode == 0 and "inactive (now)" in out.stdout, out.stdout + out.stderr
    locks = {lk["account"]: lk for lk in json.loads(cli(config, "locks", "--json").stdout)}
    assert set(locks) == {"seven-months@x.gov.vn", "thirteen-months@x.gov.vn",
                          "send-long-ago@x.gov.vn"}
    for lk in locks.values():
        assert lk["kind"] == "inactive" and lk["by"] == "ops1"
        assert "QD 51/2016/QD-UBND Dieu 5.3" in lk["reason"]
    assert "kind=inactive" in cli(config, "audit").stdout
    # A second run does not lock again; it shows the kind.
    rows = json.loads(cli(config, "inactive", "--lock", "--json").stdout)
    assert all(r["locked_now"] is False for r in rows)
    assert {r["locked"] for r in rows if r["account"] in locks} == {"inactive"}

    auto = write_config(tmp_path / "auto.toml", {"profile.name": "hanam-27-2023",
                                                 "accounts.inactive_auto_lock": True,
                                                 "redis.url": redis_server.url})
    assert cli(auto, "inactive", "--scheduled").returncode == 0
    assert "four-months@x.gov.vn" in cli(auto, "locks").stdout


def _service(redis: RedisInstance, clock: FakeClock, **over: Any) -> AuthPolicyService:
    cfg = load_config(None, {"redis.url": redis.url, **over})
    return AuthPolicyService(cfg, RedisStore(redis.url, timeout_s=5.0), clock)


def test_one_address_spraying_many_accounts_locks_none(redis_server: RedisInstance) -> None:
    """200 accounts, 12 distinct wrong passwords each, all from one address: the address is
    delayed after 3 failures and refused past 10 accounts; its failures past the cap count
    for nobody, so no account reaches the lock. The same 12 failures against ONE account
    still lock it (the rule as written: Dieu 7.2.a)."""
    clock = FakeClock(NOW)

    async def go() -> tuple[int, set[int], list[dict[str, Any]], int]:
        svc = _service(redis_server, clock)
        refused, delays = 0, set()
        try:
            for round_ in range(12):
                for i in range(200):
                    a = Attempt(f"user{i}@ninhbinh.gov.vn", "203.0.113.66", f"{round_:03x}",
                                "imap", f"s{round_}-{i}", None, False)
                    answer = await svc.allow(a)
                    if answer["status"] == -1:
                        refused += 1
                        continue  # Dovecot refuses: no password checked, no failure
                    delays.add(int(answer["status"]))
                    await svc.report(Attempt(a.login, a.remote, a.pwhash, "imap",
                                             a.session, False, False))
                    clock.advance(0.5)
            locks = [lk.__dict__ for lk in await svc.store.list_locks()]
            counts = [await svc.store.failed_logins(f"user{i}@ninhbinh.gov.vn")
                      for i in range(200)]
            # An owner elsewhere is not slowed down.
            own = await svc.allow(Attempt("user0@ninhbinh.gov.vn", "198.51.100.9", "", "imap",
                                          "own", None, False))
            assert own["status"] == 0
            # One victim, 12 wrong passwords from 12 addresses: locked, as the rule says.
            for k in range(12):
                a = Attempt("victim@ninhbinh.gov.vn", f"192.0.2.{k + 1}", f"{k:03x}", "imap",
                            f"v{k}", None, False)
                assert (await svc.allow(a))["status"] == 0
                await svc.report(Attempt(a.login, a.remote, a.pwhash, "imap", a.session,
                                         False, False))
            victim = await svc.store.get_lock("victim@ninhbinh.gov.vn")
            assert victim is not None and victim.kind == "failed-logins" and victim.count == 12
            return refused, delays, locks, max(counts)
        finally:
            await svc.store.close()

    refused, delays, locks, most = asyncio.run(go())
    assert locks == []  # (read before the victim's lock)
    # Only the 10 accounts before the cap saw one failure each; all else was refused.
    assert most == 1 and refused == 12 * 200 - 10
    assert {1, 2, 4, 8, 15} <= delays
