"""Filenames: MIME header parameters, RFC 2047/2231 decoding, extension checks.

Pure string functions with bounded work: every loop runs over a header value
that the walker has already capped at `InspectLimits.max_header_bytes`.

References: RFC 2045 section 5.1 (parameter syntax), RFC 2047 (encoded words),
RFC 2231 (parameter continuations and charsets), RFC 2183 (Content-Disposition).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

# A default for the operator's `executable_extensions`, modelled on the list
# of attachment types Outlook blocks, minus data formats that provincial mail
# carries legitimately (certificates .cer/.crt/.der, Access .mdb, .pst, .tmp).
DEFAULT_EXECUTABLE_EXTENSIONS: frozenset[str] = frozenset(
    {
        # Windows programs, libraries, drivers, installers, app packages
        ".exe", ".com", ".dll", ".scr", ".pif", ".cpl", ".ocx", ".sys", ".drv", ".efi",
        ".msi", ".msp", ".mst", ".msu", ".msc", ".cab", ".diagcab",
        ".appx", ".appxbundle", ".msix", ".msixbundle", ".appinstaller",
        ".application", ".appref-ms", ".xbap", ".gadget", ".xll", ".ade", ".adp",
        ".mde",
        # scripts run by a Windows host
        ".bat", ".cmd", ".js", ".jse", ".vb", ".vbs", ".vbe", ".wsf", ".wsh", ".wsc",
        ".ws", ".sct", ".hta", ".ps1", ".ps1xml", ".ps2", ".ps2xml", ".psc1", ".psc2",
        ".psd1", ".psm1", ".msh", ".msh1", ".msh2", ".mshxml", ".msh1xml", ".msh2xml",
        ".py", ".pyw", ".pyc", ".pyo", ".pyz", ".pyzw",
        # shortcuts and settings files that launch things
        ".lnk", ".url", ".website", ".scf", ".inf", ".ins", ".isp", ".reg",
        ".settingcontent-ms", ".library-ms", ".search-ms", ".shb", ".shs", ".xnk",
        ".chm", ".hlp", ".hpj", ".vsmacros", ".vsw", ".wsb", ".prf", ".grp",
        # disk images Windows mounts on double-click (Mark-of-the-Web bypass)
        ".iso", ".img", ".vhd", ".vhdx",
        # Java and Android
        ".jar", ".jnlp", ".class", ".apk", ".xapk", ".dex",
    }
)

# --------------------------------------------------------------------------
# Decoding helpers


def decode_header_bytes(raw: bytes) -> str:
    """Header bytes to str: UTF-8 when valid (SMTPUTF8 / raw Vietnamese), else
    UTF-8 with U+FFFD replacements. Never raises."""
    return raw.decode("utf-8", "replace")


def _decode_charset(data: bytes, charset: str) -> str:
    name = charset.strip().lower() or "us-ascii"
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    if name in {"us-ascii", "ascii"}:
        # Mislabelled 8-bit data is usually UTF-8 in practice.
        name = "utf-8"
    try:
        return data.decode(name, "replace")
    except (LookupError, ValueError):  # codecs that reject errors= or are not text
        return data.decode("utf-8", "replace")


_ENCODED_WORD = re.compile(
    rb"=\?([^?\s*]{1,64})(?:\*[^?\s]{0,32})?\?([bBqQ])\?([^?\s]*)\?="
)
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def _b_decode(text: bytes) -> bytes:
    cleaned = bytes(c for c in text if c not in b"=")
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=False)
    except (binascii.Error, ValueError):
        return b""


def _q_decode(text: bytes) -> bytes:
    return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), text.replace(b"_", b" "))


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded words anywhere in `value` (also inside quoted
    parameter values, where they are not allowed but common).

    Adjacent encoded words separated only by whitespace are joined before the
    charset is applied, so a UTF-8 sequence split across two words (frequent
    with Vietnamese names) decodes correctly.
    """
    if "=?" not in value:
        return value
    raw = value.encode("utf-8", "surrogateescape")
    out: list[str] = []
    pending = b""
    pending_cs = ""
    pos = 0
    prev_word = False
    for m in _ENCODED_WORD.finditer(raw):
        between = raw[pos : m.start()]
        charset = m.group(1).decode("ascii", "replace")
        data = _b_decode(m.group(3)) if m.group(2) in b"bB" else _q_decode(m.group(3))
        # whitespace between two adjacent encoded words is dropped (RFC 2047 6.2)
        adjacent = prev_word and not between.strip()
        if pending_cs and (not adjacent or charset.lower() != pending_cs.lower()):
            out.append(_decode_charset(pending, pending_cs))
            pending, pending_cs = b"", ""
        if not adjacent:
            out.append(between.decode("utf-8", "replace"))
        pending_cs = pending_cs or charset
        pending += data
        prev_word = True
        pos = m.end()
    if pending_cs:
        out.append(_decode_charset(pending, pending_cs))
    out.append(raw[pos:].decode("utf-8", "replace"))
    return "".join(out)


# --------------------------------------------------------------------------
# Structured header values: type/subtype; attr=value; ...


@dataclass(frozen=True)
class HeaderValue:
    """A parsed Content-Type or Content-Disposition value."""

    value: str  # lower-cased main value: "application/pdf", "attachment"
    # Raw parameters in order, names lower-cased, values unquoted but not yet
    # charset-decoded. Duplicates are kept: a hostile message may send two
    # `filename` parameters and mail clients disagree on which one wins.
    params: tuple[tuple[str, str], ...]
    # More parameters than `max_params`: the ones after the cap were not read,
    # so the value was not fully seen (the walker makes that uninspectable).
    truncated: bool = False

    def get(self, name: str) -> str | None:
        for key, val in self.params:
            if key == name:
                return val
        return None


MAX_PARAMS = 64  # parameters read from one header value


def parse_header_value(text: str, max_params: int = MAX_PARAMS) -> HeaderValue:
    """Split `main; a=b; c="d;e"` leniently.

    Unquoted values run to the next `;` (so `filename=my file.exe` keeps its
    space), quoted strings honour backslash escapes, and an unterminated quote
    runs to the end of the header.
    """
    n = len(text)
    i = 0
    while i < n and text[i] != ";":
        i += 1
    main = text[:i].strip().lower()
    params: list[tuple[str, str]] = []
    truncated = False
    while i < n:
        if len(params) >= max_params:
            truncated = text[i:].strip(" \t\r\n;") != ""
            break
        i += 1  # skip ';'
        while i < n and text[i] in " \t\r\n":
            i += 1
        start = i
        while i < n and text[i] not in "=;":
            i += 1
        name = text[start:i].strip().lower()
        if i >= n or text[i] == ";":
            continue  # a bare token without '=': ignore
        i += 1  # skip '='
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            value = "".join(buf)
            while i < n and text[i] != ";":  # junk after the closing quote
                i += 1
        else:
            start = i
            while i < n and text[i] != ";":
                i += 1
            value = text[start:i].strip()
        if name:
            params.append((name, value))
    return HeaderValue(main, tuple(params), truncated)


# Section numbers: any digits (Python's email and Thunderbird read
# "filename*0000=" as section 0); values past _MAX_SECTION are not sections.
_RFC2231_SECTION = re.compile(r"^([^*]+)\*(\d{1,12})(\*?)$")
_MAX_SECTION = 10_000


def _percent_decode(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def _split_charset(value: str) -> tuple[str, str]:
    """`utf-8'vi'%E1...` -> ("utf-8", "%E1..."); no quotes -> ("", value)."""
    parts = value.split("'", 2)
    if len(parts) == 3:
        return parts[0], parts[2]
    return "", value


def param_values(header: HeaderValue, name: str) -> list[str]:
    """Every decoded value the header gives for parameter `name`.

    Combines RFC 2231 forms (`name*=`, `name*0=`, `name*0*=`, ...), and plain
    `name=` (with RFC 2047 decoding applied, as mail clients do). The RFC 2231
    value comes first when present.
    """
    results: list[str] = []
    sections: dict[int, tuple[str, bool]] = {}
    for key, val in header.params:
        if key == name + "*":
            charset, text = _split_charset(val)
            results.append(_decode_charset(_percent_decode(text), charset or "utf-8"))
            continue
        m = _RFC2231_SECTION.match(key)
        if m and m.group(1) == name and int(m.group(2)) <= _MAX_SECTION:
            sections.setdefault(int(m.group(2)), (val, bool(m.group(3))))
    if sections:
        charset = ""
        chunks: list[bytes] = []
        for index in sorted(sections):
            val, extended = sections[index]
            if extended:
                if index == sorted(sections)[0]:
                    charset, val = _split_charset(val)
                chunks.append(_percent_decode(val))
            else:
                chunks.append(val.encode("utf-8", "surrogateescape"))
        results.insert(0, _decode_charset(b"".join(chunks), charset or "utf-8"))
    for key, val in header.params:
        if key == name:
            results.append(decode_rfc2047(val))
    return results


# --------------------------------------------------------------------------
# Extension checks


def _is_invisible_tail(ch: str) -> bool:
    return ch in ". " or ch.isspace() or unicodedata.category(ch) in {"Cc", "Cf"}


def basename(name: str) -> str:
    """Last path component, whichever separator the sender used."""
    return re.split(r"[\\/]", name)[-1]


def effective_extension(name: str) -> str:
    """The extension Windows acts on, lower-cased with its dot, or "".

    Windows drops trailing dots and spaces (`a.exe. ` runs as `a.exe`); we
    also drop trailing control and format characters (zero-width space,
    bidi overrides), which err on the side of finding the extension.
    """
    base = basename(name)
    end = len(base)
    while end > 0 and _is_invisible_tail(base[end - 1]):
        end -= 1
    base = base[:end]
    dot = base.rfind(".")
    if dot < 0 or dot == len(base) - 1:
        return ""
    return base[dot:].lower()


def executable_extension(name: str, extensions: frozenset[str]) -> str | None:
    """The executable extension `name` ends with, or None.

    A name with a NUL in it is also read up to the NUL, as C string handling
    (and so Windows' file APIs) would: "setup.exe\0.pdf" is "setup.exe"."""
    for candidate in (name, name.split("\0", 1)[0]) if "\0" in name else (name,):
        ext = effective_extension(candidate)
        if ext and ext in extensions:
            return ext
    return None


ARCHIVE_EXTENSIONS: frozenset[str] = frozenset(
    {".zip", ".7z", ".rar", ".tar", ".tgz", ".tbz", ".tbz2", ".txz", ".gz", ".bz2", ".xz"}
)
