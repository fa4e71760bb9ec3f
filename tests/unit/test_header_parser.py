"""One parser for the top-level header block (inspect/headers.py), so the forwarding
rule sees the same fields on the milter's first pass (MIME walk) and at the final hop,
and authentication sees them too."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import pytest

from mailwarden.auth.verify import read_headers
from mailwarden.clients import clamd
from mailwarden.config import load_config
from mailwarden.engine import core as ev
from mailwarden.inspect.headers import MAX_LINE, parse_headers
from mailwarden.settings import Settings
from mailwarden.verdict import Action

AF = b"Auto-Submitted: auto-forwarded\r\n"
BODY = b"\r\nhello\r\n"

TRICKY = [
    pytest.param(b"Subject: a\r\n b\r\n\tc\r\nAuto-Submitted: auto-\r\n forwarded\r\n"
                 b"From: x@gmail.com\r\n" + BODY, id="folded lines"),
    pytest.param(b"X-A: 1\r\nthis line has no colon\r\n" + AF + BODY, id="header without colon"),
    pytest.param(AF + b"From: a@gmail.com\r\nAuto-Submitted: no\r\nFrom: b@gmail.com\r\n" + BODY,
                 id="duplicate headers"),
    pytest.param(b"Subject: \xff\xfe caf\xc3\xa9\r\nX-\xe9: v\r\n" + AF + BODY,
                 id="8-bit bytes"),
    pytest.param(b"Subject: a\n b\nAuto-Submitted: auto-forwarded\nFrom: x@gmail.com\n\nhi\n",
                 id="LF line ends"),
    pytest.param(b"Subject: a\r\n b\nAuto-Submitted: auto-forwarded\r\n\nhi\r\n",
                 id="mixed CRLF and LF"),
    pytest.param(b" Leading: folded first line\r\n" + AF + BODY, id="obs-fold on the first line"),
    pytest.param(b"\tX-Tab: x\r\n \r\n" + AF + BODY, id="whitespace-only first lines"),
    pytest.param(b"From mailer@x Mon Jan  1 12:00:00 2026\r\n" + AF + BODY, id="mbox From line"),
    pytest.param(b"X-Long: " + b"a" * (MAX_LINE + 100) + b"\r\n" + AF + BODY,
                 id="line longer than one read"),
    pytest.param(AF + b"X-B: 2\r\nno separator, a body glued on\r\nmore body\r\n",
                 id="no blank line before the body"),
    pytest.param(AF + b"Subject: x", id="no final newline"),
    pytest.param(AF + b"X-Empty:\r\nX-Space:   \r\n" + BODY, id="empty values"),
    pytest.param(b"Auto-Submitted : auto-forwarded\r\nX:y:z\r\n" + BODY, id="space before colon"),
]


def content(**over: Any) -> Any:
    return Settings.from_config(load_config(None, over)).content


def _clean(fp: Any, timeout_s: float, label: str) -> clamd.ScanOutcome:
    return clamd.ScanOutcome(clamd.ScanStatus.CLEAN)


def both_passes(raw: bytes, s: Any, monkeypatch: pytest.MonkeyPatch
                ) -> tuple[list[list[tuple[str, str]]], list[Any]]:
    seen: list[list[tuple[str, str]]] = []
    real = ev._forwarding

    def spy(headers: list[tuple[str, str]], env: ev.Envelope, fs: Any) -> Any:
        seen.append(list(headers))
        return real(headers, env, fs)

    monkeypatch.setattr(ev, "_forwarding", spy)
    env = ev.Envelope(mail_from="x@gmail.com", recipients=("y@gmail.com",),
                      client_addr="203.0.113.5")
    first = ev.evaluate(io.BytesIO(raw), s, scanner=_clean, envelope=env)
    final = ev.evaluate(io.BytesIO(raw), s, scanner=_clean, envelope=replace(env, final_hop=True))
    return seen, [first, final]


@pytest.mark.parametrize("raw", TRICKY)
def test_forwarding_rule_sees_identical_headers_on_both_passes(
        raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    seen, _ = both_passes(raw, content(), monkeypatch)
    assert len(seen) == 2
    assert seen[0] == seen[1]
    # ... and authentication reads the same fields (From: domains, Authentication-Results).
    assert read_headers(raw) == seen[0]
    assert parse_headers(raw).fields == seen[0]
    assert any(n.lower().strip() == "auto-submitted" for n, _ in seen[0])


def test_parsed_values() -> None:
    b = parse_headers(b"Subject: a\r\n b\r\n\tc\r\nX: 1\r\nnocolon\r\nX: 2\r\n"
                      b"X-8: \xff\xc3\xa9\r\n\r\nbody: no\r\n")
    assert b.fields == [("Subject", "a b\tc"), ("X", "1"), ("X", "2"), ("X-8", "\ufffd\u00e9")]
    assert b.complete and not b.over_limit
    assert b.defects == ["header-without-colon", "8bit-header"]
    assert parse_headers(b" folded: first\r\nA: b\r\n\r\n").fields == [("A", "b")]


def test_caps_are_bytes_and_count_and_fail_closed() -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(50)) + b"\r\n"
    b = parse_headers(many, max_fields=10)
    assert len(b.fields) == 10 and b.over_limit and "header-limit" in b.defects
    big = b"X: " + b"a" * 5000 + b"\r\n" + AF + b"\r\n"
    b = parse_headers(big, max_bytes=1000)
    assert b.fields == [] and b.over_limit
    # A block far over the cap is not read to its end.
    huge = io.BytesIO(b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(10_000)))
    parse_headers(huge, max_bytes=2000)
    assert huge.tell() < 2000 + 2 * MAX_LINE


def test_over_the_cap_both_passes_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: a header block the cap cut short is refused on the first pass
    (MIME walk) and at the final hop alike, and both passes saw the same fields."""
    s = content()
    s = replace(s, limits=replace(s.limits, max_header_bytes=2000))
    raw = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(100)) + AF + BODY
    seen, results = both_passes(raw, s, monkeypatch)
    assert seen[0] == seen[1] and len(seen[0]) < 100
    assert not any(n == "Auto-Submitted" for n, _ in seen[0])  # beyond the cap: unseen
    for r in results:
        d = r.decisive
        assert d is not None and d.action is Action.REJECT
        assert d.rule == "attachment.uninspectable" and d.detail.get("detected") == \
            "header-limit", d
