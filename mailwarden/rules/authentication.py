"""Authentication rules: spoofing of our own domains, DMARC, SPF fail, DNS trouble.

Input is what the checks found (auth/results.AuthResults) and whether the
sender is ours (authenticated, or a trusted host); output is one Verdict per
reason. Mail from our own senders is signed, not judged here.

* auth.local_spoof: mail from outside whose envelope sender or From: domain is
  one of ours, without an SPF pass or a valid DKIM signature of that domain
  (either may be of a subdomain within the same local domain: relaxed
  alignment), is refused 550 5.7.1.
* auth.dmarc_reject: DMARC fail where the domain's policy (after pct=) is
  reject; refused only when `dmarc_reject` is on, else logged as monitor.
* auth.spf_fail: SPF fail of a foreign envelope domain; refused only when
  `spf_fail` is "reject" (forwarders break SPF), else logged.
* auth.dns_temperror: a DNS temperror kept a check from deciding. When that
  check could have refused the message, the answer is 451 4.7.1 (or accept,
  logged, with on_dns_error = "accept"); otherwise it is only logged. Never 5xx.

* auth.unparsable_from: a From: or Sender: that is not exactly one address read
  alike by both parsers (auth/mailbox.py), or a header block too big to read to
  its end (always refused: a From: past the cap is never "not there").
* auth.display_name: a From:/Sender: of a foreign domain whose display name or
  comment shows one of our domains (also in encoded words, also with `<>`).
* auth.lookalike: a visible sender domain confusable with ours that is not ours
  (auth/lookalike.py): refused, or marked and logged (`lookalike_reject` off).
* auth.duplicate_header: a single-instance field (RFC 5322 3.6) twice in mail
  claiming our domain: a replayed signature with fields added on top.
* auth.timeout: authentication ran out of its budget before it could decide: 451.

Our domains are claimed by the envelope sender (an unqualified one is ours: Postfix
appends $myorigin after the milter), From:, Sender: and Resent-From:. Alignment of
the vouching SPF/DKIM domain with the claimed one is DMARC's (RFC 7489 3.1):
`strict` = the same domain; `relaxed` = the same or a parent domain within our
local domain; a subdomain vouches for its parent only with
`subdomains_vouch_for_parent`. A DNS temperror on our own domain defers (451)
whatever `dns_error_defer` says: an outage never weakens the spoof check.

Domains with no SPF, DKIM or DMARC records (most of the world) never cause a
refusal: "none" is not "fail".
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden.addresses import in_domains
from mailwarden.auth.lookalike import ascii_form, resembles, text_mentions
from mailwarden.auth.results import AuthResults, Result
from mailwarden.verdict import Verdict, accept, defer, monitored, reject, reply_safe, rule_id

LOCAL_SPOOF = rule_id("auth.local_spoof")
DMARC_REJECT = rule_id("auth.dmarc_reject")
SPF_FAIL = rule_id("auth.spf_fail")
DNS_TEMPERROR = rule_id("auth.dns_temperror")
UNPARSABLE_FROM = rule_id("auth.unparsable_from")
DISPLAY_NAME = rule_id("auth.display_name")
LOOKALIKE = rule_id("auth.lookalike")
DUPLICATE_HEADER = rule_id("auth.duplicate_header")
TIMEOUT = rule_id("auth.timeout")
RULE_IDS = (LOCAL_SPOOF, DMARC_REJECT, SPF_FAIL, DNS_TEMPERROR, UNPARSABLE_FROM,
            DISPLAY_NAME, LOOKALIKE, DUPLICATE_HEADER, TIMEOUT)


@dataclass(frozen=True)
class AuthRuleSettings:
    local_domains: tuple[str, ...]
    include_subdomains: bool
    citation: str  # e.g. "QD 162/2025/QD-UBND Dieu 10.2.d"
    enforce: bool = True  # auth.mode: false = log what would be refused, refuse nothing
    dmarc_reject: bool = False  # honour p=reject
    spf_fail_reject: bool = False  # refuse SPF fail of foreign domains
    dns_error_defer: bool = True  # a deciding DNS temperror: 451 (true) or accept and log
    strict_alignment: bool = False  # auth.alignment = "strict": only the same domain vouches
    subdomains_vouch_for_parent: bool = False  # an SPF/DKIM pass of a.b vouches for b
    lookalike_reject: bool = True  # auth.lookalike: reject (true) or mark and log
    unparsable_reject: bool = True  # auth.unparsable_from: reject (true) or log


def _shown(text: str) -> str:
    """A domain or address from the message, fit for the reply text (printable ASCII,
    no '%' or '"', bounded): the log line carries it exactly, escaped."""
    return reply_safe(text, 100, unsafe='%"')


def _logged(rule: str, citation: str, detail: dict[str, str]) -> Verdict:
    return accept(rule, "logged", citation, detail=detail)


def _cover(domain: str, s: AuthRuleSettings) -> str:
    """The local domain entry `domain` belongs to ("" when it is not ours)."""
    for local in s.local_domains:
        if in_domains(domain, (local,), s.include_subdomains):
            return local
    return ""


def vouches(other: str, domain: str, s: AuthRuleSettings) -> bool:
    """Does an SPF/DKIM pass for `other` vouch for our `domain` (alignment, RFC 7489 3.1)?"""
    other = other.lower().rstrip(".")
    if not other:
        return False
    if other == domain:
        return True
    if s.strict_alignment or not s.include_subdomains:
        return False
    cover = _cover(domain, s)
    if _cover(other, s) != cover:
        return False
    if domain.endswith("." + other):  # the parent vouches for its subdomains
        return True
    return s.subdomains_vouch_for_parent  # a sibling or a subdomain: only when configured


def _spoof_check(domain: str, r: AuthResults, s: AuthRuleSettings) -> Result:
    """PASS if SPF or DKIM vouches for `domain` (aligned, see `vouches`), TEMPERROR
    if a DNS failure (or the budget) kept one from doing so, else FAIL."""

    def same(other: str) -> bool:
        return vouches(other, domain, s)

    spf = r.spf
    if spf is not None and spf.result is Result.PASS and same(spf.domain):
        return Result.PASS
    if any(k.result is Result.PASS and same(k.domain) for k in r.dkim):
        return Result.PASS
    if (spf is not None and spf.result is Result.TEMPERROR and same(spf.domain)) or \
            any(k.result is Result.TEMPERROR and same(k.domain) for k in r.dkim):
        return Result.TEMPERROR
    return Result.FAIL


def _temperror(r: AuthResults, s: AuthRuleSettings, deciding: bool,
               why: str, ours: bool = False) -> Verdict:
    detail = {"why": why, "checks": r.summary()}
    if deciding and (s.dns_error_defer or ours):
        return defer(DNS_TEMPERROR, "Loi DNS tam thoi khi xac thuc nguoi gui, vui long thu "
                     "lai sau. Temporary DNS failure authenticating the sender, try again "
                     "later", s.citation, detail=detail)
    return _logged(DNS_TEMPERROR, s.citation, detail)


def decide(r: AuthResults, s: AuthRuleSettings) -> list[Verdict]:
    """Every reason to refuse, defer or log this message from outside (our own
    senders' mail is signed, not judged: the engine does not call this for it)."""
    out: list[Verdict] = []
    temperrors: list[tuple[bool, str]] = []
    out.extend(_header_checks(r, s))

    where_claimed: dict[str, list[str]] = {}
    if r.mail_from_domain:
        where_claimed.setdefault(r.mail_from_domain, []).append("envelope sender")
    for f in r.senders:
        for cd in f.claimed:
            where_claimed.setdefault(cd, []).append(f"{f.name}:")
    for fd in r.from_domains:  # callers that fill only from_domains
        where_claimed.setdefault(fd, []).append("From:")
    claimed = [d for d in where_claimed if d and _cover(d, s)]
    local_temperror = False
    for domain in claimed:
        outcome = _spoof_check(domain, r, s)
        if outcome is Result.TEMPERROR:
            local_temperror = True
            temperrors.append((True, f"authenticating local domain {domain}"))
        elif outcome is Result.FAIL:
            where = " and ".join(dict.fromkeys(where_claimed[domain]))
            shown = _shown(domain)
            out.append(reject(
                LOCAL_SPOOF, f"Thu mao danh ten mien {shown}: khong co SPF pass hay chu ky "
                f"DKIM hop le cua {shown} ({s.citation}). Message claims to be from "
                f"{shown} but is not authenticated by SPF or DKIM", s.citation,
                domain=domain, claimed_in=where, checks=r.summary()))
            break  # one refusal says it; the log line carries the checks

    if claimed and r.duplicates:
        names = ", ".join(r.duplicates)
        out.append(reject(
            DUPLICATE_HEADER, f"Thu nhan danh {_shown(claimed[0])} co truong tieu de lap "
            f"lai ({_shown(names)}) ({s.citation}). Header fields that occur once "
            f"appear twice in mail claiming {_shown(claimed[0])}", s.citation,
            domain=claimed[0], fields=names))

    spf = r.spf
    if spf is not None and spf.domain and not _cover(spf.domain, s):
        if spf.result is Result.FAIL:
            detail = {"domain": spf.domain, "client": r.client_ip, "identity": spf.identity}
            if s.spf_fail_reject:
                shown, client = _shown(spf.domain), _shown(r.client_ip)
                out.append(reject(
                    SPF_FAIL, f"Ten mien {shown} khong cho phep may {client} gui "
                    f"thu (SPF fail) ({s.citation}). SPF of {shown} does not "
                    f"authorize host {client}", s.citation, detail=detail))
            else:
                out.append(_logged(SPF_FAIL, s.citation, detail))
        elif spf.result is Result.TEMPERROR:
            temperrors.append((s.spf_fail_reject, f"SPF of {spf.domain}: {spf.reason}"))

    d = r.dmarc
    if d is not None and not _cover(d.from_domain, s):
        if d.result is Result.FAIL and d.disposition == "reject":
            shown = _shown(d.from_domain)
            v = reject(DMARC_REJECT, f"Thu khong qua kiem tra DMARC; chinh sach cua "
                       f"{shown} la tu choi ({s.citation}). DMARC policy of "
                       f"{shown} rejects this unauthenticated message", s.citation,
                       domain=d.from_domain, policy=d.policy, checks=r.summary())
            out.append(monitored(v, s.dmarc_reject))
        elif d.result is Result.TEMPERROR:
            temperrors.append((s.dmarc_reject, f"DMARC of {d.from_domain}: {d.reason}"))

    if r.timed_out:
        out.append(defer(TIMEOUT, "Khong xac thuc kip nguoi gui, vui long thu lai sau. "
                         "Sender authentication took too long, try again later",
                         s.citation, step=r.timed_out, checks=r.summary()))
    elif temperrors:
        deciding = [why for decides, why in temperrors if decides]
        out.append(_temperror(r, s, bool(deciding),
                              "; ".join(deciding or [why for _, why in temperrors]),
                              ours=local_temperror))

    return [monitored(v, s.enforce) for v in out]


def _header_checks(r: AuthResults, s: AuthRuleSettings) -> list[Verdict]:
    """What a reader sees in From:/Sender:/Resent-From: (mail from outside)."""
    out: list[Verdict] = []
    local = s.local_domains
    if not r.headers_complete:
        out.append(reject(
            UNPARSABLE_FROM, f"Khong doc duoc tieu de thu de xac dinh nguoi gui "
            f"({s.citation}). Header block too large to find the sender", s.citation,
            why="header block over the reading cap"))
    for f in r.senders:
        own = bool(f.domain) and bool(_cover(ascii_form(f.domain), s))
        mentioned = "" if own else text_mentions(f.display, local)
        if mentioned:
            out.append(reject(
                DISPLAY_NAME, f"Ten hien thi cua {f.name} mao danh {_shown(mentioned)} "
                f"({s.citation}). The {f.name} display name impersonates "
                f"{_shown(mentioned)}", s.citation, field=f.name, domain=mentioned,
                display=f.display[:200], sender_domain=ascii_form(f.domain)))
        if not f.parsed and f.name in ("From", "Sender"):
            v = reject(UNPARSABLE_FROM, f"Khong xac dinh duoc dia chi nguoi gui trong "
                       f"{f.name} ({s.citation}). The {f.name} field is not exactly one "
                       "address", s.citation, field=f.name, claimed=",".join(f.claimed))
            out.append(v if s.unparsable_reject else _logged(UNPARSABLE_FROM, s.citation,
                                                              v.detail))
        if f.domain:
            like = resembles(f.domain, local, s.include_subdomains)
            if like:
                detail = {"field": f.name, "domain": ascii_form(f.domain), "resembles": like}
                if s.lookalike_reject:
                    out.append(reject(
                        LOOKALIKE, f"Ten mien nguoi gui {_shown(ascii_form(f.domain))} gia "
                        f"mao {_shown(like)} ({s.citation}). The sender domain is a "
                        f"look-alike of {_shown(like)}", s.citation, detail=detail))
                else:
                    out.append(accept(LOOKALIKE, "marked", s.citation, detail=detail))
    return out
