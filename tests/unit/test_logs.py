from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden import logs


def test_escape_controls_quotes_and_non_ascii() -> None:
    assert logs.escape('a"b\\c\nd\x00') == 'a\\"b\\\\c\\x0ad\\x00'
    assert logs.escape("Nguyễn") == "Nguy\\u1ec5n"
    assert logs.escape("\U0001f600") == "\\U0001f600"


def test_escape_bounds_length() -> None:
    out = logs.escape("x" * 2000)
    assert out.startswith("x" * 512) and out.endswith("...[1488 more]")


def test_decision_line_shape_and_injection() -> None:
    line = logs.decision_line(
        queue_id="", action="reject", stage="RCPT", client_name="pc1", client_addr="10.0.0.1",
        rule="ratelimit.external_recipients", detail={"count": "251", "note": "a b"},
        sender="evil\n4Q: accept:", recipients=["x@gmail.com"], article="QD 1 Dieu 2",
        reply="550 5.7.1 no")
    assert line == (
        'NOQUEUE: reject: RCPT from pc1[10.0.0.1]: rule=ratelimit.external_recipients count=251 '
        'note="a b"; from=<evil\\x0a4Q: accept:> to=<x@gmail.com> article="QD 1 Dieu 2" '
        'reply="550 5.7.1 no"')
    assert "\n" not in line


# --- caps: a value of plain characters is capped like any other (issue 9) --------------------

NESTED = "/".join(f"a{i:05d}.zip" for i in range(22_000)) + "/run.exe"  # ~220 KB, all plain


def _reject(**over: object) -> str:
    kw: dict[str, object] = dict(
        queue_id="4Q8Zl02Bv1z", action="reject", stage="EOM", client_name="unknown",
        client_addr="10.20.30.40", rule="attachment.executable",
        detail={"file": NESTED, "detected": "pe32"}, sender="alice@ninhbinh.gov.vn",
        recipients=["x@gmail.com"], article="QD 162/2025/QD-UBND Dieu 4.2",
        reply="550 5.7.1 Executable attachment refused")
    kw.update(over)
    return logs.decision_line(**kw)  # type: ignore[arg-type]


def test_220kb_plain_archive_name_is_capped_and_the_decision_survives() -> None:
    assert len(NESTED) > 200_000 and all(c.isalnum() or c in "./" for c in NESTED)
    line = _reject()
    assert len(line) <= logs.MAX_LINE
    assert line.startswith("4Q8Zl02Bv1z: reject: EOM from unknown[10.20.30.40]: "
                           "rule=attachment.executable file=\"a00000.zip/")
    assert f"...[{len(NESTED) - logs.MAX_VALUE} more]\"" in line  # the cut is marked
    assert " detected=pe32;" in line and " to=<x@gmail.com>" in line
    assert line.endswith(' article="QD 162/2025/QD-UBND Dieu 4.2" '
                         'reply="550 5.7.1 Executable attachment refused"')


def test_many_long_values_fit_the_line_cap_longest_elided_first() -> None:
    detail = {f"k{i}": "v" * 600 for i in range(12)}
    line = _reject(detail={"file": NESTED, **detail}, sender="s" * 5000,
                   recipients=["r" * 700 + "@gmail.com"] * 40, extra={"sasl_username": "u" * 900})
    assert len(line) <= logs.MAX_LINE
    assert line.startswith("4Q8Zl02Bv1z: reject: EOM from unknown[10.20.30.40]: "
                           "rule=attachment.executable ")
    assert "...[elided " in line and " to=...[elided " in line
    assert line.endswith('reply="550 5.7.1 Executable attachment refused"')
    assert ";" in line and "\n" not in line


def test_every_field_is_escaped_and_capped() -> None:
    nasty = "a\r\nb\x00c\x1bd\u1ec5\"\\ e%"
    line = logs.decision_line(
        queue_id=nasty, action=nasty, stage=nasty, client_name=nasty, client_addr=nasty,
        rule=nasty, detail={nasty: nasty, "plain": "x" * 5000}, sender=nasty,
        recipients=[nasty], extra={"sasl_username": nasty}, article=nasty, reply=nasty)
    assert line.isascii() and all(0x20 <= ord(c) < 0x7F for c in line)
    assert "\\x0d\\x0ab\\x00c\\x1bd\\u1ec5" in line
    assert 'plain="' + "x" * logs.MAX_VALUE + '...[4488 more]"' in line
    # Keys cannot smuggle '=' or spaces either.
    assert " a__b_c_d____e_=" in line


def test_plain_short_values_stay_bare() -> None:
    assert logs._kv("file", "a.zip/b.exe") == "file=a.zip/b.exe"
    assert logs._kv("file", "x" * 600).startswith('file="' + "x" * 512 + "...[88 more]")


def test_stats_auth_and_event_lines() -> None:
    assert logs.stats_line({"requests": 3, "reject": 1}, since_s=600.4) == \
        "statistics: requests=3 reject=1 since 600s"
    assert logs.stats_line({"messages": 2}, final=True) == "stopped; statistics: messages=2"
    assert logs.auth_line("", {"spf": "pass\n4Q: reject:", "dmarc": "x" * 9000}) .startswith(
        'NOQUEUE: auth: spf="pass\\x0a4Q: reject:" dmarc="' + "x" * 512 + "...[8488 more]")
    assert logs.event_line("Q1", "could not uncount refused message",
                           error="boom\r\nQ2: reject:") == \
        'Q1: could not uncount refused message error="boom\\x0d\\x0aQ2: reject:"'


# --- one decision, one line: over the limit and locked (PolicyService) --------------------


class _FakeStore:
    def __init__(self, result: object) -> None:
        self.result = result

    async def reserve(self, *a: object, **kw: object) -> object:
        return self.result

    async def wait_replicas(self) -> tuple[int, int]:
        return 0, 0  # no replicas


def test_over_limit_and_lock_is_one_line(caplog: pytest.LogCaptureFixture,
                                         tmp_path: Path) -> None:
    import asyncio
    import logging

    from mailwarden.clock import FakeClock
    from mailwarden.config import load_config
    from mailwarden.policyd.lockcache import LockCache
    from mailwarden.policyd.service import PolicyService
    from mailwarden.rules.ratelock import LockInfo
    from mailwarden.store.redis_store import ReserveResult

    cfg = load_config(None, {"ratelimit.limit": 3})
    lock = LockInfo("alice@ninhbinh.gov.vn", "over 3", 1_760_000_000, "rate", "policyd", 4)
    store = _FakeStore(ReserveResult("over", 4, lock))
    service = PolicyService(cfg, store, FakeClock(), LockCache())  # type: ignore[arg-type]
    attrs = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
             "client_address": "10.20.30.40", "client_name": "pc1", "instance": "a1",
             "sender": "alice@ninhbinh.gov.vn", "recipient": "x@gmail.com",
             "sasl_username": "alice@ninhbinh.gov.vn", "queue_id": ""}
    with caplog.at_level(logging.INFO, logger="mailwarden.policyd"):
        answer = asyncio.run(service.handle(attrs))
    assert answer.startswith("550 5.7.1 Vuot gioi han 3")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "NOQUEUE: reject: RCPT from pc1[10.20.30.40]: rule=ratelimit.external_recipients "
        "count=4 limit=3 window=10m locked=yes account=alice@ninhbinh.gov.vn; "
        "from=<alice@ninhbinh.gov.vn> to=<x@gmail.com> sasl_username=alice@ninhbinh.gov.vn "
        "article=")
    assert service.stats.locks == 1 and service.stats.reject == 1


def test_note_line_escapes_its_values() -> None:
    assert logs.note("lock list refresh failed, keeping the known locks", locks=3,
                     error="Timeout\nreading") == \
        'lock list refresh failed, keeping the known locks locks=3 error="Timeout\\x0areading"'
