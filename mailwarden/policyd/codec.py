"""Incremental, bounded codec for Postfix's policy delegation protocol.

A request is `name=value` lines ended by an empty line; the reply is
`action=...` and an empty line. Bytes go in, complete requests (dicts) come
out. Nothing here grows without bound: a line longer than `max_line_bytes`,
more than `max_attributes` attributes, a line without `=`, a repeated
attribute, bytes that are not UTF-8 or a request without `request=` raise
ProtocolError, and the caller logs it and disconnects (SMTPD_POLICY_README:
a malformed request gets no reply).
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """The peer broke the protocol; the message says how (safe to log after escaping)."""


class Decoder:
    def __init__(self, max_line_bytes: int = 8192, max_attributes: int = 100) -> None:
        self.max_line = max_line_bytes
        self.max_attrs = max_attributes
        self._buf = bytearray()
        self._attrs: dict[str, str] = {}

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Consume bytes; return the requests they complete (possibly none)."""
        self._buf += data
        out: list[dict[str, str]] = []
        start = 0
        buf = self._buf
        try:
            # Fast path: whole requests that start at a request boundary, parsed with
            # str methods in C; anything unusual (CR, partial state, a request longer
            # than one line may be) falls through to the line-by-line loop below.
            while not self._attrs:
                end = buf.find(b"\n\n", start)
                if end <= start or end - start > self.max_line:
                    break
                block = buf[start:end]
                if b"\r" in block:
                    break
                try:
                    text = block.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("attribute is not valid UTF-8") from None
                lines = text.split("\n")
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
                    raise ProtocolError("attribute is not valid UTF-8")
                if attrs.get("request") != "smtpd_access_policy":
                    raise ProtocolError("request= is missing or not smtpd_access_policy")
                out.append(attrs)
                start = end + 2
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    if len(buf) - start > self.max_line:
                        raise ProtocolError(f"line longer than {self.max_line} bytes")
                    break
                if nl - start > self.max_line:
                    raise ProtocolError(f"line longer than {self.max_line} bytes")
                line = bytes(buf[start:nl])
                start = nl + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line:
                    out.append(self._finish())
                    continue
                self._attribute(line)
        finally:
            del buf[:start]
        return out

    def _attribute(self, line: bytes) -> None:
        name_b, eq, value_b = line.partition(b"=")
        if not eq or not name_b:
            raise ProtocolError("attribute line without name=value")
        try:
            name, value = name_b.decode("ascii"), value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("attribute is not valid UTF-8") from None
        if name in self._attrs:
            raise ProtocolError(f"attribute {name!r} repeated")
        if len(self._attrs) >= self.max_attrs:
            raise ProtocolError(f"more than {self.max_attrs} attributes")
        self._attrs[name] = value

    def _finish(self) -> dict[str, str]:
        attrs, self._attrs = self._attrs, {}
        if not attrs:
            raise ProtocolError("empty request")
        if attrs.get("request") != "smtpd_access_policy":
            raise ProtocolError("request= is missing or not smtpd_access_policy")
        return attrs


def encode_action(action: str) -> bytes:
    """One reply. Newlines would end the reply early, so they cannot get in."""
    clean = action.replace("\r", " ").replace("\n", " ")
    return f"action={clean}\n\n".encode("utf-8", "replace")
