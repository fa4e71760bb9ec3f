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
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


def describe_error(e: BaseException) -> str:
    """"Type: text" of an exception (just the type when it has no text), for a log value;
    escaped and capped like any other value when it reaches a line."""
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


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


# -- reading decision lines back (`mailwarden report`) --------------------------------
_DECISION_RE = re.compile(
    r"mailwarden/(?P<daemon>[A-Za-z-]+)\[\d+\]: (?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL): )?"
    r"(?P<queue_id>[^\s:]+): (?P<action>[a-z-]+): (?P<stage>[A-Z-]+) from "
    r"(?P<client>\S*)\[(?P<addr>[^\]\s]*)\]: rule=(?P<rule>[^\s;]+)(?P<rest>.*)$")
# An address is written <...> with only quotes, backslashes and non-printables escaped,
# so a ">" may sit inside one: a field ends where the next " key=" (or the end) begins.
_FROM_RE = re.compile(r"; from=<(?P<v>.*?)>(?= to=| [a-z_]+=|$)")
_TO_RE = re.compile(r" to=<(?P<v>.*?)>(?:\(\+(?P<more>\d+)\))?(?= [a-z_]+=|$)")
_ARTICLE_RE = re.compile(r' article="(?P<v>(?:[^"\\]|\\.)*)"')
_ISO_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
_SYSLOG_TIME_RE = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}:\d{2}:\d{2}) ")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


@dataclass(frozen=True)
class Decision:
    """One decision line read back from a log (the inverse of decision_line)."""

    when: float | None  # epoch seconds from the log's own time stamp, UTC; None = none
    daemon: str  # policyd | milter
    queue_id: str  # "NOQUEUE" when there was none
    action: str  # reject, defer, monitor, accept, accept-unchecked, ...
    stage: str
    rule: str
    sender: str
    recipients: tuple[str, ...]
    more_recipients: int  # "(+N)": recipients not named in the line
    article: str


def _unescape(value: str) -> str:
    return value.encode("latin-1", "backslashreplace").decode("unicode_escape",
                                                              "replace")


def line_time(line: str, year: int) -> float | None:
    """The time stamp a log line starts with (ISO from our stderr format or RFC 3339
    syslog, or traditional syslog "Nov 30 08:00:00" in `year`), read as this host's
    local time (as both are written), in epoch seconds."""
    m = _ISO_TIME_RE.match(line)
    if m:
        return time.mktime(time.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S"))
    m = _SYSLOG_TIME_RE.match(line)
    if m and m.group(1) in _MONTHS:
        return time.mktime(time.strptime(
            f"{year}-{_MONTHS[m.group(1)]}-{m.group(2)} {m.group(3)}", "%Y-%m-%d %H:%M:%S"))
    return None


def parse_decision_line(line: str, year: int | None = None) -> Decision | None:
    """A mailwarden decision line (with whatever prefix syslog or journald put before
    `mailwarden/DAEMON[PID]: `) -> Decision; None for any other line."""
    m = _DECISION_RE.search(line)
    if m is None:
        return None
    rest = m.group("rest")
    f = _FROM_RE.search(rest)
    to = _TO_RE.search(rest)
    art = _ARTICLE_RE.search(rest)
    rcpts = tuple(_unescape(r) for r in to.group("v").split(">,<")) if to else ()
    return Decision(
        when=line_time(line, year or time.gmtime().tm_year),
        daemon=m.group("daemon"), queue_id=m.group("queue_id"), action=m.group("action"),
        stage=m.group("stage"), rule=m.group("rule"),
        sender=_unescape(f.group("v")) if f else "", recipients=rcpts,
        more_recipients=int(to.group("more") or 0) if to else 0,
        article=_unescape(art.group("v")) if art else "")


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
