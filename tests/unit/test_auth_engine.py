"""The milter's one call: Authenticator.process (static DNS), and building it from config."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from mailwarden.auth.dkim_sign import DkimKeyError, keygen, load_keys
from mailwarden.auth.dmarc import PublicSuffixes
from mailwarden.auth.dns import Resolver, StaticLookup
from mailwarden.auth.engine import Authenticator, AuthSettings
from mailwarden.auth.results import Result
from mailwarden.auth.verify import VerifySettings, verify_dkim
from mailwarden.config import Config, load_config
from mailwarden.rules import authentication as rule
from mailwarden.rules.authentication import AuthRuleSettings
from mailwarden.verdict import Action

DOMAIN = "ninhbinh.gov.vn"
ID = "mx.ninhbinh.gov.vn"
CITE = "QD 162/2025/QD-UBND Dieu 10.2.d"


def message(from_addr: str, *extra: bytes) -> bytes:
    return (b"".join(extra) + f"From: {from_addr}\r\nTo: x@example.org\r\n".encode()
            + b"Subject: thong bao\r\nMessage-ID: <m1@example>\r\n\r\nNoi dung.\r\n")


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("keys")
    path, _ = keygen(DOMAIN, "mw1", d)
    return load_keys([{"domain": DOMAIN, "selector": "mw1", "key_file": str(path)}])


def settings(**rules: Any) -> AuthSettings:
    return AuthSettings(ID, True, VerifySettings(),
                        AuthRuleSettings((DOMAIN,), True, CITE, **rules),
                        PublicSuffixes.builtin())


def zone(ring: Any) -> StaticLookup:
    return StaticLookup({
        (DOMAIN, "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
        **{(k.dns_name, "TXT"): [k.txt_value()] for k in ring.keys},
    })


FORGED = b"Authentication-Results: mx.ninhbinh.gov.vn; spf=pass; dkim=pass\r\n"
THEIRS = b"Authentication-Results: mx.google.com; spf=pass\r\n"


def test_our_sender_is_signed_and_forged_results_are_removed(ring: Any) -> None:
    auth = Authenticator(settings(), zone(ring), ring)
    raw = message(f"Van Thu <vanthu@skhcn.{DOMAIN}>", THEIRS, FORGED)
    out = auth.process(raw, client_ip="10.20.30.40", helo="pc1", mail_from="", ours=True)
    assert out.verdicts == [] and out.results is None
    assert out.remove_headers == [("Authentication-Results", 2)]
    assert [f.name for f in out.add_headers] == ["DKIM-Signature"]
    assert out.signed == (f"d={DOMAIN} s=mw1 a=rsa-sha256",)
    assert out.log_detail() == {"dkim_signed": f"d={DOMAIN} s=mw1 a=rsa-sha256",
                                "removed_authres": "1"}
    delivered = out.add_headers[0].as_bytes() + raw
    (check,) = verify_dkim(delivered, zone(ring))
    assert check.result is Result.PASS


@pytest.mark.parametrize(("from_addr", "note"), [
    ("someone@gmail.com", "no key for gmail.com"),
    ("a@ninhbinh.gov.vn, b@gmail.com", "no single From: domain"),
    ("undisclosed-recipients:;", "no From: address"),
])
def test_our_sender_without_a_key_is_sent_unsigned_with_a_note(ring: Any, from_addr: str,
                                                               note: str) -> None:
    out = Authenticator(settings(), zone(ring), ring).process(
        message(from_addr), client_ip="10.0.0.1", helo="pc", mail_from="a@x", ours=True)
    assert out.add_headers == [] and out.note == note and out.verdicts == []


def test_no_keys_configured_signs_nothing_and_says_nothing(ring: Any) -> None:
    out = Authenticator(settings(), zone(ring)).process(
        message(f"a@{DOMAIN}"), client_ip="10.0.0.1", helo="pc", mail_from="", ours=True)
    assert (out.add_headers, out.note) == ([], "")


def test_spoof_from_outside_is_refused_with_results_header(ring: Any) -> None:
    auth = Authenticator(settings(), zone(ring), ring)
    out = auth.process(message(f"Giam Doc <giamdoc@{DOMAIN}>", FORGED),
                       client_ip="203.0.113.66", helo="mail.evil.example",
                       mail_from=f"giamdoc@{DOMAIN}", ours=False)
    assert [(v.rule, v.action) for v in out.verdicts] == [(rule.LOCAL_SPOOF, Action.REJECT)]
    assert out.remove_headers == [("Authentication-Results", 1)]
    (field,) = out.add_headers
    assert field.name == "Authentication-Results"
    assert field.value.startswith(f"{ID};\r\n\tspf=fail")
    assert "dmarc=fail" in field.value
    assert out.log_detail()["auth"] == "spf=fail dkim=none dmarc=fail"


def test_the_same_message_signed_by_us_passes_from_anywhere(ring: Any) -> None:
    auth = Authenticator(settings(), zone(ring), ring)
    raw = message(f"giamdoc@{DOMAIN}")
    sig = auth.process(raw, client_ip="10.0.0.1", helo="pc", mail_from="", ours=True)
    forwarded = sig.add_headers[0].as_bytes() + raw
    out = auth.process(forwarded, client_ip="203.0.113.66", helo="fwd.example",
                       mail_from=f"giamdoc@{DOMAIN}", ours=False)
    assert out.verdicts == []
    assert out.results is not None and out.results.dmarc is not None
    assert out.results.dmarc.result is Result.PASS and out.results.dmarc.dkim_aligned


def test_verification_off_still_removes_forgeries(ring: Any) -> None:
    s = settings()
    off = AuthSettings(s.authserv_id, False, s.checks, s.rules, s.psl)
    lookup = zone(ring)
    out = Authenticator(off, lookup, ring).process(
        message(f"a@{DOMAIN}", FORGED), client_ip="203.0.113.1", helo="h", mail_from="",
        ours=False)
    assert (out.verdicts, out.add_headers) == ([], [])
    assert out.remove_headers == [("Authentication-Results", 1)]
    assert lookup.asked == []


def test_reads_the_spool_and_leaves_it_rewound(ring: Any) -> None:
    with tempfile.SpooledTemporaryFile(max_size=10) as spool:
        spool.write(message("a@gmail.com"))
        out = Authenticator(settings(), StaticLookup(), ring).process(
            spool, client_ip="203.0.113.1", helo="h", mail_from="a@gmail.com", ours=False)
        assert spool.tell() == 0
    assert out.verdicts == []
    assert out.results is not None and out.results.summary() == "spf=none dkim=none dmarc=none"


AUTH_KEYS = {
    "dns.nameservers": ["127.0.0.1:5353"], "dns.timeout": 0.5, "dns.attempts": 1,
    "dns.cache_size": 100, "dns.max_ttl": 600.0,
    "auth.enabled": True, "auth.authserv_id": ID, "auth.mode": "enforce",
    "auth.spf_fail": "record", "auth.dmarc_reject": False, "auth.on_dns_error": "defer",
    "auth.spf_budget": 10.0, "auth.max_signatures": 5, "auth.public_suffix_file": "",
}


def config(**values: Any) -> Config:
    base = load_config(None)
    return Config({**base.values, **AUTH_KEYS, "dkim.keys": [], **values}, base.origins,
                  base.profile)


def test_from_config(ring: Any) -> None:
    cfg = config(**{"dkim.keys": [{"domain": DOMAIN, "selector": "mw1",
                                   "key_file": ring.keys[0].key_file}],
                    "auth.dmarc_reject": True, "auth.spf_fail": "reject"})
    auth = Authenticator.from_config(cfg)
    assert isinstance(auth.lookup, Resolver)
    assert auth.lookup.nameservers == ("127.0.0.1:5353",)
    assert auth.settings.authserv_id == ID
    assert auth.settings.checks.max_signatures == 5
    r = auth.settings.rules
    assert r.local_domains == tuple(cfg.local_domains)
    assert r.citation == cfg.profile.cite(cfg.profile.auth_article)  # its own article
    assert (r.enforce, r.dmarc_reject, r.spf_fail_reject, r.dns_error_defer) == \
        (True, True, True, True)
    assert [k.selector for k in auth.keys.keys] == ["mw1"]
    unnamed = Authenticator.from_config(config(**{"auth.authserv_id": ""}))
    assert unnamed.settings.authserv_id == socket.gethostname()
    assert unnamed.keys.keys == ()


def test_from_config_fails_on_a_missing_key(tmp_path: Path) -> None:
    cfg = config(**{"dkim.keys": [{"domain": DOMAIN, "selector": "mw1",
                                   "key_file": str(tmp_path / "gone.key")}]})
    with pytest.raises(DkimKeyError, match=r"gone\.key: no such file"):
        Authenticator.from_config(cfg)
