"""A local SMTP sink: stores every accepted message byte for byte.

Run as its own process: `python -m mailwarden.sandbox.sink --listen
127.0.0.1:PORT --dir DIR`. Each message becomes DIR/<seq>.eml (exactly the
DATA bytes after dot-unstuffing, line ends as received) with its envelope in
DIR/<seq>.json, both written atomically (json first). Postfix's smtp-sink
discards or rewrites content, hence this small server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from mailwarden.sandbox import procs

MAX_LINE = 64 * 1024
MAX_MESSAGE = 256 * 1024 * 1024


class SinkSession:
    def __init__(self, store: Path, counter: list[int], reject: re.Pattern[str] | None) -> None:
        self.store, self.counter, self.reject = store, counter, reject

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 sink.test ESMTP mailwarden-sink")
        mail_from: str | None = None
        rcpts: list[str] = []
        try:
            while True:
                raw = await reader.readuntil(b"\n")
                if len(raw) > MAX_LINE:
                    say("500 5.5.2 line too long")
                    continue
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    say("250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n"
                        f"250 SIZE {MAX_MESSAGE}" if verb == "EHLO" else "250 sink.test")
                elif verb == "MAIL":
                    mail_from, rcpts = _addr(line), []
                    say("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpt = _addr(line)
                    if self.reject and self.reject.search(rcpt):
                        say("550 5.1.1 recipient refused by sink")
                    else:
                        rcpts.append(rcpt)
                        say("250 2.1.5 ok")
                elif verb == "DATA":
                    if mail_from is None or not rcpts:
                        say("503 5.5.1 need MAIL and RCPT")
                        continue
                    say("354 go ahead")
                    await writer.drain()
                    data = await self._data(reader)
                    seq = self._save(mail_from, rcpts, data)
                    say(f"250 2.0.0 stored as {seq}")
                    mail_from, rcpts = None, []
                elif verb == "RSET":
                    mail_from, rcpts = None, []
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
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _data(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\n")
            if line in (b".\r\n", b".\n"):
                return b"".join(chunks)
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size <= MAX_MESSAGE:
                chunks.append(line)

    def _save(self, mail_from: str, rcpts: list[str], data: bytes) -> int:
        self.counter[0] += 1
        seq = self.counter[0]
        base = self.store / f"{seq:06d}"
        for suffix, payload in ((".json", json.dumps({
                "mail_from": mail_from, "rcpt_to": rcpts, "received_at": time.time()}).encode()),
                (".eml", data)):
            tmp = base.with_suffix(suffix + ".tmp")
            tmp.write_bytes(payload)
            os.replace(tmp, base.with_suffix(suffix))
        return seq


def _addr(line: str) -> str:
    m = re.search(r"<([^>]*)>", line)
    return m.group(1) if m else line.split(":", 1)[-1].strip()


async def serve(host: str, port: int, store: Path, reject: str | None) -> None:
    store.mkdir(parents=True, exist_ok=True)
    counter = [max((int(p.stem) for p in store.glob("*.eml")), default=0)]
    pattern = re.compile(reject) if reject else None
    server = await asyncio.start_server(
        lambda r, w: SinkSession(store, counter, pattern).run(r, w), host, port,
        limit=MAX_LINE * 2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class Sink:
    """Start/stop the sink process; read what it stored."""

    def __init__(self, workdir: Path, *, reject_rcpt_regex: str | None = None) -> None:
        self.dir = Path(workdir) / "mail"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_port()
        self.log = Path(workdir) / "sink.log"
        self.reject = reject_rcpt_regex
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sink:
        argv = [sys.executable, "-m", "mailwarden.sandbox.sink", "--listen",
                f"127.0.0.1:{self.port}", "--dir", str(self.dir)]
        if self.reject:
            argv += ["--reject-rcpt-regex", self.reject]
        self.proc = procs.spawn(argv, self.log)
        procs.wait_until(procs.tcp_ready("127.0.0.1", self.port), 15, "sink",
                         alive=lambda: self.proc is not None and self.proc.poll() is None,
                         log=self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def messages(self) -> list[tuple[dict[str, object], bytes]]:
        out = []
        for eml in sorted(self.dir.glob("*.eml")):
            env = json.loads(eml.with_suffix(".json").read_text())
            out.append((env, eml.read_bytes()))
        return out

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[tuple[dict[str, object],
                                                                          bytes]]:
        deadline = time.monotonic() + timeout_s
        while True:
            msgs = self.messages()
            if len(msgs) >= count or time.monotonic() > deadline:
                return msgs
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mailwarden.sandbox.sink")
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
