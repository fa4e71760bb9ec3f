"""mailwarden.clients.clamd without clamd: reply parsing, address parsing, INSTREAM framing.

Framing tests talk to a tiny in-test unix-socket server that decodes the frames exactly as
clamd does (4-byte big-endian length, zero-length terminator). Behaviour against the real
clamd is in tests/integration/test_clamd.py.
"""

from __future__ import annotations

import io
import shutil
import socket
import socketserver
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailwarden.clients.clamd import (
    MAX_REPLY_BYTES,
    ClamdAddress,
    ScanOutcome,
    ScanStatus,
    parse_address,
    parse_reply,
    ping,
    scan_many,
    scan_stream,
    version,
)

CLEAN, INFECTED, ERROR = ScanStatus.CLEAN, ScanStatus.INFECTED, ScanStatus.ERROR

# --- reply parsing ---------------------------------------------------------------------------

REPLY_CASES = [
    # (case name, reply without NUL, status, signature, substring of error)
    ("clean", b"stream: OK", CLEAN, "", ""),
    ("eicar", b"stream: Eicar-Test-Signature FOUND", INFECTED, "Eicar-Test-Signature", ""),
    ("official eicar hdb", b"stream: Win.Test.EICAR_HDB-1 FOUND", INFECTED,
     "Win.Test.EICAR_HDB-1", ""),
    ("unofficial suffix", b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND", INFECTED,
     "Eicar-Test-Signature.UNOFFICIAL", ""),
    ("size limit", b"INSTREAM size limit exceeded. ERROR", ERROR, "",
     "clamd: INSTREAM size limit exceeded."),
    ("stream error", b"stream: Can't allocate memory ERROR", ERROR, "",
     "clamd: Can't allocate memory"),
    ("limits exceeded is not a virus", b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND",
     ERROR, "Heuristics.Limits.Exceeded.MaxFileSize", "scan limit exceeded"),
    ("empty", b"", ERROR, "", "unexpected reply"),
    ("bare ERROR", b"ERROR", ERROR, "", "unexpected reply"),
    ("FOUND without signature", b"stream:  FOUND", ERROR, "", "unexpected reply"),
    ("OK for another file", b"/etc/passwd: OK", ERROR, "", "unexpected reply"),
    ("unknown command", b"UNKNOWN COMMAND", ERROR, "", "unexpected reply"),
    ("command read timeout", b"COMMAND READ TIMED OUT", ERROR, "", "unexpected reply"),
    ("PONG is not a scan result", b"PONG", ERROR, "", "unexpected reply"),
    ("newline inside", b"stream: OK\nstream: OK", ERROR, "", "unexpected reply"),
    ("non-ascii", "stream: Virüs FOUND".encode(), ERROR, "", "unexpected reply"),
    ("binary garbage", b"\x00\xff\x13garbage", ERROR, "", "unexpected reply"),
]


@pytest.mark.parametrize(("reply", "status", "signature", "error"),
                         [c[1:] for c in REPLY_CASES], ids=[c[0] for c in REPLY_CASES])
def test_parse_reply(reply: bytes, status: ScanStatus, signature: str, error: str) -> None:
    outcome = parse_reply(reply)
    assert outcome.status is status
    assert outcome.signature == signature
    assert error in outcome.error
    if status is not ERROR:
        assert outcome.error == ""


def test_error_text_is_short_printable_ascii() -> None:
    outcome = parse_reply(b"\x1b[31m" + "ồ".encode() * 400 + b" FOUND")
    assert outcome.status is ERROR
    assert len(outcome.error) <= 160
    assert all(" " <= c <= "~" for c in outcome.error), outcome.error


# --- address parsing -------------------------------------------------------------------------

GOOD_ADDRESSES = [
    ("unix", "unix:/run/clamav/clamd.ctl", ClamdAddress("unix", path="/run/clamav/clamd.ctl")),
    ("inet v4", "inet:127.0.0.1:3310", ClamdAddress("inet", host="127.0.0.1", port=3310)),
    ("inet v6", "inet:[::1]:3310", ClamdAddress("inet", host="::1", port=3310)),
    ("inet name", "inet:localhost:3310", ClamdAddress("inet", host="localhost", port=3310)),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in GOOD_ADDRESSES],
                         ids=[c[0] for c in GOOD_ADDRESSES])
def test_parse_address(text: str, expected: ClamdAddress) -> None:
    assert parse_address(text) == expected
    assert str(parse_address(text)) == text  # round trip for logs and config-check


BAD_ADDRESSES = [
    ("no type", "/run/clamav/clamd.ctl"),
    ("unknown type", "tcp:127.0.0.1:3310"),
    ("relative path", "unix:clamd.ctl"),
    ("empty path", "unix:"),
    ("path too long for sun_path", "unix:/" + "d" * 107),
    ("no port", "inet:127.0.0.1"),
    ("empty host", "inet::3310"),
    ("port zero", "inet:127.0.0.1:0"),
    ("port too big", "inet:127.0.0.1:65536"),
    ("port not a number", "inet:127.0.0.1:clamd"),
    ("unbracketed v6", "inet:::1:3310"),
    ("bracket not closed", "inet:[::1:3310"),
    ("bracketed v4", "inet:[127.0.0.1]:3310"),
    ("bracket without port", "inet:[::1]"),
]


@pytest.mark.parametrize("text", [c[1] for c in BAD_ADDRESSES], ids=[c[0] for c in BAD_ADDRESSES])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="clamd address"):
        parse_address(text)


def test_scan_with_bad_address_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        scan_stream(b"x", address="clamd.ctl", timeout_s=1)


# --- a fake clamd for framing ----------------------------------------------------------------


@dataclass
class Received:
    command: bytes = b""
    chunk_sizes: list[int] = field(default_factory=list)
    payload: bytearray = field(default_factory=bytearray)
    terminated: bool = False


def recv_exact(conn: socket.socket, n: int, piece: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = conn.recv(min(piece, n - len(buf)))
        if not data:
            raise EOFError
        buf += data
    return bytes(buf)


def read_instream(conn: socket.socket, got: Received, piece: int = 65536,
                  stop_after: int | None = None) -> None:
    """Decode one zINSTREAM request the way clamd does, reading `piece` bytes at a time."""
    got.command = recv_exact(conn, len(b"zINSTREAM\0"), piece)
    while True:
        (size,) = struct.unpack(">I", recv_exact(conn, 4, piece))
        if size == 0:
            got.terminated = True
            return
        got.chunk_sizes.append(size)
        got.payload += recv_exact(conn, size, piece)
        if stop_after is not None and len(got.payload) >= stop_after:
            return


Handler = Callable[[socket.socket, Received], None]


class FakeClamd:
    def __init__(self, handler: Handler) -> None:
        self.dir = tempfile.mkdtemp(prefix="mwc-", dir="/tmp")
        self.path = f"{self.dir}/clamd.sock"
        self.received: list[Received] = []
        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                got = Received()
                outer.received.append(got)
                try:
                    handler(self.request, got)
                except (EOFError, OSError):
                    pass  # the client under test hung up: that is what some tests do

        self.server = socketserver.ThreadingUnixStreamServer(self.path, _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake() -> Iterator[Callable[[Handler], FakeClamd]]:
    servers: list[FakeClamd] = []

    def make(handler: Handler) -> FakeClamd:
        servers.append(FakeClamd(handler))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def answering(reply: bytes, piece: int = 65536) -> Handler:
    def handle(conn: socket.socket, got: Received) -> None:
        read_instream(conn, got, piece)
        conn.sendall(reply)

    return handle


PAYLOAD = bytes(range(256)) * 4099  # 1 049 344 bytes: not a multiple of any chunk size

SOURCES: list[tuple[str, Callable[[], object]]] = [
    ("bytes", lambda: PAYLOAD),
    ("bytearray", lambda: bytearray(PAYLOAD)),
    ("memoryview", lambda: memoryview(PAYLOAD)),
    ("file", lambda: io.BytesIO(PAYLOAD)),
    ("one big chunk", lambda: [PAYLOAD]),
    ("odd chunks with empties", lambda: [PAYLOAD[i:i + 777] for i in range(0, len(PAYLOAD), 777)]
     + [b""] * 3),
    ("empty chunk first and between", lambda: [b"", PAYLOAD[:10], b"", PAYLOAD[10:]]),
    ("generator", lambda: (PAYLOAD[i:i + 65536] for i in range(0, len(PAYLOAD), 65536))),
]


@pytest.mark.parametrize("make_source", [s[1] for s in SOURCES], ids=[s[0] for s in SOURCES])
def test_framing_reassembles_payload(fake: Callable[[Handler], FakeClamd],
                                     make_source: Callable[[], object]) -> None:
    server = fake(answering(b"stream: OK\0"))
    outcome = scan_stream(make_source(), address=server.address, timeout_s=10,  # type: ignore[arg-type]
                          chunk_size=100_000)
    assert outcome.status is CLEAN, outcome
    [got] = server.received
    assert got.command == b"zINSTREAM\0"
    assert got.terminated
    assert bytes(got.payload) == PAYLOAD
    assert 0 not in got.chunk_sizes  # an empty chunk would have ended the stream early
    assert max(got.chunk_sizes) <= 100_000


def test_default_chunk_size_is_256_kib(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(answering(b"stream: OK\0"))
    scan_stream(PAYLOAD, address=server.address, timeout_s=10)
    assert server.received[0].chunk_sizes == [262144] * 4 + [len(PAYLOAD) - 4 * 262144]


def test_empty_source_sends_only_the_terminator(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(answering(b"stream: OK\0"))
    assert scan_stream(b"", address=server.address, timeout_s=10).status is CLEAN
    assert server.received[0].chunk_sizes == []
    assert server.received[0].terminated


def test_slow_reader_forces_partial_sends(fake: Callable[[Handler], FakeClamd]) -> None:
    """The server drains 4 KiB at a time and keeps its receive buffer small, so the client's
    sends complete only in part again and again; the stream must still arrive intact."""
    big = bytes(range(251)) * 40_000  # ~10 MB, far above any socket buffer

    def handle(conn: socket.socket, got: Received) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        read_instream(conn, got, piece=4096)
        conn.sendall(b"stream: OK\0")

    server = fake(handle)
    outcome = scan_stream(big, address=server.address, timeout_s=30)
    assert outcome.status is CLEAN, outcome
    assert bytes(server.received[0].payload) == big


def test_reply_in_single_bytes(fake: Callable[[Handler], FakeClamd]) -> None:
    def handle(conn: socket.socket, got: Received) -> None:
        read_instream(conn, got)
        for b in b"stream: Eicar-Test-Signature FOUND\0":
            conn.sendall(bytes([b]))

    server = fake(handle)
    outcome = scan_stream(b"x", address=server.address, timeout_s=10)
    assert (outcome.status, outcome.signature) == (INFECTED, "Eicar-Test-Signature")


def test_bytes_after_the_nul_are_ignored(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(answering(b"stream: OK\0stream: Bogus FOUND\0"))
    assert scan_stream(b"x", address=server.address, timeout_s=10).status is CLEAN


BROKEN_REPLIES = [
    ("closed without reply", b"", "connection closed without a reply"),
    ("no NUL before close", b"stream: OK", "reply truncated"),
    ("overlong", b"A" * (MAX_REPLY_BYTES + 1), "reply longer than"),
    ("overlong with late NUL", b"A" * (MAX_REPLY_BYTES + 10) + b"\0", "reply longer than"),
    ("garbage", b"HELLO\0", "unexpected reply"),
]


@pytest.mark.parametrize(("reply", "error"), [c[1:] for c in BROKEN_REPLIES],
                         ids=[c[0] for c in BROKEN_REPLIES])
def test_broken_replies_are_errors(fake: Callable[[Handler], FakeClamd], reply: bytes,
                                   error: str) -> None:
    server = fake(answering(reply))
    outcome = scan_stream(b"data", address=server.address, timeout_s=10)
    assert outcome.status is ERROR
    assert error in outcome.error


def test_reply_of_exactly_max_bytes_is_accepted(fake: Callable[[Handler], FakeClamd]) -> None:
    signature = "S" * (MAX_REPLY_BYTES - len("stream:  FOUND"))
    server = fake(answering(f"stream: {signature} FOUND\0".encode()))
    outcome = scan_stream(b"x", address=server.address, timeout_s=10)
    assert (outcome.status, outcome.signature) == (INFECTED, signature)


def test_early_reply_and_hangup_mid_stream_is_reported(
        fake: Callable[[Handler], FakeClamd]) -> None:
    """clamd answers "size limit exceeded" and closes while we still send: its reply wins
    over our broken pipe."""
    def handle(conn: socket.socket, got: Received) -> None:
        read_instream(conn, got, stop_after=1_000_000)
        conn.sendall(b"INSTREAM size limit exceeded. ERROR\0")
        conn.close()  # with ~19 MB still to come: the client's next sends fail

    server = fake(handle)
    outcome = scan_stream(bytes(20_000_000), address=server.address, timeout_s=30)
    assert outcome.status is ERROR
    assert outcome.error == "clamd: INSTREAM size limit exceeded."


def test_no_answer_is_a_timeout(fake: Callable[[Handler], FakeClamd]) -> None:
    release = threading.Event()

    def handle(conn: socket.socket, got: Received) -> None:
        read_instream(conn, got)
        release.wait(30)

    server = fake(handle)
    try:
        outcome = scan_stream(b"x", address=server.address, timeout_s=0.3)
    finally:
        release.set()
    assert outcome.status is ERROR
    assert outcome.error == "timeout after 0.3s (reply)"


@pytest.mark.parametrize("timeout_s", [0.0, -1.0])
def test_spent_budget_is_a_timeout_without_connecting(timeout_s: float) -> None:
    outcome = scan_stream(b"x", address="unix:/nonexistent/clamd.sock", timeout_s=timeout_s)
    assert outcome.status is ERROR
    assert outcome.error.startswith("timeout")


@pytest.mark.parametrize("timeout_s", [float("nan"), float("inf")])
def test_non_finite_timeout_is_a_programming_error(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        scan_stream(b"x", address="unix:/nonexistent/clamd.sock", timeout_s=timeout_s)


@pytest.mark.parametrize("chunk_size", [0, -1, 64 * 1024 * 1024 + 1])
def test_bad_chunk_size_is_a_programming_error(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        scan_stream(b"x", address="unix:/x", timeout_s=1, chunk_size=chunk_size)


def test_nothing_listening_is_an_error() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        path = Path(d) / "bound-not-listening.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
            outcome = scan_stream(b"x", address=f"unix:{path}", timeout_s=5)
    assert outcome.status is ERROR
    assert "connection refused" in outcome.error
    missing = scan_stream(b"x", address=f"unix:{path}.missing", timeout_s=5)
    assert missing.status is ERROR
    assert "no such file" in missing.error


def test_source_errors_propagate(fake: Callable[[Handler], FakeClamd]) -> None:
    """A failing spool is our bug or our disk, not clamd's: it must not become ERROR."""
    server = fake(answering(b"stream: OK\0"))

    def broken() -> Iterator[bytes]:
        yield b"part"
        raise OSError("spool read failed")

    with pytest.raises(OSError, match="spool read failed"):
        scan_stream(broken(), address=server.address, timeout_s=10)
    with pytest.raises(TypeError, match="str"):
        scan_stream(["text, not bytes"], address=server.address, timeout_s=10)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="str"):
        scan_stream(io.StringIO("text"), address=server.address, timeout_s=10)  # type: ignore[arg-type]


# --- scan_many -------------------------------------------------------------------------------


def by_payload(replies: dict[bytes, bytes]) -> Handler:
    def handle(conn: socket.socket, got: Received) -> None:
        read_instream(conn, got)
        conn.sendall(replies[bytes(got.payload)])

    return handle


def test_scan_many_stops_at_first_infected(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(by_payload({b"a": b"stream: OK\0", b"b": b"stream: Bad FOUND\0",
                              b"c": b"stream: Worse FOUND\0"}))
    outcome = scan_many([("a.txt", b"a"), ("b.zip", b"b"), ("c.exe", b"c")],
                        address=server.address, timeout_s=10)
    assert (outcome.status, outcome.signature, outcome.part) == (INFECTED, "Bad", "b.zip")
    assert [bytes(r.payload) for r in server.received] == [b"a", b"b"]


def test_scan_many_infected_beats_an_earlier_error(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(by_payload({b"a": b"stream: Can't read ERROR\0", b"b": b"stream: Bad FOUND\0"}))
    outcome = scan_many([("a", b"a"), ("b", b"b")], address=server.address, timeout_s=10)
    assert (outcome.status, outcome.part) == (INFECTED, "b")


def test_scan_many_reports_first_error(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(by_payload({b"a": b"stream: OK\0", b"b": b"stream: Can't read ERROR\0",
                              b"c": b"garbage\0"}))
    outcome = scan_many([("a", b"a"), ("b", b"b"), ("c", b"c")], address=server.address,
                        timeout_s=10)
    assert (outcome.status, outcome.part, outcome.error) == (ERROR, "b", "clamd: Can't read")


def test_scan_many_all_clean(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(by_payload({b"a": b"stream: OK\0", b"b": b"stream: OK\0"}))
    outcome = scan_many([("a", b"a"), ("raw", io.BytesIO(b"b"))], address=server.address,
                        timeout_s=10)
    assert outcome == ScanOutcome(CLEAN, elapsed_s=outcome.elapsed_s)
    assert len(server.received) == 2


def test_scan_many_shares_one_deadline(fake: Callable[[Handler], FakeClamd]) -> None:
    """The second part gets what is left of the budget, not a fresh one."""
    release = threading.Event()

    def handle(conn: socket.socket, got: Received) -> None:
        read_instream(conn, got)
        if bytes(got.payload) == b"slow":
            release.wait(30)
        conn.sendall(b"stream: OK\0")

    server = fake(handle)
    try:
        outcome = scan_many([("slow", b"slow"), ("fast", b"fast")], address=server.address,
                            timeout_s=0.3)
    finally:
        release.set()
    assert (outcome.status, outcome.part) == (ERROR, "slow")
    assert outcome.error.startswith("timeout")
    assert len(server.received) == 1  # no time left: "fast" was not even sent


def test_scan_many_without_parts_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no parts"):
        scan_many([], address="unix:/x", timeout_s=1)


# --- ping / version --------------------------------------------------------------------------


def command_server(replies: dict[bytes, bytes]) -> Handler:
    def handle(conn: socket.socket, got: Received) -> None:
        buf = b""
        while b"\0" not in buf:
            data = conn.recv(64)
            if not data:
                return
            buf += data
        got.command = buf
        conn.sendall(replies.get(buf, b"UNKNOWN COMMAND\0"))

    return handle


def test_ping_and_version(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(command_server({b"zPING\0": b"PONG\0",
                                  b"zVERSION\0": b"ClamAV 1.4.6/27480/Tue Nov 24 2026\0"}))
    assert ping(server.address, timeout_s=5) is True
    assert version(server.address, timeout_s=5) == "ClamAV 1.4.6/27480/Tue Nov 24 2026"


def test_ping_wrong_answer_is_false(fake: Callable[[Handler], FakeClamd]) -> None:
    server = fake(command_server({b"zPING\0": b"PONGX\0", b"zVERSION\0": b"nope\0"}))
    assert ping(server.address, timeout_s=5) is False
    assert version(server.address, timeout_s=5) is None


def test_ping_nobody_there_is_false() -> None:
    assert ping("unix:/nonexistent/clamd.sock", timeout_s=1) is False
    assert version("unix:/nonexistent/clamd.sock", timeout_s=1) is None
