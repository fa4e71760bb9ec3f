"""Test-side SMTP client: which RCPT got which answer, and what DATA said."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Transaction:
    mail: tuple[int, str] = (0, "")
    rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)
    data: tuple[int, str] | None = None  # None: no recipient accepted, DATA not sent

    @property
    def accepted(self) -> list[str]:
        return [r for r, (code, _) in self.rcpt.items() if code < 300]

    def refused(self, rcpt: str) -> str:
        code, text = self.rcpt[rcpt]
        return f"{code} {text}"


def send(port: int, sender: str, recipients: Sequence[str], message: bytes | None, *,
         login: str | None = None, client_addr: str = "10.20.30.40",
         mail_options: Sequence[str] = (), timeout: float = 60.0) -> Transaction:
    """One SMTP transaction on 127.0.0.1:port; with `login`, as that SASL user (XCLIENT).

    With message=None only MAIL and RCPT are sent (then RSET): a probe of the
    RCPT-stage answers that delivers nothing.
    """
    t = Transaction()
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("pc1.test")
        if login is not None:
            attrs = f"ADDR={client_addr} NAME=pc1.test"  # login "": a remote client, no login
            code, text = s.docmd("XCLIENT", f"LOGIN={login} {attrs}" if login else attrs)
            if code != 220:
                raise RuntimeError(f"XCLIENT refused: {code} {text!r}")
            s.ehlo("pc1.test")
        code, text = s.mail(sender, list(mail_options))
        t.mail = (code, text.decode(errors="replace"))
        if code >= 300:
            return t
        for r in recipients:
            code, text = s.rcpt(r)
            t.rcpt[r] = (code, text.decode(errors="replace"))
        if message is None:
            s.rset()
        elif t.accepted:
            try:
                code, text = s.data(message)
            except smtplib.SMTPDataError as e:  # a refusal at end of data, kept as data
                code = e.smtp_code
                text = e.smtp_error if isinstance(e.smtp_error, bytes) else e.smtp_error.encode()
            t.data = (code, text.decode(errors="replace"))
        s.quit()
    return t
