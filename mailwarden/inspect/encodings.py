"""Line decoders for the encodings mail clients find inside bodies.

uuencode (POSIX uuencode(1) format, also `begin-base64`) and yEnc (yEnc 1.3
draft, www.yenc.org/yenc-draft.1.3.txt): Thunderbird, Outlook Express and
news readers show such blocks in a text body as attachments, and
`Content-Transfer-Encoding: x-uuencode` (or x-uue) encodes a whole part so.
Decoding is lenient the way those readers are: short lines are padded, bad
characters are taken modulo 64, nothing raises.
"""

from __future__ import annotations

import binascii
import re

UU_BEGIN = re.compile(rb"^begin(-base64)? +[0-7]{1,4} +(.+?)\s*$")
YENC_BEGIN = re.compile(rb"^=ybegin .*?\bname=(.*?)\s*$")
_YENC_TABLE = bytes((i - 42) & 0xFF for i in range(256))
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DELETE_ALL = bytes(c for c in range(256) if c not in _B64_ALPHABET)


def uu_line(line: bytes) -> bytes:
    """One uuencoded line: a length character, then 4 characters per 3 bytes."""
    line = line.rstrip(b"\r\n")
    if not line:
        return b""
    n = (line[0] - 32) & 63
    chars = line[1:]
    need = (n + 2) // 3 * 4
    chars = chars[:need].ljust(need, b" ")
    out = bytearray()
    for i in range(0, need, 4):
        a, b, c, d = ((x - 32) & 63 for x in chars[i : i + 4])
        out += bytes(((a << 2 | b >> 4) & 0xFF, (b << 4 | c >> 2) & 0xFF, (c << 6 | d) & 0xFF))
    return bytes(out[:n])


def yenc_line(line: bytes) -> bytes:
    """One yEnc data line: each byte minus 42, "=" escapes the next (minus 64 more)."""
    line = line.rstrip(b"\r\n")
    if line.startswith(b".."):  # NNTP dot-stuffing
        line = line[1:]
    pieces = line.split(b"=")
    out = [pieces[0].translate(_YENC_TABLE)]
    for piece in pieces[1:]:
        if piece:
            out.append(bytes([(piece[0] - 106) & 0xFF]) + piece[1:].translate(_YENC_TABLE))
    return b"".join(out)


def b64_stripped(data: bytes) -> bytes:
    """base64 with every "=" and non-alphabet byte ignored: the reading of
    decoders that skip padding found in the middle of the data (Python's
    binascii in its default mode does so for padding early in a quantum)."""
    clean = data.translate(None, _B64_DELETE_ALL)
    clean = clean[: len(clean) // 4 * 4] if len(clean) % 4 == 1 else clean
    return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4)) if clean else b""


class UuDecoder:
    """Content-Transfer-Encoding: x-uuencode / x-uue: the decoded bytes of
    every begin...end block in the part (plain uuencode or begin-base64)."""

    def __init__(self) -> None:
        self.state = ""  # "", "uu", "b64"
        self.names: list[bytes] = []
        self._b64 = bytearray()

    def feed(self, line: bytes, eol: bytes) -> tuple[bytes, bytes]:
        text = line.rstrip(b"\r\n")
        if not self.state:
            m = UU_BEGIN.match(text)
            if m:
                self.state = "b64" if m.group(1) else "uu"
                self.names.append(m.group(2))
            return b"", b""
        if self.state == "uu":
            if text.strip() == b"end":
                self.state = ""
                return b"", b""
            return uu_line(text), b""
        if text.startswith(b"===="):
            self.state = ""
            return self._flush(final=True), b""
        self._b64 += text
        return self._flush(final=False), b""

    def _flush(self, final: bool) -> bytes:
        clean = bytes(self._b64).translate(None, _B64_DELETE_ALL)
        whole = len(clean) if final else len(clean) // 4 * 4
        self._b64 = bytearray(clean[whole:])
        return b64_stripped(clean[:whole])

    def finish(self) -> bytes:
        return self._flush(final=True) if self._b64 else b""
