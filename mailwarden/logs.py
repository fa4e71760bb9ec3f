"""The one place that formats log lines and escapes values for them.

Decision lines are shaped like Postfix's own reject lines so operators' habits
and tools keep working:

  4Q8Zl02Bv1z: reject: RCPT from host[ip]: rule=... k=v; from=<a> to=<b> article="..." reply="..."

Rules every line obeys:

* Every value is escaped and capped, bare or quoted: printable ASCII is kept,
  quotes, backslashes, control characters and non-ASCII are escaped, and a value
  longer than `MAX_VALUE` characters (before escaping) is cut with a
  `...[N more]` marker (the value is then quoted). A sender cannot forge lines,
  hide characters, or make a line long by choosing "plain" characters.
* A decision line is at most `MAX_LINE` (4096) characters — well under the
  ~8 KB that syslog daemons and journald forward in one record, after the
  ident, PID and timestamp they add. The queue id, action, stage, client, rule,
  article and reply always survive; when the rest (detail values, sender,
  recipients, extra values) would not fit, the longest of those are replaced,
  longest first, by `key=...[elided N chars]` until the line fits.
* One decision, one line: an over-limit request that locks the account is one
  `reject` line carrying `locked=yes`, the count, the limit and the account.
* Statistics, authentication results and the other event lines are built here
  too (`stats_line`, `auth_line`, `event_line`); no caller formats a message-
  derived value itself.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Iterable, Mapping

MAX_VALUE = 512  # longest value (in characters, before escaping) written to a log line
MAX_LINE = 4096  # longest decision line; the logger's own prefix comes on top
MAX_RECIPIENTS = 20  # recipients named in one line; the rest are counted "(+N)"
_ID_LIMIT = 64  # queue ids, rule ids, addresses of clients, keys
_NAME_LIMIT = 255  # client host names
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@+")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_ELIDED = "...[elided {n} chars]"


def escape(value: str, limit: int = MAX_VALUE) -> str:
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


def quote(value: str, limit: int = MAX_VALUE) -> str:
    return f'"{escape(value, limit)}"'


def addr(value: str, limit: int = MAX_VALUE) -> str:
    return f"<{escape(value, limit)}>"


def _key(key: str) -> str:
    """Keys come from code, but are made safe all the same (never a space or '=')."""
    k = "".join(c if c in _KEY_CHARS else "_" for c in key[:_ID_LIMIT])
    return k or "_"


def _kv(key: str, value: str, limit: int = MAX_VALUE) -> str:
    """key=value: bare when the (capped) value is a plain token, quoted otherwise."""
    if value and len(value) <= limit and all(c in _PLAIN for c in value):
        return f"{_key(key)}={value}"
    return f"{_key(key)}={quote(value, limit)}"


def _fit(head: str, middle: list[str], tail: str, limit: int) -> str:
    """head + middle tokens + tail in at most `limit` characters: the longest middle
    tokens are elided first (their key kept), head and tail never."""
    tokens = list(middle)

    def total() -> int:
        return len(head) + len(tail) + sum(len(t) for t in tokens)

    while total() > limit:
        i = max(range(len(tokens)), key=lambda j: len(tokens[j]), default=-1)
        if i < 0:
            break
        t = tokens[i]
        key, eq, _ = t.lstrip(" ;").partition("=")
        lead = t[: len(t) - len(t.lstrip(" ;"))]
        short = f"{lead}{key}={_ELIDED.format(n=len(t))}" if eq else \
            f"{lead}{_ELIDED.format(n=len(t))}"
        if len(short) >= len(t):
            break
        tokens[i] = short
    return head + "".join(tokens) + tail


def decision_line(
    *,
    queue_id: str,
    action: str,
    stage: str,
    client_name: str,
    client_addr: str,
    rule: str,
    detail: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    sender: str | None = None,
    recipients: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
    article: str = "",
    reply: str = "",
) -> str:
    """One decision, one line of at most MAX_LINE characters (see the module doc)."""
    head = (f"{escape(queue_id, _ID_LIMIT) or 'NOQUEUE'}: {escape(action, _ID_LIMIT)}: "
            f"{escape(stage, _ID_LIMIT)} from {escape(client_name or 'unknown', _NAME_LIMIT)}"
            f"[{escape(client_addr or 'unknown', _ID_LIMIT)}]: rule={escape(rule, _ID_LIMIT)}")
    items = detail.items() if isinstance(detail, Mapping) else detail
    middle = [" " + _kv(k, v) for k, v in items]
    middle.append(";")
    if sender is not None:
        middle.append(f" from={addr(sender)}")
    rcpts = list(recipients)
    if rcpts:
        to = " to=" + ",".join(addr(r) for r in rcpts[:MAX_RECIPIENTS])
        if len(rcpts) > MAX_RECIPIENTS:
            to += f"(+{len(rcpts) - MAX_RECIPIENTS})"
        middle.append(to)
    middle += [" " + _kv(k, v) for k, v in (extra or {}).items()]
    tail = ""
    if article:
        tail += f" article={quote(article)}"
    if reply:
        tail += f" reply={quote(reply)}"
    return _fit(head, middle, tail, MAX_LINE)


def stats_line(counters: Mapping[str, int | float], *, since_s: float | None = None,
               final: bool = False) -> str:
    """`statistics: k=v ... [since Ns]` (`stopped; statistics: ...` when the daemon ends)."""
    parts = [_kv(k, f"{v:g}" if isinstance(v, float) else str(v), _ID_LIMIT)
             for k, v in counters.items()]
    line = ("stopped; statistics: " if final else "statistics: ") + " ".join(parts)
    if since_s is not None:
        line += f" since {since_s:.0f}s"
    return _fit("", [line], "", MAX_LINE)


def auth_line(queue_id: str, detail: Mapping[str, str]) -> str:
    """`QUEUEID: auth: spf="pass ..." dkim="..." ...` — what authentication found."""
    head = f"{escape(queue_id, _ID_LIMIT) or 'NOQUEUE'}: auth:"
    return _fit(head, [f" {_key(k)}={quote(v)}" for k, v in detail.items()], "", MAX_LINE)


def event_line(queue_id: str, text: str, **values: str | int | float) -> str:
    """`QUEUEID: text k=v ...` for what happens around a decision (header changes that
    failed, a refused message uncounted, authentication skipped). `text` is fixed
    text from the code; everything variable goes in `values`."""
    head = f"{escape(queue_id, _ID_LIMIT) or 'NOQUEUE'}: {escape(text, _NAME_LIMIT)}"
    return _fit(head, [" " + _kv(k, str(v)) for k, v in values.items()], "", MAX_LINE)


def note(text: str, **values: str | int | float) -> str:
    """`text k=v ...` for a daemon event that concerns no message (a lock refresh
    that failed, ...): `text` is fixed text from the code, the rest escaped values."""
    return _fit(escape(text, _NAME_LIMIT), [" " + _kv(k, str(v)) for k, v in values.items()],
                "", MAX_LINE)


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
