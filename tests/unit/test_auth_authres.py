"""Authentication-Results: the field we write, and finding forged ones."""

from __future__ import annotations

import pytest

from mailwarden.auth import authres
from mailwarden.auth.results import AuthResults, DkimCheck, DmarcCheck, Result, SpfCheck
from mailwarden.auth.verify import read_headers

ID = "mx.ninhbinh.gov.vn"


def results(**kw: object) -> AuthResults:
    base: dict[str, object] = {"client_ip": "203.0.113.5", "mail_from_domain": "example.org",
                               "from_domains": ("example.org",)}
    base.update(kw)
    return AuthResults(**base)  # type: ignore[arg-type]


def unfold(value: str) -> str:
    return " ".join(value.replace("\r\n", " ").split())


def test_full_field() -> None:
    r = results(
        spf=SpfCheck(Result.PASS, "mailfrom", "example.org", "bounce@example.org", "h",
                     "sender SPF authorized"),
        dkim=(DkimCheck(Result.PASS, "example.org", "s1", "rsa-sha256", "@example.org",
                        "ab/cd+EF"),
              DkimCheck(Result.FAIL, "example.org", "s2", "ed25519-sha256", "", "XyZ12345",
                        "body hash mismatch")),
        dmarc=DmarcCheck(Result.PASS, "example.org", "example.org", "reject", "none",
                         True, True))
    field = authres.render(r, ID)
    assert field.name == "Authentication-Results"
    assert unfold(field.value) == (
        "mx.ninhbinh.gov.vn; spf=pass (sender SPF authorized) smtp.mailfrom=bounce@example.org;"
        ' dkim=pass header.d=example.org header.s=s1 header.a=rsa-sha256 header.b="ab/cd+EF";'
        " dkim=fail (body hash mismatch) header.d=example.org header.s=s2"
        " header.a=ed25519-sha256 header.b=XyZ12345;"
        " dmarc=pass (p=reject dis=none) header.from=example.org")
    # Folded on CRLF + TAB for the wire; LF + TAB for the milter (Postfix wants LF).
    assert "\r\n\t" in field.value and "\n\t" in field.milter_value
    assert "\r" not in field.milter_value
    assert all(len(line) < 998 for line in field.as_bytes().split(b"\r\n"))


def test_null_sender_uses_smtp_helo_and_no_signature_says_none() -> None:
    r = results(mail_from_domain="", spf=SpfCheck(Result.NONE, "helo", "mx.example.org", "",
                                                  "mx.example.org"),
                dmarc=DmarcCheck(Result.NONE, "example.org", reason="no DMARC record"))
    assert unfold(authres.render(r, ID).value) == (
        "mx.ninhbinh.gov.vn; spf=none smtp.helo=mx.example.org; dkim=none (no signatures);"
        " dmarc=none (no DMARC record) header.from=example.org")


def test_nothing_checked_is_none() -> None:
    assert authres.render(None, ID).value == "mx.ninhbinh.gov.vn; none"


@pytest.mark.parametrize(("sender", "written"), [
    ("plain.user@example.org", "smtp.mailfrom=plain.user@example.org"),
    ('"odd user"@example.org', "smtp.mailfrom=example.org"),  # local part dropped
    ("x(y)@example.org", "smtp.mailfrom=example.org"),
    ("a@bad domain;dkim=pass", 'smtp.mailfrom="a@bad domain;dkim=pass"'),
])
def test_hostile_values_cannot_forge_results(sender: str, written: str) -> None:
    r = results(spf=SpfCheck(Result.FAIL, "mailfrom", "x", sender, "h",
                             "reason (with) parens\r\nand; a fake dkim=pass"))
    value = unfold(authres.render(r, ID).value)
    assert written in value
    assert "(reason with parens and; a fake dkim=pass)" in value
    # Nothing from outside ends up as a resinfo of its own.
    assert methods(value) == ["spf", "dkim"]


def methods(value: str) -> list[str]:
    """The method of each resinfo, splitting on ';' outside comments and quotes."""
    parts, current, depth, quoted, escaped = [], "", 0, False, False
    for c in value:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif quoted:
            quoted = c != '"'
        elif c == '"' and not depth:
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == ";" and not depth:
            parts.append(current)
            current = ""
            continue
        current += c if not depth and c not in "()" else ""
    parts.append(current)
    return [p.split("=")[0].strip() for p in parts[1:]]


def test_methods_helper_sees_an_unescaped_forgery() -> None:
    assert methods("id; spf=pass x=(a; b) y; dkim=pass; dmarc=fail") == ["spf", "dkim", "dmarc"]
    assert methods('id; spf=pass smtp.mailfrom="a;dkim=pass"') == ["spf"]


def test_long_comments_are_cut() -> None:
    r = results(spf=SpfCheck(Result.PERMERROR, "mailfrom", "example.org", "a@example.org",
                             "h", "x" * 500))
    assert "x" * 77 + "...)" in authres.render(r, ID).value
    assert "x" * 78 not in authres.render(r, ID).value


@pytest.mark.parametrize(("value", "claimed"), [
    ("mx.ninhbinh.gov.vn; spf=pass smtp.mailfrom=a@b", "mx.ninhbinh.gov.vn"),
    ("  MX.NINHBINH.GOV.VN 1; dkim=pass", "MX.NINHBINH.GOV.VN"),
    ("(forged (nested) comment) mx.ninhbinh.gov.vn;none", "mx.ninhbinh.gov.vn"),
    ('"mx.ninhbinh.gov.vn"; none', "mx.ninhbinh.gov.vn"),
    ("mx.ninhbinh.gov.vn(comment); none", "mx.ninhbinh.gov.vn"),
    ("mx.google.com; dkim=pass header.d=ninhbinh.gov.vn", "mx.google.com"),
    ("", ""),
])
def test_authserv_id_of(value: str, claimed: str) -> None:
    assert authres.authserv_id_of(value) == claimed


def test_forged_fields_are_found_by_position_among_their_name() -> None:
    raw = (b"Received: from x\r\n"
           b"Authentication-Results: mx.google.com; spf=pass\r\n"
           b"authentication-results: mx.ninhbinh.gov.vn;\r\n"
           b"\tdkim=pass header.d=ninhbinh.gov.vn\r\n"
           b"Subject: Authentication-Results: mx.ninhbinh.gov.vn\r\n"
           b"Authentication-Results: (x) mx.ninhbinh.gov.vn. 1; spf=pass\r\n"
           b"Authentication-Results: mx.ninhbinh.gov.vn.evil.example; spf=pass\r\n"
           b"\r\n"
           b"Authentication-Results: mx.ninhbinh.gov.vn; in the body, not a header\r\n")
    headers = read_headers(raw)
    assert authres.forged_indices(headers, "mx.ninhbinh.gov.vn") == [2, 3]
    assert authres.forged_indices(headers, "mx.google.com") == [1]
    assert authres.forged_indices(headers, "other.example") == []


@pytest.mark.parametrize("good", ["mx.ninhbinh.gov.vn", "mail1", "mx.example.org."])
def test_authserv_id_check_accepts_host_names(good: str) -> None:
    authres.check_authserv_id(good)


@pytest.mark.parametrize("bad", ["", "mx ninhbinh", "mx;x", '"quoted"', "-mx.example"])
def test_authserv_id_check_refuses_the_rest(bad: str) -> None:
    with pytest.raises(ValueError, match="authserv-id"):
        authres.check_authserv_id(bad)
