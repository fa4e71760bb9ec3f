from __future__ import annotations

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
