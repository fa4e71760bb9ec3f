"""Streaming MIME walk: raw message -> MessageModel.

The body is never held in memory: lines are read with a bounded `readline`,
base64 / quoted-printable are decoded incrementally into one spooled
temporary file per leaf part (memory up to `spool_memory_bytes`, then disk),
and each leaf is handed to `archives.inspect_blob` and to the caller's
`on_part` before the next one is read. Header blocks are capped at
`max_header_bytes`; entities at `max_parts`; nesting at `max_mime_depth`.

Header blocks (the message's and every part's) are read by THE header parser,
inspect/headers.py, which the final-hop pass and authentication use too; its
rules (folding, lines without a colon, caps) are described there.

Leniency choices (each leaves a defect in the model):
  * boundary lines match strictly ("--" boundary ["--"] [LWSP]), innermost
    boundary first; an outer boundary also ends the inner parts
    ("missing-closing-boundary"), and so does the end of the message;
  * a line without a colon in a header block ("header-without-colon") is
    held back: if a blank line follows, it was junk in the header; if the
    part ends (or the block grows past the cap) before a blank line, the part
    had no header/body separator, and the held lines are replayed as its
    body. This covers both evasions: junk before the real headers, and a
    body glued to the headers;
  * base64 skips characters outside the alphabet and decodes across
    padding in the middle ("broken-base64");
  * message/rfc822 (and message/global) parts are decoded and walked as
    messages: their leaf parts are attachments by the same rule as the outer
    message's, and the container itself is not counted, so nothing is
    counted twice.
"""

from __future__ import annotations

import binascii
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from mailwarden.inspect import (
    AttachmentInfo,
    DecodedPart,
    FindingKind,
    InspectLimits,
    MessageModel,
    PartCallback,
)
from mailwarden.inspect.archives import (
    Budget,
    Context,
    LimitReached,
    check_name,
    describe,
    inspect_blob,
)
from mailwarden.inspect.encodings import (
    UU_BEGIN,
    YENC_BEGIN,
    UuDecoder,
    b64_stripped,
    yenc_line,
)
from mailwarden.inspect.filenames import (
    MAX_PARAMS,
    HeaderValue,
    decode_header_bytes,
    decode_rfc2047,
    param_values,
    parse_header_value,
)
from mailwarden.inspect.headers import (
    MAX_FIELDS,
    MAX_LINE,
    HeaderBlock,
    HeaderReader,
    Step,
    clean,
)

_TIME_CHECK_EVERY = 256  # lines
_BLOCK_MAX = 64 * 1024  # bulk reads of base64 bodies (_Lines.block)
_BLOCK_MIN = 1024
_B64_KEEP = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_DELETE = bytes(c for c in range(256) if c not in _B64_KEEP)
_B64_DELETE_ALL = bytes(c for c in range(256) if c not in _B64_KEEP[:-1])
_MAX_TEXT_BLOCKS = 64  # uuencode / yEnc blocks looked for in one text part


class _CallbackFailed(Exception):
    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


@dataclass(frozen=True)
class _Boundary:
    level: int  # index into the boundary stack
    closing: bool


# A line chunk and whether it starts at the beginning of a line.
_Line = tuple[bytes, bool]
# Open multiparts, outermost first: each the delimiters ("--" + boundary) it may
# use. A boundary parameter with whitespace in it is read two ways (whole, and
# up to the whitespace) because readers disagree: Python's compat32 and
# Thunderbird keep "foo bar", Python's default policy reads "foo".
_Stack = list[tuple[bytes, ...]]


class _Lines:
    def __init__(self, fp: IO[bytes], budget: Budget) -> None:
        self.fp = fp
        self.budget = budget
        self.at_start = True
        self.pushed: list[_Line] = []
        self.count = 0
        self.block_size = _BLOCK_MAX

    def next(self) -> _Line | None:
        if self.pushed:
            return self.pushed.pop()
        self.count += 1
        if self.count % _TIME_CHECK_EVERY == 0:
            self.budget.check_time()
        line = self.fp.readline(MAX_LINE)
        if not line:
            return None
        starts = self.at_start
        self.at_start = line.endswith(b"\n")
        return line, starts

    def block(self) -> bytes | None:
        """Whole lines read in one go, up to (not including) the next line that starts
        with "-" (a boundary can only start so). None when the next line starts with "-",
        is longer than the read, or lines were pushed back: then use next().

        The read size adapts (halved when little of a read was used, doubled when all of
        it was), so lines starting with "-" every few lines cannot make the reads cost
        more than a small multiple of the bytes consumed."""
        if self.pushed or not self.at_start or not self.fp.seekable():
            return None
        self.budget.check_time()
        pos = self.fp.tell()
        data = self.fp.read(self.block_size)
        if not data or data[:1] == b"-":
            self.fp.seek(pos)
            return None
        cut = data.find(b"\n-")
        end = cut + 1 if cut >= 0 else data.rfind(b"\n") + 1
        if end <= 0 and len(data) < self.block_size:  # the last line, without a newline
            end = len(data)
        if end * 2 < len(data):
            self.block_size = max(_BLOCK_MIN, self.block_size // 2)
        elif cut < 0:
            self.block_size = min(_BLOCK_MAX, self.block_size * 2)
        if end <= 0:
            self.fp.seek(pos)
            return None
        if end != len(data):
            self.fp.seek(pos + end)
        self.at_start = data[end - 1:end] == b"\n"
        return data[:end]

    def mark(self) -> tuple[int, bool] | None:
        """Where the next line starts, if the input can be re-read from there."""
        if self.pushed or not self.fp.seekable():
            return None
        return self.fp.tell(), self.at_start

    def reset(self, mark: tuple[int, bool]) -> None:
        self.fp.seek(mark[0])
        self.at_start = mark[1]

    def push(self, lines: list[_Line]) -> None:
        """Make `lines` the next ones read, in order."""
        self.pushed.extend(reversed(lines))


def _match_boundary(item: _Line, stack: _Stack) -> _Boundary | None:
    line, starts = item
    if not starts or not line.startswith(b"--") or not stack:
        return None
    body = line.rstrip(b"\r\n")
    for level in range(len(stack) - 1, -1, -1):
        for delim in stack[level]:
            if body.startswith(delim):
                rest = body[len(delim) :]
                closing = rest.startswith(b"--")
                if closing:
                    rest = rest[2:]
                if not rest.strip(b" \t"):
                    return _Boundary(level, closing)
    return None


def _split_eol(line: bytes) -> tuple[bytes, bytes]:
    if line.endswith(b"\r\n"):
        return line[:-2], b"\r\n"
    if line.endswith(b"\n"):
        return line[:-1], b"\n"
    return line, b""


# ------------------------------------------------------------------ decoders


class _Base64:
    """Lenient base64: characters outside the alphabet are skipped, and data
    after "=" padding is decoded as a new quantum (per-line encoders pad each
    line). `mid_padding` says padding was followed by data: decoders that skip
    such "=" (Python's binascii, many clients) read other bytes, so the walker
    decodes the part a second time that way (`encodings.b64_stripped`)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.buf = bytearray()
        self.mid_padding = False
        self._after_pad = False

    def _segment(self, seg: bytes) -> bytes:
        if len(seg) % 4 == 1:
            self.ctx.defect("broken-base64")
            seg = seg[:-1]
        return binascii.a2b_base64(seg + b"=" * (-len(seg) % 4)) if seg else b""

    def feed(self, line: bytes, eol: bytes) -> tuple[bytes, bytes]:
        return self._feed(line), b""

    def feed_block(self, lines: bytes) -> bytes:
        return self._feed(lines)

    def _feed(self, line: bytes) -> bytes:
        clean = line.translate(None, _B64_DELETE)
        if len(clean) != len(line.translate(None, b" \t\r\n")):
            self.ctx.defect("broken-base64")
        if clean:
            if (self._after_pad and clean.lstrip(b"=")) or b"=" in clean.rstrip(b"="):
                self.mid_padding = True
            self._after_pad = clean.endswith(b"=") or (self._after_pad
                                                       and not clean.strip(b"="))
        self.buf += clean
        if b"=" in clean:
            *done, rest = re.split(rb"=+", bytes(self.buf))
            out = b"".join(self._segment(seg) for seg in done)
            self.buf = bytearray(rest)
            return out + self._flush_whole()
        if len(self.buf) >= 64 * 1024:
            return self._flush_whole()
        return b""

    def _flush_whole(self) -> bytes:
        n = len(self.buf) // 4 * 4
        out = binascii.a2b_base64(self.buf[:n]) if n else b""
        del self.buf[:n]
        return out

    def finish(self) -> bytes:
        out = self._flush_whole()
        if self.buf:
            out += self._segment(bytes(self.buf))
            self.buf.clear()
        return out


class _QuotedPrintable:
    def feed(self, line: bytes, eol: bytes) -> tuple[bytes, bytes]:
        text = line.rstrip(b" \t")
        if eol and text.endswith(b"="):
            return binascii.a2b_qp(text[:-1]), b""  # soft line break
        return binascii.a2b_qp(line), eol

    def finish(self) -> bytes:
        return b""


class _Stripped:
    """The second reading of a base64 body with padding inside: every "="
    ignored (see `_Base64`)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, line: bytes, eol: bytes) -> tuple[bytes, bytes]:
        self.buf += line.translate(None, _B64_DELETE_ALL)
        n = len(self.buf) // 4 * 4
        out = b64_stripped(bytes(self.buf[:n])) if n else b""
        del self.buf[:n]
        return out, b""

    def finish(self) -> bytes:
        out = b64_stripped(bytes(self.buf))
        self.buf.clear()
        return out


class _Identity:
    def feed(self, line: bytes, eol: bytes) -> tuple[bytes, bytes]:
        return line, eol

    def finish(self) -> bytes:
        return b""


_Decoder = _Base64 | _QuotedPrintable | _Identity | _Stripped | UuDecoder


# -------------------------------------------------------------------- walker


@dataclass
class _Headers:
    fields: list[tuple[str, str]]
    stop: _Boundary | None  # the part ended inside its header block
    eof: bool
    body_lines: list[_Line]  # replay these as the body (no blank line was found)

    def first(self, name: str) -> str | None:
        for key, value in self.fields:
            if key.lower() == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key.lower() == name]


_clean = clean  # surrogate-escaped 8-bit bytes -> U+FFFD, for values that leave the walker


def _pick_content_type(headers: _Headers) -> HeaderValue:
    """With several Content-Type headers, clients disagree on which wins; take
    a multipart one with a boundary if any, since reading the structure
    exposes the parts a client could show, and reading it as one leaf hides them."""
    values = headers.all("content-type")
    if len(set(values)) > 1:
        return next((v for v in (parse_header_value(x) for x in values)
                     if v.value.startswith("multipart/") and v.get("boundary")),
                    parse_header_value(values[0]))
    return parse_header_value(values[0] if values else "")


_COMMENT = re.compile(r"\([^()]*\)")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_UU_CTES = ("x-uuencode", "x-uue", "uuencode", "uue")


def cte_token(value: str) -> str:
    """The encoding a lenient reader takes from a Content-Transfer-Encoding
    value: comments dropped, the first token, lower-cased. Thunderbird (and
    Outlook) decode "base64 x", "base64 (binary)" and "base64;" as base64;
    Python's email does not; the reading that finds the attachment wins."""
    m = _TOKEN.search(_COMMENT.sub(" ", value))
    return m.group(0).lower() if m else ""


def _pick_encoding(headers: _Headers) -> str:
    """Of several Content-Transfer-Encodings, the one that decodes most."""
    found = {cte_token(v) for v in headers.all("content-transfer-encoding")}
    for cte in ("base64", "quoted-printable", *_UU_CTES):
        if cte in found:
            return "x-uuencode" if cte in _UU_CTES else cte
    return ""


class _Walker:
    def __init__(self, ctx: Context, model: MessageModel, on_part: PartCallback | None) -> None:
        self.ctx = ctx
        self.limits = ctx.limits
        self.model = model
        self.on_part = on_part
        self.entities = 0
        self.leaves = 0
        self._last_block = HeaderBlock([], [])

    # --- header blocks

    def _read_headers(self, lines: _Lines, stack: _Stack, top: bool) -> _Headers:
        """One header block, read by THE header parser (inspect/headers.py); this loop
        adds only what a stream of parts needs: boundaries, and handing back the lines
        that turn out to be a body."""
        reader = HeaderReader(top=top, max_bytes=self.limits.max_header_bytes,
                              defect=self._header_defect)
        while True:
            item = lines.next()
            if item is None:
                return self._finish_headers(reader, None, True)
            boundary = _match_boundary(item, stack)
            if boundary is not None:
                if reader.held:
                    # The held lines were this part's body (no blank line came):
                    # the boundary ends that body, so it is read again after them.
                    lines.push([item])
                    return self._finish_headers(reader, None, False)
                return self._finish_headers(reader, boundary, False)
            raw = item[0]
            if b"\r" in (raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")):
                # A bare CR ends a line for Python's email: what follows it is
                # another field, or the end of the header block, for that
                # reader, and part of this line for us. Ambiguous structure.
                self.ctx.add(FindingKind.UNINSPECTABLE, self.ctx.where, "bare-cr-in-header",
                             "a header line with a bare CR in it")
            if (reader.held and raw[:1] not in (b" ", b"\t") and item[1]
                    and b":" in raw and raw.strip()):
                # A field after a line without a colon: for Python's email the
                # header block ended at that line (the rest is body); we read
                # on. Two readings of the structure: uninspectable.
                self.ctx.add(FindingKind.UNINSPECTABLE, self.ctx.where, "header-without-colon",
                             "a header field after a line that is not one")
            step = reader.feed(item)
            if step is Step.END:
                return self._finish_headers(reader, None, False)
            if step is Step.GLUED:
                lines.push([item])
                return self._finish_headers(reader, None, False)

    def _header_defect(self, name: str) -> None:
        self.ctx.defect(name)
        if name == "header-limit":
            self.ctx.add(FindingKind.UNINSPECTABLE, "", "header-limit",
                         f"header block over {self.limits.max_header_bytes} bytes or "
                         f"{MAX_FIELDS} fields")

    def _finish_headers(self, reader: HeaderReader, stop: _Boundary | None,
                        eof: bool) -> _Headers:
        block = reader.block(complete=stop is None and not eof)
        # raw_fields keep 8-bit bytes recoverable (a boundary must match byte for byte);
        # block.fields is the text for the model.
        self._last_block = block
        return _Headers(block.raw_fields, stop, eof, reader.held)

    # --- entities

    def walk(self, lines: _Lines, prefix: str, depth: int, top: bool) -> None:
        headers = self._read_headers(lines, [], top)
        if top:
            self.model.headers = self._last_block.fields
        self._entity(lines, [], headers, prefix, depth, "text/plain")

    def _entity(self, lines: _Lines, stack: _Stack, headers: _Headers, prefix: str,
                depth: int, default_type: str) -> _Boundary | None:
        """Walk one entity whose headers are read; return the boundary that
        ended it (None at the end of input)."""
        self.entities += 1
        if self.entities > self.limits.max_parts:
            raise LimitReached("part-limit", f"more than {self.limits.max_parts} MIME parts")
        if headers.body_lines:
            lines.push(headers.body_lines)
        elif headers.stop is not None or headers.eof:
            # The part ended inside its header block: an empty body.
            self._leaf(lines, stack, headers, prefix, default_type, empty=True)
            return headers.stop
        if any(len(headers.all(h)) > 1 for h in ("content-type", "content-transfer-encoding")):
            self.ctx.defect("duplicate-header")
        for name in ("content-type", "content-disposition"):
            if any(parse_header_value(v).truncated for v in headers.all(name)):
                # A filename, name or boundary after the cap would not be seen.
                self.ctx.add(FindingKind.UNINSPECTABLE, prefix.rstrip("/"), "header-param-limit",
                             f"{name} with more than {MAX_PARAMS} parameters")
        ctype = _pick_content_type(headers)
        main = ctype.value if "/" in ctype.value else default_type
        if main.startswith("multipart/"):
            boundary = ctype.get("boundary")
            if not boundary:
                # No reader can split it the way the sender meant: its parts
                # are whatever a client guesses. Ambiguous structure.
                self.ctx.defect("multipart-without-boundary")
                self.ctx.add(FindingKind.UNINSPECTABLE, prefix.rstrip("/"),
                             "multipart-without-boundary", main)
            elif depth >= self.limits.max_mime_depth:
                self.ctx.add(FindingKind.UNINSPECTABLE, prefix.rstrip("/"), "mime-depth-limit",
                             f"MIME nesting deeper than {self.limits.max_mime_depth}")
            else:
                inner = "message/rfc822" if main == "multipart/digest" else "text/plain"
                return self._multipart(lines, stack, headers,
                                       boundary.encode("utf-8", "surrogateescape"),
                                       prefix, depth, inner)
        if main.startswith("message/") and main != "message/partial":
            # Every message/* is walked as a message (rfc822, global, news,
            # delivery-status, external-body...): Python's email does, and a
            # client may show any of them as an attached message.
            if depth < self.limits.max_mime_depth:
                return self._attached_message(lines, stack, headers, prefix, depth)
            self.ctx.add(FindingKind.UNINSPECTABLE, prefix.rstrip("/"), "mime-depth-limit",
                         f"MIME nesting deeper than {self.limits.max_mime_depth}")
        if main == "message/partial":
            self.ctx.add(FindingKind.UNINSPECTABLE, prefix.rstrip("/"), "message-partial",
                         "fragment of a message split over several mails")
        return self._leaf(lines, stack, headers, prefix, main)

    def _skip_to_boundary(self, lines: _Lines, stack: _Stack) -> _Boundary | None:
        while True:
            item = lines.next()
            if item is None:
                return None
            found = _match_boundary(item, stack)
            if found is not None:
                return found

    def _multipart(self, lines: _Lines, stack: _Stack, headers: _Headers, boundary: bytes,
                   prefix: str, depth: int, inner_default: str) -> _Boundary | None:
        mine = len(stack)
        alternatives = [boundary]
        first = boundary.split(None, 1)[0] if boundary.strip() else b""
        if first and first != boundary:
            self.ctx.defect("boundary-with-space")
            alternatives.append(first)
        inner = [*stack, tuple(b"--" + b for b in alternatives)]
        start = lines.mark()
        stop = self._skip_to_boundary(lines, inner)  # the preamble
        if (stop is None or stop.level < mine) and start is not None:
            # The boundary never appears: rather than skip the whole body as
            # preamble, read it again as one opaque part and inspect that.
            self.ctx.defect("boundary-not-found")
            lines.reset(start)
            return self._leaf(lines, stack, headers, prefix, "application/octet-stream")
        while True:
            if stop is None:
                self.ctx.defect("missing-closing-boundary")
                return None
            if stop.level < mine:
                self.ctx.defect("missing-closing-boundary")
                return stop
            if stop.closing:
                return self._skip_to_boundary(lines, stack)  # the epilogue
            headers = self._read_headers(lines, inner, False)
            stop = self._entity(lines, inner, headers, prefix, depth + 1, inner_default)

    def _attached_message(self, lines: _Lines, stack: _Stack, headers: _Headers,
                          prefix: str, depth: int) -> _Boundary | None:
        names = self._names(headers)
        label = names[0] if names else "attached-message"
        for name in names:
            check_name(self.ctx, name, prefix + name)
        with self._spool() as body:
            stop, _, _ = self._decode_body(lines, stack, headers, body)
            body.seek(0)
            self.walk(_Lines(body, self.ctx.budget), prefix + label + "/", depth + 1, top=False)
        return stop

    # --- leaves

    def _spool(self) -> IO[bytes]:
        return tempfile.SpooledTemporaryFile(max_size=self.limits.spool_memory_bytes)

    def _names(self, headers: _Headers) -> list[str]:
        """Every name a reader may give the part: filename= and name= on either
        header (clients read both), and the old Content-Name: (Eudora, Outlook
        Express) and X-Sun-Data-Name: (Sun mailtool, still honoured by
        Thunderbird) headers."""
        names: list[str] = []
        for header in ("content-disposition", "content-type"):
            for value in headers.all(header):
                parsed = parse_header_value(value)
                names += param_values(parsed, "filename")
                names += param_values(parsed, "name")
        for header in ("content-name", "x-sun-data-name"):
            names += [decode_rfc2047(v) for v in headers.all(header)]
        return list(dict.fromkeys(_clean(n).strip() for n in names if n.strip()))

    def _decode_body(self, lines: _Lines, stack: _Stack, headers: _Headers,
                     out: IO[bytes], stripped: bool = False,
                     ) -> tuple[_Boundary | None, int, bool]:
        """Decode the body into `out`: (the boundary that ended it, the decoded
        size, whether base64 padding was followed by more data)."""
        cte = _pick_encoding(headers)
        if not cte and any(cte_token(v) not in ("7bit", "8bit", "binary")
                           for v in headers.all("content-transfer-encoding")):
            self.ctx.defect("unknown-transfer-encoding")
        decoder: _Decoder
        if stripped:
            decoder = _Stripped()
        elif cte == "base64":
            decoder = _Base64(self.ctx)
        elif cte == "quoted-printable":
            decoder = _QuotedPrintable()
        elif cte == "x-uuencode":
            decoder = UuDecoder()
        else:
            decoder = _Identity()
        size = 0
        pending_eol = b""
        stop: _Boundary | None = None
        bulk = decoder if isinstance(decoder, _Base64) else None
        while True:
            if bulk is not None:
                # base64 ignores line ends: decode whole runs of lines that cannot be
                # boundaries at once instead of line by line
                chunk = lines.block()
                if chunk is not None:
                    if b"\r-" in chunk:
                        self._bare_cr_boundary(chunk, stack)
                    data = bulk.feed_block(chunk)
                    if data:
                        out.write(data)
                        size += len(data)
                    continue
            item = lines.next()
            if item is None:
                if stack:
                    self.ctx.defect("missing-closing-boundary")
                break
            stop = _match_boundary(item, stack)
            if stop is not None:
                pending_eol = b""  # the line break before a boundary belongs to it
                break
            line, eol = _split_eol(item[0])
            if b"\r-" in line:
                self._bare_cr_boundary(line, stack)
            data, held = decoder.feed(line, eol)
            data = pending_eol + data
            pending_eol = held
            if data:
                out.write(data)
                size += len(data)
        tail = decoder.finish() + pending_eol
        if tail:
            out.write(tail)
            size += len(tail)
        if isinstance(decoder, UuDecoder):
            for raw in decoder.names:
                name = decode_header_bytes(raw)
                check_name(self.ctx, name, f"{self.ctx.where}/{name}".lstrip("/"))
        return stop, size, isinstance(decoder, _Base64) and decoder.mid_padding

    def _bare_cr_boundary(self, data: bytes, stack: _Stack) -> None:
        """A boundary after a bare CR is a boundary for Python's email (which
        ends lines at a bare CR) and body text for us: ambiguous structure."""
        for level in stack:
            for delim in level:
                if b"\r" + delim in data:
                    self.ctx.add(FindingKind.UNINSPECTABLE, self.ctx.where,
                                 "bare-cr-boundary", "a boundary after a bare CR")
                    return

    def _inspect(self, body: IO[bytes], size: int, display: str) -> str:
        """inspect_blob, with the limits that end one part (not the walk) and
        internal errors turned into findings."""
        try:
            body.flush()
            return inspect_blob(self.ctx, body, size, display, 0)
        except LimitReached as limit:
            if limit.detected == "time-limit":
                raise
            # The message's inflation budget is spent: say so, and go
            # on with the other parts (their names are still checked).
            self.ctx.add(FindingKind.UNINSPECTABLE, self.ctx.where, limit.detected,
                         limit.detail)
        except Exception as exc:  # a bug must not end the walk: report it
            self.ctx.add(FindingKind.UNINSPECTABLE, display, "internal-error", describe(exc))
        return "unknown"

    def _second_reading(self, lines: _Lines, stack: _Stack, headers: _Headers,
                        start: tuple[int, bool] | None, display: str) -> None:
        """Decode a base64 body again with every "=" ignored, and inspect that."""
        self.ctx.defect("base64-padding-inside")
        end = lines.mark()
        if start is None or end is None:
            self.ctx.add(FindingKind.UNINSPECTABLE, display, "ambiguous-base64",
                         "padding inside the data, and the body cannot be read twice")
            return
        lines.reset(start)
        with self._spool() as alt:
            _, size, _ = self._decode_body(lines, stack, headers, alt, stripped=True)
            lines.reset(end)
            if size:
                self._inspect(alt, size, display)

    def _scan_text(self, body: IO[bytes], display: str) -> None:
        """uuencode and yEnc blocks in a decoded text body: clients show them
        as attachments, so each block is decoded and inspected as one."""
        body.seek(0)
        state = ""
        name = b""
        blocks = 0
        count = 0
        block: IO[bytes] | None = None
        decoder: UuDecoder | None = None
        size = 0
        while True:
            line = body.readline(MAX_LINE)
            count += 1
            if count % _TIME_CHECK_EVERY == 0:
                self.ctx.budget.check_time()
            text = line.rstrip(b"\r\n")
            if state and (not line or (state == "yenc" and text.startswith(b"=yend"))
                          or (state == "uu" and decoder is not None and not decoder.state)):
                assert block is not None
                if decoder is not None:
                    tail = decoder.finish()
                    block.write(tail)
                    size += len(tail)
                self._text_block(block, size, display, decode_header_bytes(name))
                block.close()
                state, block, decoder, size = "", None, None, 0
            if not line:
                return
            if not state:
                uu = UU_BEGIN.match(text)
                ye = YENC_BEGIN.match(text) if uu is None else None
                if uu is None and ye is None:
                    continue
                blocks += 1
                self.ctx.budget.tick()
                if blocks > _MAX_TEXT_BLOCKS:
                    self.ctx.add(FindingKind.UNINSPECTABLE, display, "text-block-limit",
                                 f"more than {_MAX_TEXT_BLOCKS} encoded blocks in a text part")
                    return
                block = self._spool()
                if uu is not None:
                    state, name = "uu", uu.group(2)
                    decoder = UuDecoder()
                    decoder.feed(text, b"")
                else:
                    assert ye is not None
                    state, name = "yenc", ye.group(1)
                continue
            assert block is not None
            if state == "uu":
                assert decoder is not None
                data, _ = decoder.feed(text, b"")
            elif text.startswith((b"=ypart ", b"=ybegin ")):
                continue
            else:
                data = yenc_line(text)
            block.write(data)
            size += len(data)

    def _text_block(self, block: IO[bytes], size: int, display: str, name: str) -> None:
        path = f"{display}/{name}"
        check_name(self.ctx, name, path)
        if size:
            self._inspect(block, size, path)

    def _leaf(self, lines: _Lines, stack: _Stack, headers: _Headers, prefix: str,
              main: str, empty: bool = False) -> _Boundary | None:
        index = self.leaves
        self.leaves += 1
        names = self._names(headers)
        best = names[0] if names else ""
        display = prefix + (best or f"(part {index + 1})")
        self.ctx.where = display
        for name in names:
            check_name(self.ctx, name, prefix + name)
        disposition = parse_header_value(headers.first("content-disposition") or "")
        is_attachment = (disposition.value == "attachment" or bool(names)
                         or not main.startswith("text/"))
        with self._spool() as body:
            stop: _Boundary | None = None
            size = 0
            twice = False
            start = lines.mark()
            if not empty:
                stop, size, twice = self._decode_body(lines, stack, headers, body)
            else:
                stop = headers.stop
            detected = "empty"
            if size:
                detected = self._inspect(body, size, display)
                if main.startswith("text/") and detected in ("text", "unknown"):
                    self._scan_text(body, display)
            if twice:
                self._second_reading(lines, stack, headers, start, display)
            info = AttachmentInfo(best, main, size, detected)
            if is_attachment:
                self.model.attachments.append(info)
                self.model.total_attachment_bytes += size
            if self.on_part is not None:
                body.seek(0)
                part = DecodedPart(index, prefix + best if best else "", info, is_attachment)
                try:
                    self.on_part(part, cast(BinaryIO, body))
                except BaseException as exc:
                    raise _CallbackFailed(exc) from exc
        return stop


def inspect_message(fp: BinaryIO, limits: InspectLimits, deadline: float, *,
                    on_part: PartCallback | None = None,
                    clock: Callable[[], float] = time.monotonic) -> MessageModel:
    """Inspect a whole raw message (headers + body, CRLF or LF line ends)
    from a seekable binary file, within `deadline` on `clock`.

    Never raises for anything in the message: limits give UNINSPECTABLE
    findings (detected = "time-limit", "part-limit", ...), and an internal
    error gives one with detected = "internal-error". Exceptions raised by
    `on_part` are re-raised unchanged.
    """
    model = MessageModel()
    ctx = Context(limits, Budget(limits, deadline, clock))
    walker = _Walker(ctx, model, on_part)
    try:
        fp.seek(0)
        walker.walk(_Lines(fp, ctx.budget), "", 0, top=True)
    except LimitReached as limit:
        where = ctx.where
        if limit.detected == "part-limit":
            ctx.defect("part-limit")
            where = ""  # about the message, not the part last seen
        ctx.add(FindingKind.UNINSPECTABLE, where, limit.detected, limit.detail)
    except _CallbackFailed as failed:
        raise failed.original from None
    except Exception as exc:  # the contract: nothing escapes
        ctx.add(FindingKind.UNINSPECTABLE, ctx.where, "internal-error", describe(exc))
    model.findings = ctx.findings
    model.defects = ctx.defects
    return model
