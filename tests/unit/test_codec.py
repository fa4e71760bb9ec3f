"""policyd/codec.py: incremental and bounded, whatever the bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwarden.policyd.codec import Decoder, ProtocolError, encode_action

REQ = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@ninhbinh.gov.vn\n"
    b"recipient=x@gmail.com\nsasl_username=\ninstance=12.34\n\n"
)


def test_one_request_whole() -> None:
    [r] = Decoder().feed(REQ)
    assert r["recipient"] == "x@gmail.com"
    assert r["sasl_username"] == ""  # empty stays distinct from missing
    assert "ccert_subject" not in r


@pytest.mark.parametrize("cut", range(1, len(REQ)))
def test_split_at_every_offset(cut: int) -> None:
    d = Decoder()
    first = d.feed(REQ[:cut])
    rest = d.feed(REQ[cut:])
    assert first == [] and len(rest) == 1
    assert rest[0]["instance"] == "12.34"


def test_pipelined_requests_come_out_in_order() -> None:
    two = REQ + REQ.replace(b"x@gmail.com", b"y@gmail.com")
    out = Decoder().feed(two)
    assert [r["recipient"] for r in out] == ["x@gmail.com", "y@gmail.com"]


def test_crlf_lines_are_tolerated() -> None:
    [r] = Decoder().feed(REQ.replace(b"\n", b"\r\n"))
    assert r["protocol_state"] == "RCPT"


def test_value_may_contain_equals_and_utf8() -> None:
    req = REQ.replace(b"sasl_username=", "sasl_username=nguyễn=vă@x".encode())
    [r] = Decoder().feed(req)
    assert r["sasl_username"] == "nguyễn=vă@x"


@pytest.mark.parametrize("data,why", [
    pytest.param(b"request=smtpd_access_policy\nnoequals\n\n", "without name=value",
                 id="no-equals"),
    pytest.param(b"=value\n\n", "without name=value", id="empty-name"),
    pytest.param(b"\n", "empty request", id="empty-request"),
    pytest.param(b"protocol_state=RCPT\n\n", "request=", id="no-request-attr"),
    pytest.param(b"request=other\n\n", "request=", id="wrong-request-kind"),
    pytest.param(b"request=smtpd_access_policy\nsender=\xff\xfe\n\n", "UTF-8", id="not-utf8"),
    pytest.param(b"request=smtpd_access_policy\nsender=a\nsender=b\n\n", "repeated", id="dup"),
], )
def test_malformed_requests_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        Decoder().feed(data)


def test_overlong_line_refused_before_newline_arrives() -> None:
    d = Decoder(max_line_bytes=100)
    d.feed(b"request=" + b"a" * 90)
    with pytest.raises(ProtocolError, match="longer than 100"):
        d.feed(b"a" * 20)


def test_too_many_attributes() -> None:
    lines = b"".join(b"a%d=1\n" % i for i in range(11))
    with pytest.raises(ProtocolError, match="more than 10"):
        Decoder(max_attributes=10).feed(b"request=smtpd_access_policy\n" + lines + b"\n")


def test_buffer_is_released_after_each_request() -> None:
    d = Decoder()
    for _ in range(1000):
        d.feed(REQ)
    assert d.buffered == 0


def test_unfinished_request_is_bounded_before_its_end_arrives() -> None:
    """Many short, complete lines and no empty line: refused at max_request_bytes,
    not held until max_attributes lines of max_line_bytes each (800 KB by default)."""
    d = Decoder(max_line_bytes=100, max_attributes=100, max_request_bytes=1000)
    d.feed(b"request=smtpd_access_policy\n")
    with pytest.raises(ProtocolError, match="request longer than 1000"):
        for i in range(99):
            d.feed(b"a%02d=%s\n" % (i, b"v" * 90))


def test_complete_request_over_the_byte_cap_is_refused() -> None:
    big = b"request=smtpd_access_policy\n" + b"".join(b"a%d=%s\n" % (i, b"v" * 50)
                                                      for i in range(30)) + b"\n"
    with pytest.raises(ProtocolError, match="request longer than 1000"):
        Decoder(max_request_bytes=1000).feed(big)


def test_unfinished_request_is_one_buffer_and_reset_frees_it() -> None:
    d = Decoder()
    d.feed(REQ[:-1])  # every attribute line, not the empty line
    assert d.partial and d.buffered == len(REQ) - 1
    d.reset()
    assert not d.partial and d.buffered == 0
    assert d.feed(REQ) == [Decoder().feed(REQ)[0]]


def test_trickled_request_byte_by_byte_with_crlf() -> None:
    d = Decoder()
    data = REQ.replace(b"\n", b"\r\n") + REQ
    got = [r for i in range(len(data)) for r in d.feed(data[i:i + 1])]
    assert len(got) == 2 and got[0] == got[1] and d.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_crash_or_grow(chunks: list[bytes]) -> None:
    """Whatever arrives: requests, or ProtocolError; the buffer stays bounded."""
    d = Decoder(max_line_bytes=256, max_attributes=8, max_request_bytes=1024)
    for chunk in chunks:
        try:
            for r in d.feed(chunk):
                assert r["request"] == "smtpd_access_policy"
                assert len(r) <= 8
        except ProtocolError:
            return
        assert d.buffered <= 1024
        assert d.partial == (d.buffered > 0)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                       st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                                      blacklist_categories=("Cs",)),
                               max_size=60), max_size=20))
def test_round_trip_of_any_well_formed_request(attrs: dict[str, str]) -> None:
    attrs = {"request": "smtpd_access_policy", **attrs}
    data = "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"
    assert Decoder().feed(data) == [attrs]


def test_encode_action_cannot_be_split_by_newlines() -> None:
    assert encode_action("550 5.7.1 a\nb") == b"action=550 5.7.1 a b\n\n"
