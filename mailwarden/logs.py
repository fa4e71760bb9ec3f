"""The one place that formats decision log lines and escapes values for them.

Lines are shaped like Postfix's own reject lines so operators' habits and
tools keep working:

  4Q8Zl02Bv1z: reject: RCPT from host[ip]: rule=... k=v; from=<a> to=<b> article="..." reply="..."

Everything that came from the network goes through `quote`/`addr` first, so a
sender cannot forge log lines or hide characters in them.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Iterable

_MAX_VALUE = 512  # longest value written to a log line; the rest is elided


def escape(value: str, limit: int = _MAX_VALUE) -> str:
    """Printable ASCII kept; quotes, backslashes, controls and non-ASCII escaped."""
    out = []
    for ch in value[:limit]:
        o = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    if len(value) > limit:
        out.append(f"...[{len(value) - limit} more]")
    return "".join(out)


def quote(value: str) -> str:
    return f'"{escape(value)}"'


def addr(value: str) -> str:
    return f"<{escape(value)}>"


def _kv(key: str, value: str) -> str:
    # Bare when it is a plain token, quoted otherwise.
    if value and all(c.isalnum() or c in "._-:/@+" for c in value) and value.isascii():
        return f"{key}={value}"
    return f"{key}={quote(value)}"


def decision_line(
    *,
    queue_id: str,
    action: str,
    stage: str,
    client_name: str,
    client_addr: str,
    rule: str,
    detail: dict[str, str] | Iterable[tuple[str, str]] = (),
    sender: str | None = None,
    recipients: Iterable[str] = (),
    extra: dict[str, str] | None = None,
    article: str = "",
    reply: str = "",
) -> str:
    parts = [
        f"{escape(queue_id) or 'NOQUEUE'}: {action}: {stage} from "
        f"{escape(client_name or 'unknown')}[{escape(client_addr or 'unknown')}]:",
        f"rule={escape(rule)}",
    ]
    items = detail.items() if isinstance(detail, dict) else detail
    parts += [_kv(k, v) for k, v in items]
    line = " ".join(parts) + ";"
    if sender is not None:
        line += f" from={addr(sender)}"
    rcpts = list(recipients)
    if rcpts:
        line += " to=" + ",".join(addr(r) for r in rcpts[:20])
        if len(rcpts) > 20:
            line += f"(+{len(rcpts) - 20})"
    for k, v in (extra or {}).items():
        line += " " + _kv(k, v)
    if article:
        line += f" article={quote(article)}"
    if reply:
        line += f" reply={quote(reply)}"
    return line


def setup_logging(daemon: str, level: str = "info", use_syslog: bool = False,
                  facility: str = "mail", syslog_socket: str = "/dev/log") -> logging.Logger:
    """Root logger to stderr (journald adds time and PID) or to syslog."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if use_syslog:
        handler = logging.handlers.SysLogHandler(
            address=syslog_socket,
            facility=logging.handlers.SysLogHandler.facility_names[facility])
        handler.ident = f"mailwarden/{daemon}"
        handler.setFormatter(logging.Formatter("[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s mailwarden/{daemon}[%(process)d]: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return logging.getLogger(f"mailwarden.{daemon}")
