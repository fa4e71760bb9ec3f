"""A local SMTP sink: stores every accepted message byte for byte.

Run as its own process: `python -m harness.sink --listen
127.0.0.1:PORT --dir DIR [--reject-rcpt-regex RX]`. Each message becomes
DIR/<seq>.eml (exactly the DATA bytes after dot-unstuffing, line ends as
received) with its envelope in DIR/<seq>.json (`mail_from`, `rcpt_to`,
`mail_params`, `helo`, `received_at`), both written atomically, the json
first, so a visible .eml always has its .json. Recipients matching
`--reject-rcpt-regex` get `550 5.1.1` (for bounce tests).

Why not Postfix's `smtp-sink -d`: it writes its own trace headers around
the message and does not keep the DATA bytes as received, and the envelope
is not stored beside them; a byte-for-byte comparison needs this server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import procs

MAX_COMMAND = 4096  # bytes per command line (RFC 5321 asks for 512; be lenient)
MAX_MESSAGE = 256 * 1024 * 1024
READ_LIMIT = 64 * 1024  # asyncio stream buffer: longer DATA lines are read in pieces

Envelope = dict[str, object]


class _TooLong(Exception):
    pass


async def _read_line(reader: asyncio.StreamReader, cap: int) -> bytes:
    """One line including its "\\n", of any length; beyond `cap` bytes the rest of the
    line is consumed and _TooLong raised."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            part = await reader.readuntil(b"\n")
            done = True
        except asyncio.LimitOverrunError as e:
            part = await reader.readexactly(e.consumed)
            done = False
        size += len(part)
        if size <= cap:
            parts.append(part)
        if done:
            if size > cap:
                raise _TooLong
            return b"".join(parts)


class SinkSession:
    def __init__(self, store: Path, counter: list[int], reject: re.Pattern[str] | None) -> None:
        self.store, self.counter, self.reject = store, counter, reject

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 sink.test ESMTP mailwarden-sink")
        helo = ""
        mail_from: str | None = None
        params: list[str] = []
        rcpts: list[str] = []
        try:
            while True:
                try:
                    raw = await _read_line(reader, MAX_COMMAND)
                except _TooLong:
                    say("500 5.5.2 line too long")
                    await writer.drain()
                    continue
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    helo = line[5:].strip()
                    say("250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n"
                        f"250-ENHANCEDSTATUSCODES\r\n250 SIZE {MAX_MESSAGE}")
                elif verb == "HELO":
                    helo = line[5:].strip()
                    say("250 sink.test")
                elif verb == "MAIL":
                    mail_from, params, rcpts = _addr(line), _params(line), []
                    say("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpt = _addr(line)
                    if mail_from is None:
                        say("503 5.5.1 need MAIL first")
                    elif self.reject and self.reject.search(rcpt):
                        say("550 5.1.1 recipient refused by sink")
                    else:
                        rcpts.append(rcpt)
                        say("250 2.1.5 ok")
                elif verb == "DATA":
                    if mail_from is None or not rcpts:
                        say("503 5.5.1 need MAIL and RCPT")
                        await writer.drain()
                        continue
                    say("354 go ahead")
                    await writer.drain()
                    data = await self._data(reader)
                    if data is None:
                        say(f"552 5.3.4 message larger than {MAX_MESSAGE} bytes")
                    else:
                        seq = self._save({"mail_from": mail_from, "rcpt_to": rcpts,
                                          "mail_params": params, "helo": helo,
                                          "received_at": time.time()}, data)
                        say(f"250 2.0.0 stored as {seq}")
                    mail_from, params, rcpts = None, [], []
                elif verb == "RSET":
                    mail_from, params, rcpts = None, [], []
                    say("250 2.0.0 ok")
                elif verb == "NOOP":
                    say("250 2.0.0 ok")
                elif verb == "QUIT":
                    say("221 2.0.0 bye")
                    await writer.drain()
                    break
                else:
                    say("502 5.5.2 not implemented")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _data(self, reader: asyncio.StreamReader) -> bytes | None:
        """The DATA bytes up to the lone dot, dot-unstuffed; None when over MAX_MESSAGE."""
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                line = await _read_line(reader, MAX_MESSAGE)
            except _TooLong:
                size = MAX_MESSAGE + 1
                continue
            if line in (b".\r\n", b".\n"):
                return b"".join(chunks) if size <= MAX_MESSAGE else None
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size <= MAX_MESSAGE:
                chunks.append(line)

    def _save(self, envelope: Envelope, data: bytes) -> int:
        self.counter[0] += 1
        seq = self.counter[0]
        base = self.store / f"{seq:06d}"
        for suffix, payload in ((".json", json.dumps(envelope).encode()), (".eml", data)):
            tmp = base.with_suffix(suffix + ".tmp")
            tmp.write_bytes(payload)
            os.replace(tmp, base.with_suffix(suffix))
        return seq


def _addr(line: str) -> str:
    m = re.search(r"<([^>]*)>", line)
    return m.group(1) if m else line.split(":", 1)[-1].strip().split(" ")[0]


def _params(line: str) -> list[str]:
    """ESMTP parameters after the address: ["BODY=8BITMIME", "SMTPUTF8", ...]."""
    _, _, rest = line.partition(">")
    return rest.split()


async def serve(host: str, port: int, store: Path, reject: str | None) -> None:
    store.mkdir(parents=True, exist_ok=True)
    counter = [max((int(p.stem) for p in store.glob("*.eml")), default=0)]
    pattern = re.compile(reject) if reject else None
    server = await asyncio.start_server(
        lambda r, w: SinkSession(store, counter, pattern).run(r, w), host, port,
        limit=READ_LIMIT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class Sink(procs.Child):
    """Start/stop the sink process (by PID); read what it stored.

    Mail lands in `workdir/mail/`; the port is chosen once, so `stop()` then
    `start()` brings the same sink back ("relay down, then up")."""

    def __init__(self, workdir: Path, *, reject_rcpt_regex: str | None = None,
                 port: int | None = None) -> None:
        self.dir = Path(workdir) / "mail"
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(Path(workdir) / "sink.log")
        self.port = port or procs.free_port()
        self.reject = reject_rcpt_regex

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    name = "sink"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "harness.sink", "--listen", self.address,
                "--dir", str(self.dir)]
        return argv + (["--reject-rcpt-regex", self.reject] if self.reject else [])

    def ready_probe(self) -> Callable[[], bool]:
        return procs.tcp_ready("127.0.0.1", self.port)

    def messages(self) -> list[tuple[Envelope, bytes]]:
        """(envelope, exact DATA bytes) of every stored message, in arrival order."""
        out = []
        for eml in sorted(self.dir.glob("*.eml")):
            env = json.loads(eml.with_suffix(".json").read_text())
            out.append((env, eml.read_bytes()))
        return out

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[tuple[Envelope, bytes]]:
        """Poll until at least `count` messages are stored; at the deadline, return what
        is there (the caller's assertion then shows what did arrive)."""
        deadline = time.monotonic() + timeout_s
        while True:
            msgs = self.messages()
            if len(msgs) >= count or time.monotonic() > deadline:
                return msgs
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="harness.sink")
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--dir", required=True)
    p.add_argument("--reject-rcpt-regex")
    a = p.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port), Path(a.dir), a.reject_rcpt_regex))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
