"""Verdict: what a rule decided, with everything the reply and the log need."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace


class Action(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    DEFER = "defer"  # temporary failure: 4xx, the client keeps the mail


@dataclass(frozen=True)
class Verdict:
    action: Action
    rule: str  # stable dotted id, e.g. "ratelimit.external_recipients"
    smtp_code: int  # 550, 552, 451 ...
    enhanced_code: str  # RFC 3463, e.g. "5.7.1"
    text: str  # ASCII reply text, names the rule and cites the article
    article: str = ""  # e.g. "QD 162/2025/QD-UBND Dieu 7.2.b"
    # Extra key=value pairs for the decision log line (never sent to the client).
    detail: dict[str, str] = field(default_factory=dict)
    monitor: bool = False  # decided in monitor mode: logged, not enforced

    @property
    def reply(self) -> str:
        return f"{self.smtp_code} {self.enhanced_code} {self.text}"

    @property
    def enforced(self) -> bool:
        return self.action is not Action.ACCEPT and not self.monitor


def reject(rule: str, text: str, article: str = "", *, code: int = 550,
           enhanced: str = "5.7.1", detail: Mapping[str, str] | None = None,
           **extra: str) -> Verdict:
    return Verdict(Action.REJECT, rule, code, enhanced, text, article,
                   {**(detail or {}), **extra})


def defer(rule: str, text: str, article: str = "", *, code: int = 451,
          enhanced: str = "4.7.1", detail: Mapping[str, str] | None = None,
          **extra: str) -> Verdict:
    return Verdict(Action.DEFER, rule, code, enhanced, text, article,
                   {**(detail or {}), **extra})


def reply_safe(text: str, limit: int, *, unsafe: str = "") -> str:
    """Text from a message or an operator, fit for an SMTP reply: printable ASCII only
    (anything else, and the characters in `unsafe`, become "?"), at most `limit`
    characters ("..." marks a cut)."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F and c not in unsafe else "?" for c in text)
    return clean if len(clean) <= limit else clean[: max(0, limit - 3)] + "..."


def accept(rule: str, text: str = "logged", article: str = "", *,
           detail: Mapping[str, str] | None = None, **extra: str) -> Verdict:
    """A finding to log without refusing (the reply stays 250)."""
    return Verdict(Action.ACCEPT, rule, 250, "2.0.0", text, article, {**(detail or {}), **extra})


def monitored(v: Verdict, enforce: bool) -> Verdict:
    """In monitor mode a refusal is logged as what would have happened, not enforced."""
    if enforce or v.action is Action.ACCEPT:
        return v
    return replace(v, monitor=True)


# -- the registry of rule ids ------------------------------------------------------------
@dataclass(frozen=True)
class RuleInfo:
    id: str
    where: str  # which daemon decides it: "policyd", "milter", "both"
    stage: str  # SMTP stage(s) it acts at
    article: str  # the Profile attribute cited ("" = cites nothing: not a regulation)
    summary: str  # one line for docs/rules.md


_REGISTRY = (
    RuleInfo("ratelimit.external_recipients", "policyd", "RCPT", "ratelimit_article",
             "Over the limit of external recipients per window: refused, account locked."),
    RuleInfo("account.locked", "policyd", "RCPT", "lock_article",
             "Any send by a locked account (rate lock: lock_article; operator lock: "
             "manual_lock_article); mail to it is delivered."),
    RuleInfo("ratelimit.backend_error", "policyd", "RCPT, END-OF-MESSAGE", "",
             "Redis unreachable or slow: 451 or accept-unchecked per policyd.on_redis_error."),
    RuleInfo("account.login_locked", "authpolicy", "LOGIN", "login_lock_article",
             "A login to a locked account (any kind of lock), refused before the password is "
             "checked, with why (accounts.lock_refuses_login); mail to it is delivered."),
    RuleInfo("account.failed_logins", "authpolicy", "LOGIN", "failed_login_article",
             "The failed login that reaches accounts.failed_login_limit consecutive ones: "
             "the account is locked (kind failed-logins) until an operator unlocks it."),
    RuleInfo("account.login_throttled", "authpolicy", "LOGIN", "",
             "Logins from an address with recent failures are delayed; an address that "
             "failed against too many accounts is refused (abuse guard, docs/accounts.md)."),
    RuleInfo("account.inactive", "cli", "mailwarden inactive", "inactive_article",
             "No login (or send) for the profile's months: listed; locked (kind inactive) "
             "with --lock or accounts.inactive_auto_lock."),
    RuleInfo("attachment.executable", "milter", "EOM", "executable_article",
             "An executable by content or name, also inside archives."),
    RuleInfo("attachment.encrypted_archive", "milter", "EOM", "encrypted_article",
             "A password-protected archive."),
    RuleInfo("attachment.encrypted_document", "milter", "EOM", "encrypted_article",
             "A password-protected Office document or PDF: logged, or refused by config."),
    RuleInfo("attachment.uninspectable", "milter", "EOM", "executable_article",
             "Content that could not be inspected (cap, budget, corrupt): refused by "
             "default (attachments.uninspectable)."),
    RuleInfo("attachment.size", "milter", "MAIL, EOM", "size_article",
             "Attachments over the cap (552 5.3.4), or a SIZE= that can never pass."),
    RuleInfo("av.infected", "milter", "EOM", "antivirus_article",
             "clamd found a virus or malware."),
    RuleInfo("av.unavailable", "milter", "EOM", "",
             "clamd down, timing out or failing: 451 or accept-unscanned per "
             "antivirus.on_clamd_error."),
    RuleInfo("forward.external_auto", "milter", "EOM", "forwarding_article",
             "Automatic forwarding from our mailbox to a non-state mailbox."),
    RuleInfo("forward.inbound_auto", "milter", "EOM", "forwarding_article",
             "Automatic forwarding from a private mailbox into one of ours."),
    RuleInfo("auth.local_spoof", "milter", "EOM", "auth_article",
             "Mail from outside claiming our domain without SPF or DKIM of it."),
    RuleInfo("auth.dmarc_reject", "milter", "EOM", "auth_article",
             "DMARC fail with p=reject of a foreign domain (refused when auth.dmarc_reject)."),
    RuleInfo("auth.spf_fail", "milter", "EOM", "auth_article",
             "SPF fail of a foreign domain (refused when auth.spf_fail = reject)."),
    RuleInfo("auth.dns_temperror", "milter", "EOM", "auth_article",
             "A DNS failure kept a deciding check from deciding: 451 (auth.on_dns_error)."),
    RuleInfo("auth.unparsable_from", "milter", "EOM", "auth_article",
             "A From:/Sender: that is not exactly one address (refused by default, "
             "auth.unparsable_from), or a header block too large to read."),
    RuleInfo("auth.display_name", "milter", "EOM", "auth_article",
             "Mail from outside whose From:/Sender: display name shows one of our domains."),
    RuleInfo("auth.lookalike", "milter", "EOM", "auth_article",
             "A sender domain confusable with ours (Unicode, punycode): refused or marked "
             "(auth.lookalike)."),
    RuleInfo("auth.duplicate_header", "milter", "EOM", "auth_article",
             "A single-instance header field twice in mail claiming our domain (replay)."),
    RuleInfo("auth.timeout", "milter", "EOM", "auth_article",
             "Authentication ran out of auth.budget before deciding: 451."),
    RuleInfo("content.timeout", "milter", "EOM", "",
             "Inspection and scanning ran out of milter.content_budget: 451."),
    RuleInfo("internal.error", "both", "any", "",
             "A bug or OS error while deciding: 451 by default (failure.on_internal_error)."),
)
RULES: dict[str, RuleInfo] = {r.id: r for r in _REGISTRY}


def rule_id(name: str) -> str:
    """A registered rule id (rule modules declare their ids through this)."""
    if name not in RULES:
        raise KeyError(f"rule id {name!r} is not in verdict.RULES")
    return name


def citation_field(rule: str) -> str:
    """The Profile attribute a rule cites."""
    return RULES[rule].article


def rules_markdown() -> str:
    """docs/rules.md, generated from the registry (`mailwarden config rules`)."""
    out = ["# Rule ids", "",
           "Generated from the registry in `mailwarden/verdict.py` by `mailwarden config "
           "rules`; a test fails if this file drifts. Every decision log line names its "
           "rule id in its `rule` field; the article cited is the profile field named here "
           "(`conf/profiles/*.toml`).", "",
           "| rule id | daemon | stage | article (profile field) | meaning |",
           "|---|---|---|---|---|"]
    for r in _REGISTRY:
        article = f"`{r.article}`" if r.article else "-"
        out.append(f"| `{r.id}` | {r.where} | {r.stage} | {article} | {r.summary} |")
    return "\n".join(out) + "\n"
