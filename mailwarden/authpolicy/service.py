"""From one Dovecot auth policy request to one answer: rules + store + log line.

Dovecot asks `allow` before authentication (and again after a success, when
auth_policy_check_after_auth is on), and sends `report` after it with
`success` (docs/accounts.md). The HTTP side lives in server.py, the decisions
in rules/accounts.py, the counting in Redis (store/scripts/login_*.lua).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailwarden import logs
from mailwarden.clock import Clock
from mailwarden.config import Config
from mailwarden.rules import accounts
from mailwarden.rules.accounts import AllowInputs, FailureInputs
from mailwarden.settings import accounts_from, authpolicy_from, ours_from
from mailwarden.store.redis_store import LoginFailure, RedisStore
from mailwarden.verdict import Action, Verdict

log = logging.getLogger("mailwarden.authpolicy")

_MAX_FIELD = 512  # longest attribute value used (a login, an address, a hash)
_SESSIONS = 20_000  # sessions remembered to tell Dovecot's second `allow` from a first


class BadRequest(ValueError):
    """Not a request Dovecot sends: answered 400, logged."""


@dataclass(frozen=True)
class Attempt:
    """The attributes of one request that mailwarden uses (shipped
    auth_policy_request_attributes: login, pwhash, remote, protocol, session_id)."""

    login: str
    remote: str
    pwhash: str
    protocol: str
    session: str
    success: bool | None  # report only
    policy_reject: bool  # report only: Dovecot refused because we said so

    @classmethod
    def parse(cls, body: Any) -> Attempt:
        if not isinstance(body, dict):
            raise BadRequest("body is not a JSON object")

        def text(name: str) -> str:
            v = body.get(name, "")
            if v is None:
                return ""
            if not isinstance(v, str):
                raise BadRequest(f"{name} is not a string")
            return v[:_MAX_FIELD]

        success = body.get("success")
        if success is not None and not isinstance(success, bool):
            raise BadRequest("success is not a boolean")
        return cls(login=text("login"), remote=text("remote"), pwhash=text("pwhash"),
                   protocol=text("protocol"), session=text("session_id"), success=success,
                   policy_reject=body.get("policy_reject") is True)


@dataclass
class Stats:
    allow: int = 0
    refused: int = 0
    delayed: int = 0
    failures: int = 0
    successes: int = 0
    locks: int = 0
    errors: int = 0

    def line(self, since_s: float, final: bool = False) -> str:
        return logs.stats_line(self.__dict__, since_s=since_s, final=final)


class AuthPolicyService:
    def __init__(self, cfg: Config, store: RedisStore, clock: Clock) -> None:
        self.s = accounts_from(cfg, ours_from(cfg))
        self.p = authpolicy_from(cfg)
        self.store = store
        self.clock = clock
        self.stats = Stats()
        self.sessions: OrderedDict[str, None] = OrderedDict()

    # -- ?command=allow ----------------------------------------------------------------
    async def allow(self, a: Attempt) -> dict[str, int | str]:
        self.stats.allow += 1
        account = accounts.login_account(a.login, self.s)
        network = accounts.address_key(a.remote, self.s)
        first = self._first_check(a.session)
        chk = await self.store.login_check(account, network, now=self.clock.now(),
                                           window_s=self.s.address_window_s)
        verdicts = accounts.decide_allow(AllowInputs(
            account=account, address=network, lock=chk.lock,
            address_failures=chk.address_failures, address_accounts=chk.address_accounts,
            exempt=accounts.address_exempt(a.remote, self.s), first_check=first), self.s)
        answer = accounts.dovecot_answer(verdicts)
        for v in verdicts:
            if int(answer["status"]) > 0:
                self.stats.delayed += 1
                log.info("%s", self._line(a, v, "delay"))
            else:
                self.stats.refused += 1
                log.warning("%s", self._line(a, v, reply=str(answer["msg"])))
        return answer

    def _first_check(self, session: str) -> bool:
        """Dovecot asks twice for a login that succeeds (before and after authentication,
        same session id): only the first is delayed for its address."""
        if not session:
            return True
        if session in self.sessions:
            self.sessions.move_to_end(session)
            return False
        self.sessions[session] = None
        if len(self.sessions) > _SESSIONS:
            self.sessions.popitem(last=False)
        return True

    # -- ?command=report ---------------------------------------------------------------
    async def report(self, a: Attempt) -> dict[str, int | str]:
        if a.success is None or a.policy_reject:
            # A login we refused ourselves (policy_reject) is not a wrong password.
            return {"status": 0, "msg": ""}
        account = accounts.login_account(a.login, self.s)
        now = self.clock.now()
        if a.success:
            self.stats.successes += 1
            if account:
                cleared = await self.store.login_succeeded(account, now=now)
                if cleared:
                    log.info("%s", self._line(a, accounts.counted(FailureInputs(
                        account, "cleared", 0, "")), "success", cleared=str(cleared)))
            return {"status": 0, "msg": ""}
        self.stats.failures += 1
        network = accounts.address_key(a.remote, self.s)
        r = await self._count_failure(a, account, network, now)
        inputs = FailureInputs(account, r.status, r.count, network)
        verdicts = accounts.decide_failure(inputs, self.s)
        for v in verdicts:
            if r.status == "locked_now":
                self.stats.locks += 1
            log.warning("%s", self._line(a, v, "lock" if r.status == "locked_now" else ""))
        if not verdicts:
            log.info("%s", self._line(a, accounts.counted(inputs), "fail",
                                      address_failures=str(r.address_failures),
                                      address_accounts=str(r.address_accounts)))
        return {"status": 0, "msg": ""}

    async def _count_failure(self, a: Attempt, account: str, network: str,
                             now: float) -> LoginFailure:
        return await self.store.login_failed(
            account, network, member=account or a.login.strip().lower()[:254],
            pwhash=a.pwhash if self.s.distinct_passwords else "",
            attempt=f"{int(now * 1000)}:{os.urandom(6).hex()}", now=now,
            window_s=self.s.address_window_s, max_accounts=self.s.address_max_accounts,
            limit=self.s.failed_login_limit, enforce=self.s.enforce,
            memory_s=self.s.failure_memory_s,
            reason=accounts.lock_reason(self.s.failed_login_limit),
            exempt=accounts.address_exempt(a.remote, self.s))

    # -- log lines ---------------------------------------------------------------------
    def _line(self, a: Attempt, v: Verdict, action: str = "", reply: str = "",
              **extra: str) -> str:
        action = action or ("monitor" if v.monitor else v.action.value)
        detail: Mapping[str, str] = {**v.detail, **extra}
        return logs.decision_line(
            queue_id="", action=action, stage="LOGIN", client_name=a.protocol or "unknown",
            client_addr=a.remote, rule=v.rule, detail=detail, sender=None,
            extra={"login": a.login}, article=v.article,
            reply=reply if v.action is not Action.ACCEPT else "")
