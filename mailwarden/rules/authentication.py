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

Domains with no SPF, DKIM or DMARC records (most of the world) never cause a
refusal: "none" is not "fail".
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden.addresses import in_domains
from mailwarden.auth.results import AuthResults, Result
from mailwarden.verdict import Verdict, accept, defer, monitored, reject, reply_safe, rule_id

LOCAL_SPOOF = rule_id("auth.local_spoof")
DMARC_REJECT = rule_id("auth.dmarc_reject")
SPF_FAIL = rule_id("auth.spf_fail")
DNS_TEMPERROR = rule_id("auth.dns_temperror")
RULE_IDS = (LOCAL_SPOOF, DMARC_REJECT, SPF_FAIL, DNS_TEMPERROR)


@dataclass(frozen=True)
class AuthRuleSettings:
    local_domains: tuple[str, ...]
    include_subdomains: bool
    citation: str  # e.g. "QD 162/2025/QD-UBND Dieu 10.2.d"
    enforce: bool = True  # auth.mode: false = log what would be refused, refuse nothing
    dmarc_reject: bool = False  # honour p=reject
    spf_fail_reject: bool = False  # refuse SPF fail of foreign domains
    dns_error_defer: bool = True  # a deciding DNS temperror: 451 (true) or accept and log


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


def _spoof_check(domain: str, r: AuthResults, s: AuthRuleSettings) -> Result:
    """PASS if SPF or DKIM vouches for `domain` (within its local domain), TEMPERROR
    if a DNS failure kept one from doing so, else FAIL."""
    cover = _cover(domain, s)

    def same(other: str) -> bool:
        return bool(other) and (other == domain or _cover(other, s) == cover)

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
               why: str) -> Verdict:
    detail = {"why": why, "checks": r.summary()}
    if deciding and s.dns_error_defer:
        return defer(DNS_TEMPERROR, "Loi DNS tam thoi khi xac thuc nguoi gui, vui long thu "
                     "lai sau. Temporary DNS failure authenticating the sender, try again "
                     "later", s.citation, detail=detail)
    return _logged(DNS_TEMPERROR, s.citation, detail)


def decide(r: AuthResults, s: AuthRuleSettings) -> list[Verdict]:
    """Every reason to refuse, defer or log this message from outside (our own
    senders' mail is signed, not judged: the engine does not call this for it)."""
    out: list[Verdict] = []
    temperrors: list[tuple[bool, str]] = []

    claimed = [d for d in dict.fromkeys((r.mail_from_domain, *r.from_domains))
               if d and _cover(d, s)]
    for domain in claimed:
        outcome = _spoof_check(domain, r, s)
        if outcome is Result.TEMPERROR:
            temperrors.append((True, f"authenticating local domain {domain}"))
        elif outcome is Result.FAIL:
            where = "envelope sender" if domain == r.mail_from_domain else "From:"
            if domain == r.mail_from_domain and domain in r.from_domains:
                where = "envelope sender and From:"
            shown = _shown(domain)
            out.append(reject(
                LOCAL_SPOOF, f"Thu mao danh ten mien {shown}: khong co SPF pass hay chu ky "
                f"DKIM hop le cua {shown} ({s.citation}). Message claims to be from "
                f"{shown} but is not authenticated by SPF or DKIM", s.citation,
                domain=domain, claimed_in=where, checks=r.summary()))
            break  # one refusal says it; the log line carries the checks

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

    if temperrors:
        deciding = [why for decides, why in temperrors if decides]
        out.append(_temperror(r, s, bool(deciding),
                              "; ".join(deciding or [why for _, why in temperrors])))

    return [monitored(v, s.enforce) for v in out]
