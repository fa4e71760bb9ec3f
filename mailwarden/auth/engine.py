"""The one call the milter makes at end of message: sign ours, check theirs.

    auth = Authenticator.from_config(cfg)        # at start: DkimKeyError/ValueError = fatal
    outcome = auth.process(spool, client_ip=..., helo=..., mail_from=..., ours=...,
                           deadline=...)   # time.monotonic() value; auth.budget applies too
    # outcome.verdicts -> the milter's _apply (with the content verdicts)
    # for (name, index) in outcome.remove_headers: chgheader(name, index, "")
    # for field in outcome.add_headers: insheader(0, field.name, field.milter_value)
    #     (add_headers is in top-down order: insert the last one first, or the
    #      list reversed at index 0, so add_headers[0] ends on top)

Our own senders' mail (authenticated, or from a trusted host) is signed with the
From: domain's keys; everything else is authenticated (SPF, DKIM, DMARC), gets
our Authentication-Results field, and goes through rules/authentication.py. Any
incoming Authentication-Results field claiming our authserv-id is removed from
every message (deleted by descending index: Postfix renumbers after each deletion).

Every message is authenticated, whatever its size: above `auth.max_message_bytes`
only the header block is read (forged Authentication-Results removed, our field
added, SPF, the sender-field checks, DMARC on SPF alone) and DKIM is not verified
(a signature over a prefix is not a valid signature; nothing vouches by DKIM), nor
signed. Work stops at the deadline: the earlier of the caller's and `auth.budget`
from the call; running out is `auth.timeout` (451), never a pass.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import dkim

from mailwarden.auth import authres
from mailwarden.auth.dkim_sign import DkimSignError, KeyRing, load_keys
from mailwarden.auth.dmarc import PublicSuffixes
from mailwarden.auth.dns import Lookup, Resolver
from mailwarden.auth.lookalike import ascii_form
from mailwarden.auth.results import AuthResults, HeaderField
from mailwarden.auth.verify import VerifySettings, authenticate, from_domains, read_block
from mailwarden.rules import authentication
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.verdict import Action, Verdict

WARNING_HEADER = "X-Mailwarden-Warning"

if TYPE_CHECKING:
    from mailwarden.settings import Settings


@dataclass(frozen=True)
class AuthSettings:
    authserv_id: str
    verify: bool  # check inbound mail (auth.enabled)
    checks: VerifySettings
    rules: AuthRuleSettings
    psl: PublicSuffixes
    max_message_bytes: int = 16 * 1024 * 1024  # DKIM (sign and verify) only up to this
    budget_s: float = 25.0  # all authentication of one message


@dataclass
class AuthOutcome:
    verdicts: list[Verdict] = field(default_factory=list)
    add_headers: list[HeaderField] = field(default_factory=list)  # top-down order
    remove_headers: list[tuple[str, int]] = field(default_factory=list)  # (name, 1-based)
    results: AuthResults | None = None  # None for our own senders
    signed: tuple[str, ...] = ()  # "d=ninhbinh.gov.vn s=mail2025 a=rsa-sha256", ...
    note: str = ""  # why ours was not signed, for the log
    elapsed_s: float = 0.0
    oversize: int = 0  # the message's size when over max_message_bytes (DKIM skipped)

    def log_detail(self) -> dict[str, str]:
        """key=value pairs for the decision log line."""
        out: dict[str, str] = {}
        if self.results is not None:
            out["auth"] = self.results.summary()
        if self.signed:
            out["dkim_signed"] = ",".join(self.signed)
        if self.note:
            out["dkim_note"] = self.note
        if self.remove_headers:
            out["removed_authres"] = str(len(self.remove_headers))
        if self.oversize:
            out["dkim_skipped_size"] = str(self.oversize)
        return out


class Authenticator:
    def __init__(self, settings: AuthSettings, lookup: Lookup, keys: KeyRing | None = None,
                 *, rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.lookup = lookup
        self.keys = keys or KeyRing()
        self.rand = rand
        self.clock = clock

    @classmethod
    def from_config(cls, cfg: Any) -> Authenticator:
        from mailwarden.settings import Settings

        return cls.from_settings(Settings.from_config(cfg))

    @classmethod
    def from_settings(cls, s: Settings) -> Authenticator:
        """Build from the [dns], [auth] and [dkim] settings (docs/authentication.md).

        Reads the DKIM keys and the public suffix list: raises DkimKeyError or
        OSError/ValueError with the file and the reason, to be fatal at start.
        """
        a, d = s.auth, s.auth.dns
        resolver = Resolver(list(d.nameservers), timeout_s=d.timeout_s, attempts=d.attempts,
                            cache_size=d.cache_size, max_ttl_s=d.max_ttl_s)
        settings = AuthSettings(
            authserv_id=a.authserv_id or socket.gethostname(),
            verify=a.enabled,
            checks=VerifySettings(spf_budget_s=a.spf_budget_s, max_signatures=a.max_signatures),
            rules=s.auth_rules,
            psl=PublicSuffixes.from_setting(a.public_suffix_file),
            max_message_bytes=a.max_message_bytes,
            budget_s=a.budget_s,
        )
        return cls(settings, resolver, load_keys(list(a.dkim_keys)))

    def process(self, message: BinaryIO | bytes, *, client_ip: str, helo: str,
                mail_from: str, ours: bool, deadline: float | None = None) -> AuthOutcome:
        start = self.clock()
        until = start + self.settings.budget_s
        if deadline is not None:
            until = min(until, deadline)
        size = _size(message)
        out = AuthOutcome()
        big = size > self.settings.max_message_bytes
        if big:
            out.oversize = size
        block = read_block(message)
        headers = block.fields
        # descending: Postfix renumbers the fields after each deletion
        out.remove_headers = [(authres.NAME, i) for i in sorted(
            authres.forged_indices(headers, self.settings.authserv_id), reverse=True)]
        if ours:
            if big:
                out.note = f"message of {size} bytes over auth.max_message_bytes"
            elif self.keys.keys:  # no DKIM keys: nothing to sign, the body is not read
                self._sign(_read(message), headers, out)
        elif self.settings.verify:
            skipped = f"message of {size} bytes not verified" if big else ""
            raw = b"" if big else _read(message)
            results = authenticate(raw, self.lookup, client_ip=client_ip, helo=helo,
                                   mail_from=self.qualified(mail_from),
                                   psl=self.settings.psl, settings=self.settings.checks,
                                   rand=self.rand, block=block, dkim_skipped=skipped,
                                   deadline=until, clock=self.clock)
            out.results = results
            out.add_headers.append(authres.render(results, self.settings.authserv_id))
            out.verdicts = authentication.decide(results, self.settings.rules)
            marks = [v for v in out.verdicts if v.rule == authentication.LOOKALIKE
                     and v.action is Action.ACCEPT]
            if marks:
                d = marks[0].detail
                out.add_headers.append(HeaderField(WARNING_HEADER, (
                    f"lookalike-domain; field={d.get('field', '')}; "
                    f"domain={ascii_form(d.get('domain', ''))}; "
                    f"resembles={d.get('resembles', '')}")))
        out.elapsed_s = self.clock() - start
        return out

    def qualified(self, mail_from: str) -> str:
        """The envelope sender as Postfix will make it: an unqualified one ("giamdoc",
        "giamdoc@") gets our domain ($myorigin is ours), after the milter has seen it."""
        sender = mail_from.strip().strip("<>")
        local_domains = self.settings.rules.local_domains
        if not sender or not local_domains:
            return sender
        local, at, domain = sender.rpartition("@")
        if not at:
            return f"{sender}@{local_domains[0]}"
        if not domain.strip():
            return f"{local}@{local_domains[0]}"
        return sender

    def _sign(self, raw: bytes, headers: Sequence[tuple[str, str]], out: AuthOutcome) -> None:
        if not self.keys.keys:
            return
        domains = from_domains(headers)
        if len(set(domains)) != 1:
            out.note = "no single From: domain" if domains else "no From: address"
            return
        keys = self.keys.for_domain(domains[0])
        if not keys:
            out.note = f"no key for {domains[0]}"
            return
        try:
            fields = self.keys.sign(raw, domains[0])
        except (DkimSignError, dkim.DKIMException) as e:
            out.note = f"not signed: {e}"[:200]
            return
        out.add_headers.extend(fields)
        out.signed = tuple(f"d={k.domain} s={k.selector} a={k.algorithm}" for k in keys)


def _size(message: BinaryIO | bytes) -> int:
    if isinstance(message, bytes | bytearray | memoryview):
        return len(message)
    message.seek(0, 2)
    size = message.tell()
    message.seek(0)
    return size


def _read(message: BinaryIO | bytes) -> bytes:
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    message.seek(0)
    data = message.read()
    message.seek(0)
    return data

