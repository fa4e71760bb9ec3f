"""Incremental, bounded codec for Postfix's policy delegation protocol.

A request is `name=value` lines ended by an empty line; the reply is
`action=...` and an empty line. Bytes go in, complete requests (dicts) come
out. Nothing here grows without bound: a line longer than `max_line_bytes`,
an unfinished request over `max_request_bytes`, more than `max_attributes`
attributes, a line without `=`, a repeated attribute, bytes that are not
UTF-8 or a request without `request=` raise ProtocolError, and the caller
logs it and disconnects (SMTPD_POLICY_README: a malformed request gets no
reply).

An unfinished request is kept as its raw bytes in ONE bytearray, parsed only
when its empty line arrives: a peer that stops half way holds at most
`max_request_bytes` (one allocation, freed by `reset()` or when the decoder
goes), never a dict of many separately allocated strings.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """The peer broke the protocol; the message says how (safe to log after escaping)."""


class Decoder:
    def __init__(self, max_line_bytes: int = 8192, max_attributes: int = 100,
                 max_request_bytes: int = 65536) -> None:
        self.max_line = max_line_bytes
        self.max_attrs = max_attributes
        self.max_request = max_request_bytes
        self._buf = bytearray()
        self._line = 0  # offset in _buf where the unfinished line starts
        self._scan = 0  # offset in _buf up to which newlines were looked for

    @property
    def buffered(self) -> int:
        """Bytes held for the unfinished request (0 between requests)."""
        return len(self._buf)

    @property
    def partial(self) -> bool:
        """True while a request has started and not ended."""
        return bool(self._buf)

    def reset(self) -> None:
        """Drop any unfinished request and give its memory back."""
        self._buf = bytearray()
        self._line = self._scan = 0

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Consume bytes; return the requests they complete (possibly none)."""
        fresh = not self._buf
        buf = self._buf
        buf += data
        out: list[dict[str, str]] = []
        start = 0
        try:
            # Fast path: whole requests in bytes that arrived at a request boundary,
            # found with one C-level search each (a block no longer than max_line has no
            # line longer than max_line). Anything else (CR, a request longer than
            # max_line, an unfinished one) goes to the incremental scan below, which
            # never looks at a byte twice, whatever the peer's segment sizes.
            while fresh:
                end = buf.find(b"\n\n", start)
                if end <= start or end - start > self.max_line:
                    break
                block = buf[start:end]
                if b"\r" in block:
                    break
                out.append(self._parse(block))
                start = end + 2
            if start:
                self._line = self._scan = start
            while True:
                nl = buf.find(b"\n", self._scan)
                if nl < 0:
                    break
                line_start = self._line
                if nl - line_start > self.max_line:
                    raise ProtocolError(f"line longer than {self.max_line} bytes")
                self._line = self._scan = nl + 1
                if nl == line_start or (nl == line_start + 1 and buf[line_start] == 0x0D):
                    # An empty line ends the request; its block excludes the last newline.
                    out.append(self._parse(buf[start:max(start, line_start - 1)]))
                    start = nl + 1
            self._scan = len(buf)
            if len(buf) - self._line > self.max_line:
                raise ProtocolError(f"line longer than {self.max_line} bytes")
            if len(buf) - start > self.max_request:
                raise ProtocolError(f"request longer than {self.max_request} bytes")
        finally:
            if start >= len(buf):
                self.reset()  # a new, empty buffer: the old one's capacity goes with it
            elif start:
                del buf[:start]
                self._line -= start
                self._scan -= start
        return out

    def _parse(self, block: bytearray) -> dict[str, str]:
        if not block:
            raise ProtocolError("empty request")
        if len(block) > self.max_request:
            raise ProtocolError(f"request longer than {self.max_request} bytes")
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("attribute is not valid UTF-8") from None
        lines = text.split("\n")
        if "\r" in text:
            lines = [line.removesuffix("\r") for line in lines]
        if len(lines) > self.max_attrs:
            raise ProtocolError(f"more than {self.max_attrs} attributes")
        try:
            attrs = dict([line.split("=", 1) for line in lines])
        except ValueError:
            raise ProtocolError("attribute line without name=value") from None
        if "" in attrs:
            raise ProtocolError("attribute line without name=value")
        if len(attrs) != len(lines):
            raise ProtocolError("attribute repeated")
        if not text.isascii() and not all(k.isascii() for k in attrs):
            raise ProtocolError("attribute name is not ASCII")
        if attrs.get("request") != "smtpd_access_policy":
            raise ProtocolError("request= is missing or not smtpd_access_policy")
        return attrs


def encode_action(action: str) -> bytes:
    """One reply. Newlines would end the reply early, so they cannot get in."""
    clean = action.replace("\r", " ").replace("\n", " ")
    return f"action={clean}\n\n".encode("utf-8", "replace")
