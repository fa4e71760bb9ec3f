"""Test-side policy-delegation client: speak Postfix's protocol to `mailwarden policyd`.

One persistent connection per `PolicyClient`, one request at a time (as one smtpd
process does). `rcpt()` builds a RCPT-stage request of an authenticated sender.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from mailwarden.addresses import parse_listen


class PolicyClient:
    def __init__(self, listen: str, *, timeout_s: float = 30.0) -> None:
        self.listen = parse_listen(listen)
        self.timeout_s = timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        if self.listen.family == "unix":
            self.reader, self.writer = await asyncio.open_unix_connection(self.listen.path)
        else:
            self.reader, self.writer = await asyncio.open_connection(
                self.listen.host, self.listen.port)

    async def ask(self, attrs: Mapping[str, str]) -> str:
        """The action of one request ("DUNNO", "451 4.7.1 ...", ...)."""
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"".join(f"{k}={v}\n".encode() for k, v in attrs.items()) + b"\n")
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.writer.drain()
                action = ""
                while True:
                    line = (await self.reader.readline()).decode(errors="replace")
                    if not line:
                        raise ConnectionError("policy server closed the connection")
                    if line == "\n":
                        return action
                    if line.startswith("action="):
                        action = line[len("action="):].rstrip("\n")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self.writer is not None:
            writer, self.reader, self.writer = self.writer, None, None
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


def rcpt_request(login: str, recipient: str, instance: str,
                 client: str = "10.20.30.40") -> dict[str, str]:
    return {"request": "smtpd_access_policy", "protocol_state": "RCPT",
            "protocol_name": "ESMTP", "client_address": client, "client_name": "pc1.test",
            "helo_name": "pc1.test", "sender": login, "recipient": recipient,
            "recipient_count": "0", "instance": instance, "sasl_method": "XCLIENT",
            "sasl_username": login, "queue_id": "", "size": "0"}
