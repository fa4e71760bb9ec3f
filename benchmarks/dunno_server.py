"""The ceiling for a Python policy server: answer `action=DUNNO` to every request.

Same shape as the daemon's server (asyncio.Protocol, one reply per request in
order, uvloop when importable unless --no-uvloop) with nothing behind it: no
attribute parsing, no rules, no Redis. benchmarks/policyd_load.py measures the
daemon against it in the same run.

    python -m benchmarks.dunno_server --listen unix:/tmp/x.sock [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from mailwarden.addresses import parse_listen
from mailwarden.policyd.codec import Decoder, encode_action

_REPLY = b"action=DUNNO\n\n"


class DunnoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data if self.tail else data
        n = buf.count(b"\n\n")  # a request ends with its last line's \n and an empty line
        if n:
            assert self.transport is not None
            self.transport.write(_REPLY * n)
            buf = buf[buf.rfind(b"\n\n") + 2:]
        self.tail = buf


class CodecDunnoProtocol(asyncio.Protocol):
    """The same, but every request goes through the daemon's own codec."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for _attrs in self.decoder.feed(data):
            self.transport.write(encode_action("DUNNO"))


async def serve(listen: str, codec: bool = False) -> None:
    addr = parse_listen(listen)
    loop = asyncio.get_running_loop()
    proto: type[asyncio.Protocol] = CodecDunnoProtocol if codec else DunnoProtocol
    if addr.family == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(addr.path)
        server = await loop.create_unix_server(proto, addr.path, backlog=512)
    else:
        server = await loop.create_server(proto, addr.host, addr.port, backlog=512,
                                          reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"dunno_server: listening on {listen} with {type(loop).__module__}", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--listen", required=True, help="inet:HOST:PORT or unix:/PATH")
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    p.add_argument("--codec", action="store_true",
                   help="parse every request with mailwarden.policyd.codec (the daemon's)")
    args = p.parse_args(argv)
    if not args.no_uvloop:
        try:  # the daemon's choice (mailwarden/policyd/server.py: uvloop if importable)
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    asyncio.run(serve(args.listen, args.codec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
