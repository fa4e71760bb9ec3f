"""clamd INSTREAM client: bytes in, one ScanOutcome out, inside one deadline.

Protocol (clamd(8), section COMMANDS):

    zINSTREAM\\0  then  <uint32 big-endian length><data>  ...  <00 00 00 00>
    reply:  "stream: OK\\0" | "stream: <signature> FOUND\\0" | "<message> ERROR\\0"

The `z` prefix makes clamd NUL-terminate its reply, so a reply is read up to the first NUL
and never further than MAX_REPLY_BYTES.

Contract:
* Blocking and thread-safe (no shared state): one call per pymilter connection thread.
* `timeout_s` is ONE deadline for connect + send + reply together, so the caller's budget
  holds however the time is split; it is never a per-operation timeout that can add up.
* clamd or network trouble never raises: it comes back as ScanStatus.ERROR with a short
  `error` for the log line (connection refused, timeout, clamd's "... ERROR" replies such as
  "INSTREAM size limit exceeded. ERROR", truncated, overlong or garbage replies).
  Programming errors (bad address text, bad arguments, a source that yields `str`) raise,
  and so does reading the caller's own source (a spool read error is not clamd's).
* A "Heuristics.Limits.Exceeded.*" detection (clamd `AlertExceedsMax yes`) means clamd did
  NOT scan everything, so it is an ERROR (with the signature kept), not INFECTED: the
  `on_clamd_error` policy decides, and mail is never silently passed unscanned.

There is deliberately no zIDSESSION variant: docs/decisions/clamd-client.md measures one
connection per part against one session for all parts, and the difference is noise.
"""

from __future__ import annotations

import enum
import math
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO, TypeAlias, cast

from mailwarden import metrics
from mailwarden.addresses import UNIX_PATH_MAX, ListenAddress, parse_listen
from mailwarden.clients import sockets

__all__ = ["UNIX_PATH_MAX", "ClamdAddress", "ScanOutcome", "ScanStatus", "parse_address",
           "parse_reply", "ping", "scan_many", "scan_stream", "version"]

DEFAULT_CHUNK_SIZE = 256 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
MAX_REPLY_BYTES = 4096
MAX_ERROR_CHARS = 160

_LIMITS_PREFIX = "Heuristics.Limits.Exceeded"
_TERMINATOR = struct.pack(">I", 0)

ScanSource: TypeAlias = "bytes | bytearray | memoryview | BinaryIO | Iterable[bytes]"


class ScanStatus(enum.Enum):
    CLEAN = "clean"
    INFECTED = "infected"
    ERROR = "error"


@dataclass(frozen=True)
class ScanOutcome:
    status: ScanStatus
    signature: str = ""  # INFECTED (and limit-exceeded ERROR): clamd's signature name
    error: str = ""  # ERROR: short, ASCII, for the decision log line
    elapsed_s: float = 0.0
    part: str = ""  # scan_many: the label of the part this outcome is about

    @property
    def clean(self) -> bool:
        return self.status is ScanStatus.CLEAN

    @property
    def infected(self) -> bool:
        return self.status is ScanStatus.INFECTED


# Where clamd listens: the one Postfix-notation address type and parser (addresses.py),
# the same notation as policyd.listen and milter.listen.
ClamdAddress = ListenAddress


def parse_address(text: str) -> ClamdAddress:
    """Parse `unix:/abs/path`, `inet:127.0.0.1:3310`, `inet:[::1]:3310`, `inet:localhost:3310`
    with addresses.parse_listen. Raises ValueError with a message fit for a config error."""
    try:
        return parse_listen(text)
    except ValueError as e:
        raise ValueError(f"clamd address {e}") from None


def parse_reply(reply: bytes) -> ScanOutcome:
    """Classify one INSTREAM reply (without its NUL). elapsed_s is left at 0."""
    try:
        text = reply.decode("ascii")
    except UnicodeDecodeError:
        return _error(f"unexpected reply {_short(reply)}")
    if not text.isprintable():
        return _error(f"unexpected reply {_short(reply)}")
    if text == "stream: OK":
        return ScanOutcome(ScanStatus.CLEAN)
    if text.startswith("stream: ") and text.endswith(" FOUND"):
        signature = text[len("stream: "):-len(" FOUND")].strip()
        if not signature:
            return _error(f"unexpected reply {_short(reply)}")
        if signature.startswith(_LIMITS_PREFIX):
            return ScanOutcome(ScanStatus.ERROR, signature=signature,
                               error=_short(f"scan limit exceeded ({signature})"))
        return ScanOutcome(ScanStatus.INFECTED, signature=signature)
    if text.endswith(" ERROR") and text[: -len(" ERROR")].strip():
        message = text[: -len(" ERROR")].strip()
        return _error(f"clamd: {message.removeprefix('stream: ')}")
    return _error(f"unexpected reply {_short(reply)}")


def scan_stream(
    source: ScanSource,
    *,
    address: str | ClamdAddress,
    timeout_s: float,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ScanOutcome:
    """Scan one stream with zINSTREAM. Never raises for clamd or network trouble.

    `source` is bytes, a binary file object (read from its current position to EOF), or an
    iterable of bytes chunks of any size (re-framed into `chunk_size` pieces; empty chunks
    are skipped, they would otherwise end the stream early).
    """
    addr = _address(address)
    _check_args(timeout_s, chunk_size)
    start = time.monotonic()
    outcome = _scan_one(source, addr, start + timeout_s, timeout_s, chunk_size)
    outcome = replace(outcome, elapsed_s=time.monotonic() - start)
    metrics.clamd_scan(outcome.elapsed_s, outcome.status.value)
    return outcome


def scan_many(
    parts: Iterable[tuple[str, ScanSource]],
    *,
    address: str | ClamdAddress,
    timeout_s: float,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ScanOutcome:
    """Scan labelled parts (decoded attachments, the raw message) inside ONE deadline.

    Returns the first INFECTED outcome (and stops there); otherwise the first ERROR (the
    remaining parts are still scanned while time remains, because a later INFECTED is the
    stronger verdict); otherwise CLEAN. `part` names the part the outcome is about and
    `elapsed_s` is the total. An empty `parts` is a programming error.
    """
    addr = _address(address)
    _check_args(timeout_s, chunk_size)
    start = time.monotonic()
    deadline = start + timeout_s
    first_error: ScanOutcome | None = None
    count = 0
    for label, source in parts:
        count += 1
        if first_error is not None and time.monotonic() >= deadline:
            break
        outcome = replace(_scan_one(source, addr, deadline, timeout_s, chunk_size), part=label)
        if outcome.status is ScanStatus.INFECTED:
            return replace(outcome, elapsed_s=time.monotonic() - start)
        if outcome.status is ScanStatus.ERROR and first_error is None:
            first_error = outcome
    if count == 0:
        raise ValueError("scan_many: no parts to scan")
    result = first_error or ScanOutcome(ScanStatus.CLEAN)
    return replace(result, elapsed_s=time.monotonic() - start)


def ping(address: str | ClamdAddress, timeout_s: float = 2.0) -> bool:
    """zPING -> PONG: True only when clamd answers exactly that within the deadline."""
    reply = _command(_address(address), b"zPING\0", timeout_s)
    return reply == b"PONG"


def version(address: str | ClamdAddress, timeout_s: float = 2.0) -> str | None:
    """zVERSION, e.g. "ClamAV 1.4.6/27480/Tue Nov 24 09:32:01 2026"; None when unreachable."""
    reply = _command(_address(address), b"zVERSION\0", timeout_s)
    if reply is None or not reply.startswith(b"ClamAV "):
        return None
    return reply.decode("ascii", "replace")


# --- internals -------------------------------------------------------------------------------


class _Failure(Exception):
    """A clamd/network failure, unwound to one ERROR outcome."""


class _Timeout(_Failure):
    pass


def _address(address: str | ClamdAddress) -> ClamdAddress:
    return address if isinstance(address, ClamdAddress) else parse_address(address)


def _check_args(timeout_s: float, chunk_size: int) -> None:
    if math.isnan(timeout_s) or math.isinf(timeout_s):
        raise ValueError(f"timeout_s must be finite, got {timeout_s!r}")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")


def _error(message: str) -> ScanOutcome:
    return ScanOutcome(ScanStatus.ERROR, error=_short(message))


def _short(value: str | bytes) -> str:
    """ASCII-only, printable, bounded: safe to hand to the log formatter."""
    if isinstance(value, bytes):
        value = repr(value[:MAX_ERROR_CHARS])[1:]  # b'...' -> '...' with escapes
    text = "".join(c if " " <= c <= "~" else "?" for c in value)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


def _remaining(deadline: float, timeout_s: float, phase: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout(f"timeout after {timeout_s:g}s ({phase})")
    return left


def _connect(addr: ClamdAddress, deadline: float, timeout_s: float) -> socket.socket:
    left = _remaining(deadline, timeout_s, "connect")
    try:
        return sockets.connect(addr, left)
    except TimeoutError:
        raise _Timeout(f"timeout after {timeout_s:g}s (connect)") from None
    except OSError as exc:
        raise _Failure(f"connect {addr}: {_describe(exc)}") from None


def _send(sock: socket.socket, data: bytes | memoryview, deadline: float, timeout_s: float,
          phase: str) -> None:
    # sendall() loops over partial sends; since Python 3.5 its timeout bounds the whole call.
    sock.settimeout(_remaining(deadline, timeout_s, phase))
    try:
        sock.sendall(data)
    except TimeoutError:
        raise _Timeout(f"timeout after {timeout_s:g}s ({phase})") from None
    except OSError as exc:
        raise _Failure(f"{phase}: {_describe(exc)}") from None


def _read_reply(sock: socket.socket, deadline: float, timeout_s: float) -> bytes:
    """Bytes up to the first NUL; at most MAX_REPLY_BYTES before it."""
    buf = bytearray()
    while True:
        sock.settimeout(_remaining(deadline, timeout_s, "reply"))
        try:
            data = sock.recv(MAX_REPLY_BYTES + 1 - len(buf))
        except TimeoutError:
            raise _Timeout(f"timeout after {timeout_s:g}s (reply)") from None
        except OSError as exc:
            raise _Failure(f"reply: {_describe(exc)}") from None
        if not data:
            if buf:
                raise _Failure(f"reply truncated (no NUL): {_short(bytes(buf))}")
            raise _Failure("connection closed without a reply")
        buf += data
        end = buf.find(b"\0")
        if end >= 0:
            return bytes(buf[:end])
        if len(buf) > MAX_REPLY_BYTES:
            raise _Failure(f"reply longer than {MAX_REPLY_BYTES} bytes")


def _describe(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


def _iter_chunks(source: ScanSource, chunk_size: int) -> Iterator[bytes | memoryview]:
    """Non-empty chunks of at most chunk_size bytes. Source errors propagate unchanged."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for i in range(0, len(view), chunk_size):
            yield view[i:i + chunk_size]
        return
    if hasattr(source, "read"):
        stream = cast(BinaryIO, source)
        while True:
            data = stream.read(chunk_size)
            if data is None:
                raise TypeError("scan source is a non-blocking stream with no data ready")
            if not isinstance(data, bytes | bytearray):
                raise TypeError(f"scan source read() returned {type(data).__name__}, not bytes")
            if not data:
                return
            yield data
    pending = bytearray()
    for item in source:
        if not isinstance(item, bytes | bytearray | memoryview):
            raise TypeError(f"scan source yielded {type(item).__name__}, not bytes")
        view = memoryview(item).cast("B")
        if pending:
            take = chunk_size - len(pending)
            pending += view[:take]
            view = view[take:]
            if len(pending) < chunk_size:
                continue
            yield bytes(pending)
            pending.clear()
        while len(view) >= chunk_size:  # full chunks go out without a copy
            yield view[:chunk_size]
            view = view[chunk_size:]
        pending += view
    if pending:
        yield bytes(pending)


def _scan_one(source: ScanSource, addr: ClamdAddress, deadline: float, timeout_s: float,
              chunk_size: int) -> ScanOutcome:
    # Only _Failure is caught below: an exception from the caller's own source (a spool read
    # error, a str chunk) propagates and is never mistaken for clamd trouble.
    chunks = _iter_chunks(source, chunk_size)
    try:
        sock = _connect(addr, deadline, timeout_s)
    except _Failure as failure:
        return _error(str(failure))
    with sock:
        try:
            _send(sock, b"zINSTREAM\0", deadline, timeout_s, "send")
            for chunk in chunks:
                _send(sock, b"".join((struct.pack(">I", len(chunk)), chunk)), deadline,
                      timeout_s, "send")
            _send(sock, _TERMINATOR, deadline, timeout_s, "send")
        except _Timeout as failure:
            return _error(str(failure))
        except _Failure as failure:
            # clamd may have answered and hung up mid-stream ("INSTREAM size limit exceeded.
            # ERROR"): its reply is the better explanation than our broken pipe.
            try:
                return parse_reply(_read_reply(sock, deadline, timeout_s))
            except _Failure:
                return _error(str(failure))
        try:
            return parse_reply(_read_reply(sock, deadline, timeout_s))
        except _Failure as failure:
            return _error(str(failure))


def _command(addr: ClamdAddress, command: bytes, timeout_s: float) -> bytes | None:
    if math.isnan(timeout_s) or math.isinf(timeout_s):
        raise ValueError(f"timeout_s must be finite, got {timeout_s!r}")
    deadline = time.monotonic() + timeout_s
    try:
        with _connect(addr, deadline, timeout_s) as sock:
            _send(sock, command, deadline, timeout_s, "send")
            return _read_reply(sock, deadline, timeout_s)
    except _Failure:
        return None
