"""THE parser of a header block: raw lines -> [(name, unfolded value)], in order.

Every reader of a message's top-level header block uses this module: the MIME
walk (which also uses it for the header block of every part), the milter's
final-hop pass (forwarding rule), and authentication (From: domains, forged
Authentication-Results). So a rule sees the same fields whichever pass or
module read them.

How a block is read (`HeaderReader`, one line at a time):

* A block ends at the first empty line (CRLF or LF alike).
* At the top of a message, a first line "From " (mbox separator) is skipped
  (defect "mbox-from-line").
* A line starting with a space or tab continues the previous field; one that
  comes before any field (obs-fold on the first line) is dropped. A line read
  in pieces (longer than `MAX_LINE`) continues too.
* A line without a colon (defect "header-without-colon") is not a field. The
  reader keeps it and what follows: if the part ends, or the cap is reached,
  before an empty line, those lines were the body (no separator), and the MIME
  walk replays them as such.
* A field is split at its first colon; the name is stripped, the value is
  unfolded (RFC 5322 2.2.3: every CRLF/LF removed, the whitespace after it
  kept) and stripped. Bytes are decoded as UTF-8 (RFC 6532); bytes that are not
  UTF-8 become U+FFFD in `fields` (defect "8bit-header") and stay recoverable
  in `raw_fields` (surrogate escapes, for the MIME walk's boundary matching).
* Duplicates are kept, in order; nothing is merged.

Bounds, fail-closed: at most `max_bytes` of the block and `max_fields` fields
are read. Past either, nothing more is added to `fields`, `over_limit` is set
(defect "header-limit"), and the rest of the block is skipped up to its empty
line. A reader must treat `over_limit` as "this block was not fully seen":
the MIME walk turns it into an uninspectable finding, which refuses the
message (attachment.uninspectable, detected=header-limit); the final-hop pass
refuses the same way; authentication sees such a message only if the first
pass, which refuses it, ran with a lower cap.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

MAX_LINE = 64 * 1024  # longer lines are read in pieces of this size
MAX_HEADER_BYTES = 256 * 1024  # default cap of one block (InspectLimits.max_header_bytes)
MAX_FIELDS = 2000  # default cap on the number of fields in one block

_Line = tuple[bytes, bool]  # (bytes, starts a line: the previous piece ended with "\n")
_EOL = re.compile(rb"\r?\n")


class Step(enum.Enum):
    MORE = "more"  # keep feeding lines
    END = "end"  # an empty line ended the block: the body follows
    GLUED = "glued"  # cap reached after a line without a colon: stop, the kept lines are
    # the body; the line just fed was not consumed (read it again as body)


def clean(text: str) -> str:
    """Surrogate-escaped 8-bit bytes -> U+FFFD, for values that leave the parser."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def split_field(logical: bytes) -> tuple[str, str]:
    """One logical field (its folded lines joined) -> (name, unfolded value), both
    surrogate-escaped str."""
    name, _, value = logical.partition(b":")
    unfolded = _EOL.sub(b"", value).strip()
    return (name.strip().decode("utf-8", "surrogateescape"),
            unfolded.decode("utf-8", "surrogateescape"))


@dataclass
class HeaderBlock:
    fields: list[tuple[str, str]]  # (name, unfolded value), U+FFFD for bad bytes, in order
    raw_fields: list[tuple[str, str]]  # the same, surrogate-escaped (bytes recoverable)
    over_limit: bool = False  # the cap cut the block: fail closed (see the module doc)
    complete: bool = False  # an empty line ended it (not the end of input)
    defects: list[str] = field(default_factory=list)


class HeaderReader:
    """The state machine of one header block; feed it (line, starts) pairs."""

    def __init__(self, *, top: bool, max_bytes: int = MAX_HEADER_BYTES,
                 max_fields: int = MAX_FIELDS,
                 defect: Callable[[str], None] | None = None) -> None:
        self.top = top
        self.max_bytes = max_bytes
        self.max_fields = max_fields
        self._defect_cb = defect
        self.defects: list[str] = []
        self.raw: list[bytes] = []  # logical fields, still folded
        self.held: list[_Line] = []  # lines since the first line without a colon
        self.size = 0
        self.over_limit = False
        self._first = True
        self._dropping = False  # past the field cap: continuations of a dropped field

    def _defect(self, name: str) -> None:
        self.defects.append(name)
        if self._defect_cb is not None:
            self._defect_cb(name)

    def _over(self) -> None:
        if not self.over_limit:
            self.over_limit = True
            self._defect("header-limit")

    def feed(self, item: _Line) -> Step:
        line, starts = item
        if starts and line in (b"\r\n", b"\n"):
            self.held = []
            return Step.END
        if self._first and self.top and line.startswith(b"From "):
            self._defect("mbox-from-line")
            self._first = False
            return Step.MORE
        self._first = False
        self.size += len(line)
        if self.size > self.max_bytes:
            self._over()
            if self.held:  # a glued-on body, not a header block: stop here
                return Step.GLUED
            return Step.MORE
        if self.held:
            self.held.append(item)
        if not starts or line[:1] in (b" ", b"\t"):
            if self.raw and not self._dropping:
                self.raw[-1] += line
            return Step.MORE
        if b":" not in line:
            self._defect("header-without-colon")
            if not self.held:
                self.held.append(item)
            return Step.MORE
        if len(self.raw) >= self.max_fields:
            self._over()
            self._dropping = True
            return Step.MORE
        self._dropping = False
        self.raw.append(line)
        return Step.MORE

    def block(self, *, complete: bool) -> HeaderBlock:
        raw_fields = []
        for logical in self.raw:
            if not logical.isascii():
                try:
                    logical.decode("utf-8")  # raw UTF-8 is fine (RFC 6532)
                except UnicodeDecodeError:
                    self._defect("8bit-header")
            raw_fields.append(split_field(logical))
        return HeaderBlock(fields=[(clean(k), clean(v)) for k, v in raw_fields],
                           raw_fields=raw_fields, over_limit=self.over_limit,
                           complete=complete, defects=list(self.defects))


def lines(fp: IO[bytes], max_line: int = MAX_LINE) -> Iterator[_Line]:
    """(line, starts) pairs as the MIME walk reads them: pieces of at most `max_line`."""
    starts = True
    while True:
        line = fp.readline(max_line)
        if not line:
            return
        yield line, starts
        starts = line.endswith(b"\n")


def parse_headers(message: bytes | IO[bytes], *, max_bytes: int = MAX_HEADER_BYTES,
                  max_fields: int = MAX_FIELDS) -> HeaderBlock:
    """The top-level header block of a whole message (bytes, or a binary file read from
    its current position). Reads no further than the block (plus the one line at a cap)."""
    import io

    fp = io.BytesIO(message) if isinstance(message, (bytes, bytearray, memoryview)) \
        else message
    reader = HeaderReader(top=True, max_bytes=max_bytes, max_fields=max_fields)
    for item in lines(fp):
        step = reader.feed(item)
        if step is Step.END:
            return reader.block(complete=True)
        if step is Step.GLUED:
            break
        if reader.over_limit and reader.size > max_bytes + MAX_LINE:
            break  # fail closed already; do not read a huge block to its end
    return reader.block(complete=False)
