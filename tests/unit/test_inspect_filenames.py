"""MIME parameter parsing, RFC 2047 / RFC 2231 decoding, extension checks."""

from __future__ import annotations

import pytest

from mailwarden.inspect import DEFAULT_EXECUTABLE_EXTENSIONS, InspectLimits
from mailwarden.inspect.filenames import (
    decode_rfc2047,
    effective_extension,
    executable_extension,
    param_values,
    parse_header_value,
)


@pytest.mark.parametrize(("value", "decoded"), [
    pytest.param("=?UTF-8?B?aMOzYSDEkcahbi5wZGY=?=", "hóa đơn.pdf", id="b-utf8"),
    pytest.param("=?utf-8?Q?h=C3=B3a_=C4=91=C6=A1n.exe?=", "hóa đơn.exe", id="q-utf8"),
    pytest.param("=?UTF-8?B?aMOz?= =?UTF-8?B?YSDEkcahbi5leGU=?=", "hóa đơn.exe",
                 id="adjacent-words-joined"),
    pytest.param("=?UTF-8?B?aOG6?=\r\n =?UTF-8?B?oW4uZXhl?=", "hạn.exe",
                 id="utf8-sequence-split-across-words"),
    pytest.param("=?windows-1258?Q?t=E0i_li=EA=F2u.doc?=", "tài li\u00ea\u0323u.doc",
                 id="windows-1258-combining-tone"),
    pytest.param("=?iso-8859-1?Q?caf=E9?= menu.pdf", "café menu.pdf", id="word-then-text"),
    pytest.param("report =?UTF-8?B?LmV4ZQ==?=", "report .exe", id="text-then-word"),
    pytest.param("=?x-unknown?B?YS5leGU=?=", "a.exe", id="unknown-charset-falls-back"),
    pytest.param("=?UTF-8?B?YS5leGU?=", "a.exe", id="missing-padding"),
    pytest.param("plain.pdf", "plain.pdf", id="no-encoded-words"),
    pytest.param("=?UTF-8?Z?abc?=", "=?UTF-8?Z?abc?=", id="bad-encoding-left-alone"),
])
def test_decode_rfc2047(value: str, decoded: str) -> None:
    assert decode_rfc2047(value) == decoded


@pytest.mark.parametrize(("header", "param", "values"), [
    pytest.param('attachment; filename="a.pdf"', "filename", ["a.pdf"], id="quoted"),
    pytest.param("attachment; filename=a.pdf", "filename", ["a.pdf"], id="token"),
    pytest.param("attachment; filename=my file.exe", "filename", ["my file.exe"],
                 id="unquoted-with-space"),
    pytest.param('attachment; filename="a\\"b.exe"', "filename", ['a"b.exe'], id="escaped-quote"),
    pytest.param('attachment; filename="a;b.exe"', "filename", ["a;b.exe"],
                 id="semicolon-in-quotes"),
    pytest.param('attachment; filename="unterminated.exe', "filename", ["unterminated.exe"],
                 id="unterminated-quote"),
    pytest.param("attachment;filename = a.pdf ;size=3", "filename", ["a.pdf"],
                 id="spaces-around-equals"),
    pytest.param("attachment; FILENAME=a.pdf", "filename", ["a.pdf"], id="upper-case-name"),
    pytest.param("attachment; filename*=utf-8''h%C3%B3a%20%C4%91%C6%A1n.exe", "filename",
                 ["hóa đơn.exe"], id="rfc2231-charset"),
    pytest.param("attachment; filename*=UTF-8'vi'%E1%BA%A1.pdf", "filename", ["ạ.pdf"],
                 id="rfc2231-language"),
    pytest.param("attachment; filename*0*=utf-8''h%C3%B3a; filename*1*=%20%C4%91;"
                 ' filename*2="on.exe"', "filename", ["hóa đon.exe"],
                 id="rfc2231-continuations"),
    pytest.param("attachment; filename*1=b.exe; filename*0=a", "filename", ["ab.exe"],
                 id="rfc2231-out-of-order"),
    pytest.param('attachment; filename*=utf-8\'\'a.pdf; filename="a.exe"', "filename",
                 ["a.pdf", "a.exe"], id="both-forms-kept"),
    pytest.param('attachment; filename="a.pdf"; filename="b.exe"', "filename",
                 ["a.pdf", "b.exe"], id="duplicates-kept"),
    pytest.param('attachment; filename="=?UTF-8?B?aMOzYS5leGU=?="', "filename", ["hóa.exe"],
                 id="rfc2047-inside-quotes"),
    pytest.param('application/pdf; name="x.pdf"', "name", ["x.pdf"], id="content-type-name"),
    pytest.param("attachment", "filename", [], id="none"),
])
def test_param_values(header: str, param: str, values: list[str]) -> None:
    assert param_values(parse_header_value(header), param) == values


def test_parse_header_value_main_value_lower_cased() -> None:
    parsed = parse_header_value('Multipart/Mixed; BOUNDARY="Ab=_1"')
    assert parsed.value == "multipart/mixed"
    assert parsed.get("boundary") == "Ab=_1"


def test_parse_header_value_caps_parameters() -> None:
    parsed = parse_header_value("x/y" + "; a=b" * 10_000)
    assert len(parsed.params) == 64


@pytest.mark.parametrize(("name", "ext"), [
    pytest.param("hoa-don.pdf.exe", ".exe", id="double-extension"),
    pytest.param("SETUP.EXE", ".exe", id="upper-case"),
    pytest.param("a.exe. ", ".exe", id="trailing-dot-space"),
    pytest.param("a.exe...", ".exe", id="trailing-dots"),
    pytest.param("a.exe\u200b", ".exe", id="trailing-zero-width-space"),
    pytest.param("invoice\u202egpj.scr", ".scr", id="bidi-override-trick"),
    pytest.param("C:\\Users\\x\\run.bat", ".bat", id="windows-path"),
    pytest.param("dir/sub/run.ps1", ".ps1", id="unix-path"),
    pytest.param("tài liệu.vbs", ".vbs", id="vietnamese-name"),
    pytest.param(".exe", ".exe", id="only-extension"),
    pytest.param("setup.exe.pdf", None, id="exe-then-pdf-is-a-pdf"),
    pytest.param("report.pdf", None, id="pdf"),
    pytest.param("exe", None, id="no-dot"),
    pytest.param("a.", None, id="empty-extension"),
    pytest.param("hop.ics", None, id="calendar"),
    pytest.param("", None, id="empty"),
])
def test_executable_extension(name: str, ext: str | None) -> None:
    assert executable_extension(name, DEFAULT_EXECUTABLE_EXTENSIONS) == ext


def test_effective_extension_lower_cases() -> None:
    assert effective_extension("A.PDF") == ".pdf"


def test_default_list_covers_the_issue() -> None:
    asked = (".exe .com .dll .scr .pif .bat .cmd .msi .msp .mst .cpl .jar .js .jse .vbs .vbe "
             ".wsf .wsh .ps1 .psm1 .hta .lnk .reg .iso .img .vhd .vhdx .application .gadget "
             ".sys .drv .ocx .inf .scf .appx .msix .apk").split()
    assert set(asked) <= DEFAULT_EXECUTABLE_EXTENSIONS
    for document in (".pdf", ".doc", ".docx", ".xls", ".xlsx", ".zip", ".cer", ".ics"):
        assert document not in DEFAULT_EXECUTABLE_EXTENSIONS


@pytest.mark.parametrize("bad", [
    pytest.param({"exe"}, id="no-dot"),
    pytest.param({".EXE"}, id="upper-case"),
])
def test_limits_reject_malformed_extensions(bad: set[str]) -> None:
    with pytest.raises(ValueError, match="extension"):
        InspectLimits(frozenset(bad))


def test_limits_reject_negative_numbers() -> None:
    with pytest.raises(ValueError, match="max_parts"):
        InspectLimits(DEFAULT_EXECUTABLE_EXTENSIONS, max_parts=-1)
