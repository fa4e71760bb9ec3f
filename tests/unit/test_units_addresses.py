from __future__ import annotations

import pytest

from mailwarden.addresses import (
    AddressClass,
    classify_domain,
    in_domains,
    mailbox_key,
    parse_listen,
)
from mailwarden.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize("text,seconds", [
    ("10m", 600.0), ("90s", 90.0), ("1.5h", 5400.0), ("250ms", 0.25), (30, 30.0), ("2d", 172800.0),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "-5s", "5 parsecs", True])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


def test_sizes_are_binary_megabytes() -> None:
    assert parse_size("30MB") == 30 * 1024 * 1024
    assert parse_size("512KiB") == 512 * 1024
    assert parse_size(100) == 100
    with pytest.raises(ValueError):
        parse_size("30 MBytes")


def test_format_duration() -> None:
    assert [format_duration(x) for x in (600, 3600, 45, 0.5)] == ["10m", "1h", "45s", "0.5s"]


@pytest.mark.parametrize("text,family,host,port,path,libmilter", [
    ("inet:127.0.0.1:10031", "inet", "127.0.0.1", 10031, "", "inet:10031@127.0.0.1"),
    ("inet:[::1]:8899", "inet", "::1", 8899, "", "inet6:8899@::1"),
    ("inet:localhost:8899", "inet", "localhost", 8899, "", "inet:8899@localhost"),
    ("unix:/run/mailwarden/policyd.sock", "unix", "", 0, "/run/mailwarden/policyd.sock",
     "unix:/run/mailwarden/policyd.sock"),
])
def test_listen_notation(text: str, family: str, host: str, port: int, path: str,
                         libmilter: str) -> None:
    a = parse_listen(text)
    assert (a.family, a.host, a.port, a.path) == (family, host, port, path)
    assert str(a) == text
    assert a.libmilter() == libmilter


@pytest.mark.parametrize("bad", ["127.0.0.1:10031", "inet:127.0.0.1", "inet:h:99999",
                                 "unix:relative.sock", "tcp:1.2.3.4:5"])
def test_bad_listen(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(bad)


@pytest.mark.parametrize("addr,key", [
    ("User+Tag@NinhBinh.Gov.VN", "user@ninhbinh.gov.vn"),
    ("<alice@ninhbinh.gov.vn>", "alice@ninhbinh.gov.vn"),
    ("+weird@x.org", "+weird@x.org"),  # a leading delimiter is not an extension
    ("nodomain", "nodomain"),
])
def test_mailbox_key(addr: str, key: str) -> None:
    assert mailbox_key(addr) == key


def test_delimiter_off_and_multiple() -> None:
    assert mailbox_key("a+b@x.org", "") == "a+b@x.org"
    assert mailbox_key("a-b@x.org", "+-") == "a@x.org"


@pytest.mark.parametrize("domain,sub,expected", [
    ("ninhbinh.gov.vn", False, True),
    ("sokhcn.ninhbinh.gov.vn", True, True),
    ("sokhcn.ninhbinh.gov.vn", False, False),
    ("evilninhbinh.gov.vn", True, False),  # label boundary
    ("NINHBINH.GOV.VN.", False, True),
])
def test_in_domains(domain: str, sub: bool, expected: bool) -> None:
    assert in_domains(domain, ("ninhbinh.gov.vn",), sub) is expected


@pytest.mark.parametrize("domain,cls", [
    ("ninhbinh.gov.vn", AddressClass.LOCAL),
    ("hanoi.gov.vn", AddressClass.STATE),
    ("hanoigov.vn", AddressClass.PRIVATE),
    ("gmail.com", AddressClass.PRIVATE),
])
def test_classify_domain(domain: str, cls: AddressClass) -> None:
    assert classify_domain(domain, ("ninhbinh.gov.vn",), True) is cls
