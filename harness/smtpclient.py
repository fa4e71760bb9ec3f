"""Test-side SMTP client: which RCPT got which answer, and what DATA said.

`send()` runs one transaction with stdlib smtplib and records every reply
instead of raising, so a test sees exactly which recipient was refused with
which code, and what the server answered after the message.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Transaction:
    mail: tuple[int, str] = (0, "")
    rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)
    data: tuple[int, str] | None = None  # None: no recipient accepted, DATA not sent
    disconnected: bool = False  # the server closed the connection (e.g. after a 421)

    @property
    def accepted(self) -> list[str]:
        return [r for r, (code, _) in self.rcpt.items() if 200 <= code < 300]

    @property
    def refused_all(self) -> dict[str, tuple[int, str]]:
        return {r: reply for r, reply in self.rcpt.items() if not 200 <= reply[0] < 300}

    def refused(self, rcpt: str) -> str:
        """The reply to RCPT TO:<rcpt> as one string, e.g. "554 5.7.1 <x@...>: ..."."""
        code, text = self.rcpt[rcpt]
        return f"{code} {text}"


def _reply(code: int, text: bytes | str) -> tuple[int, str]:
    return code, text.decode(errors="replace") if isinstance(text, bytes) else text


def send(port: int, sender: str, recipients: Sequence[str], message: bytes | None, *,
         login: str | None = None, client_addr: str = "10.20.30.40",
         client_name: str = "pc1.test", helo: str = "pc1.test",
         mail_options: Sequence[str] = (), timeout: float = 60.0,
         source_addr: str = "") -> Transaction:
    """One SMTP transaction on 127.0.0.1:port.

    login=None: no XCLIENT (the session comes from 127.0.0.1, inside mynetworks).
    login="":   XCLIENT ADDR=client_addr NAME=client_name (an outside client, no login).
    login=user: the same plus LOGIN=user (smtpd treats it as SASL-authenticated).
    message=None: only MAIL and RCPT are sent (then RSET): a probe of the RCPT-stage
    answers that delivers nothing. `mail_options` go on MAIL FROM (e.g. "BODY=8BITMIME",
    "SMTPUTF8"). The message bytes are sent as given (smtplib dot-stuffs them and turns
    bare LF into CRLF). `source_addr` (e.g. "127.0.0.2") binds the client socket: a peer
    other than 127.0.0.1 gets Postfix's remote header-rewrite context, as an outside
    client would (POSTFIX-FACTS.md, "Testing as an attacker").
    """
    t = Transaction()
    source = (source_addr, 0) if source_addr else None
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout, source_address=source) as s:
        try:
            s.ehlo(helo)
            if login is not None:
                attrs = f"ADDR={client_addr} NAME={client_name}"
                code, text = s.docmd("XCLIENT", f"LOGIN={login} {attrs}" if login else attrs)
                if code != 220:
                    raise RuntimeError(f"XCLIENT refused: {code} {text!r}")
                s.ehlo(helo)
            t.mail = _reply(*s.mail(sender, list(mail_options)))
            if t.mail[0] >= 300:
                return t
            for r in recipients:
                t.rcpt[r] = _reply(*s.rcpt(r))
            if message is None:
                s.rset()
            elif t.accepted:
                try:
                    t.data = _reply(*s.data(message))
                except smtplib.SMTPDataError as e:  # DATA itself refused (no 354)
                    t.data = _reply(e.smtp_code, e.smtp_error)
            s.quit()
        except smtplib.SMTPServerDisconnected:
            t.disconnected = True
    return t
