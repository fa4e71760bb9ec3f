"""The harness itself: a private Postfix relays to the sink byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailwarden.sandbox.postfix import PostfixInstance
from mailwarden.sandbox.redis import RedisInstance
from mailwarden.sandbox.sink import Sink
from mailwarden.sandbox.smtpclient import send

pytestmark = pytest.mark.integration

BODY = ("Kính gửi Sở Khoa học và Công nghệ,\r\n"
        "Xin gửi kèm báo cáo quý IV.\r\n").encode()


def message(to: str) -> bytes:
    return (f"From: alice@ninhbinh.gov.vn\r\nTo: {to}\r\nSubject: =?UTF-8?B?QsOhbyBjw6Fv?=\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <bc-q4@ninhbinh.gov.vn>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + BODY


def test_relay_to_sink_byte_for_byte(postfix_factory: Callable[..., PostfixInstance],
                                     sink: Sink) -> None:
    pf = postfix_factory()
    t = send(pf.smtpd_port, "x@gmail.com", ["y@ninhbinh.gov.vn"], message("y@ninhbinh.gov.vn"))
    assert t.data is not None and t.data[0] == 250
    [(env, data)] = sink.wait_for(1)
    assert env["rcpt_to"] == ["y@ninhbinh.gov.vn"] and env["mail_from"] == "x@gmail.com"
    # Postfix prepends exactly one Received: header (three folded lines); the rest is ours,
    # byte for byte (it adds Date/Message-ID only when missing, and these are present).
    received, _sep, rest = data.partition(b"\r\nFrom: ")
    assert received.startswith(b"Received: from ") and received.count(b"\r\n") == 2
    assert b"From: " + rest == message("y@ninhbinh.gov.vn")
    pf.wait_for_log(r"[0-9A-F]{6,}: to=<y@ninhbinh.gov.vn>, relay=127.0.0.1\[127.0.0.1\]:\d+"
                    r".*status=sent")


def test_xclient_login_allows_relaying_out(postfix_factory: Callable[..., PostfixInstance],
                                           sink: Sink) -> None:
    pf = postfix_factory()
    anonymous = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com"],
                     message("x@gmail.com"), client_addr="10.20.30.40", login=None)
    assert anonymous.rcpt["x@gmail.com"][0] == 250  # from 127.0.0.1: mynetworks
    outside = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com"],
                   message("x@gmail.com"), login="")  # XCLIENT without a login
    assert outside.refused("x@gmail.com").startswith("554 5.7.1")
    assert "Relay access denied" in outside.refused("x@gmail.com")
    authed = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com"],
                  message("x@gmail.com"), login="alice@ninhbinh.gov.vn")
    assert authed.data is not None and authed.data[0] == 250
    msgs = sink.wait_for(2)
    assert [m[0]["rcpt_to"] for m in msgs] == [["x@gmail.com"], ["x@gmail.com"]]


def test_two_instances_side_by_side(postfix_factory: Callable[..., PostfixInstance],
                                    sink: Sink) -> None:
    a, b = postfix_factory("pf-a"), postfix_factory("pf-b")
    assert a.smtpd_port != b.smtpd_port
    for pf in (a, b):
        send(pf.smtpd_port, "x@gmail.com", ["y@ninhbinh.gov.vn"], message("y@ninhbinh.gov.vn"))
    assert len(sink.wait_for(2)) == 2


def test_redis_stops_and_starts_on_the_same_socket(redis_server: RedisInstance) -> None:
    import redis

    r: Any = redis.Redis.from_url(redis_server.url)
    assert r.ping()
    first = redis_server.pid
    redis_server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        r.ping()
    redis_server.start()
    assert r.ping() and redis_server.pid != first
    r.close()
