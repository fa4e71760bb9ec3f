"""`mailwarden report`: what an operator reads every morning.

Two sources, each for what it is the record of:

* **Decisions** (refusals by rule and article, top refused senders and recipients,
  tempfails by cause) come from the mail log, the way pflogsumm reads Postfix's: every
  decision is one line of a fixed shape (logs.decision_line, read back by
  logs.parse_decision_line) carrying the sender, the recipients and the article, which
  Prometheus counters must not carry (unbounded labels) and which are lost when a daemon
  restarts. The log covers every MTA whose log is given, and any day in the past.
* **Locks and unlocks** come from the audit stream in Redis: the one record of who
  locked or unlocked which account, when and why (the CLI's `audit`), shared by every
  MTA. When Redis is unreachable the report says so and still prints the rest.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from mailwarden.logs import Decision, parse_decision_line

# Which backend a tempfail or an unchecked pass is due to, by rule id.
__all__ = ["Decision", "Report", "build", "read_decisions", "text", "to_html", "to_json"]

CAUSES = {"av.unavailable": "clamd", "ratelimit.backend_error": "redis",
          "auth.dns_temperror": "dns", "content.timeout": "timeout",
          "internal.error": "internal"}
REFUSALS = ("reject", "defer")


@dataclass
class RuleRow:
    rule: str
    article: str = ""
    reject: int = 0
    defer: int = 0
    monitor: int = 0

    @property
    def total(self) -> int:
        return self.reject + self.defer


@dataclass
class Report:
    since: float
    until: float
    sources: list[str] = field(default_factory=list)
    decisions: int = 0  # decision lines read in the period
    actions: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, RuleRow] = field(default_factory=dict)
    top_senders: list[tuple[str, int]] = field(default_factory=list)
    top_recipients: list[tuple[str, int]] = field(default_factory=list)
    tempfails: dict[str, int] = field(default_factory=dict)  # cause -> 4xx
    unchecked: dict[str, int] = field(default_factory=dict)  # cause -> passed unchecked
    hourly: list[tuple[float, int, int]] = field(default_factory=list)  # hour, reject, defer
    locks: list[dict[str, str]] = field(default_factory=list)
    locks_error: str = ""  # why the audit stream could not be read

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["by_rule"] = [asdict(r) | {"total": r.total} for r in self.rules()]
        d["top_senders"] = [{"address": a, "refusals": n} for a, n in self.top_senders]
        d["top_recipients"] = [{"address": a, "refusals": n} for a, n in self.top_recipients]
        d["hourly"] = [{"hour": _iso(h), "reject": r, "defer": f} for h, r, f in self.hourly]
        d["since"], d["until"] = _iso(self.since), _iso(self.until)
        d["lock_count"] = sum(1 for e in self.locks if e.get("action") == "lock")
        d["unlock_count"] = sum(1 for e in self.locks if e.get("action") == "unlock")
        return d

    def rules(self) -> list[RuleRow]:
        return sorted(self.by_rule.values(), key=lambda r: (-r.total, -r.monitor, r.rule))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


# -- reading ----------------------------------------------------------------------------
def open_log(path: str) -> TextIO:
    if path == "-":
        return sys.stdin
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_decisions(lines: Iterable[str], since: float, until: float,
                   year: int | None = None) -> Iterator[Decision]:
    for line in lines:
        if "mailwarden/" not in line:
            continue
        d = parse_decision_line(line.rstrip("\n"), year)
        if d is None:
            continue
        if d.when is not None and not since <= d.when < until:
            continue
        yield d


def build(decisions: Iterable[Decision], since: float, until: float, *,
          top: int = 10) -> Report:
    rep = Report(since, until)
    senders: Counter[str] = Counter()
    rcpts: Counter[str] = Counter()
    hours: dict[float, list[int]] = {}
    for d in decisions:
        rep.decisions += 1
        rep.actions[d.action] = rep.actions.get(d.action, 0) + 1
        cause = CAUSES.get(d.rule)
        if d.action == "defer" and cause:
            rep.tempfails[cause] = rep.tempfails.get(cause, 0) + 1
        elif d.action.startswith("accept-") and cause:
            rep.unchecked[cause] = rep.unchecked.get(cause, 0) + 1
        if d.action not in (*REFUSALS, "monitor"):
            continue
        row = rep.by_rule.setdefault(d.rule, RuleRow(d.rule))
        row.article = row.article or d.article
        if d.action == "monitor":
            row.monitor += 1
            continue
        setattr(row, d.action, getattr(row, d.action) + 1)
        if d.action == "reject" or not cause:  # a sender is not to blame for our outage
            senders[d.sender or "<>"] += 1
            for r in d.recipients:
                rcpts[r] += 1
        if d.when is not None:
            h = hours.setdefault(d.when - d.when % 3600, [0, 0])
            h[0 if d.action == "reject" else 1] += 1
    rep.top_senders = senders.most_common(top)
    rep.top_recipients = rcpts.most_common(top)
    if hours:
        first, last = min(hours), max(hours)
        rep.hourly = [(h, hours.get(h, [0, 0])[0], hours.get(h, [0, 0])[1])
                      for h in _range(first, last, 3600)]
    return rep


def _range(a: float, b: float, step: float) -> Iterator[float]:
    while a <= b:
        yield a
        a += step


def lock_events(events: list[dict[str, str]], since: float, until: float
                ) -> list[dict[str, str]]:
    """Audit entries (newest first, as store.audit returns them) in the period, oldest
    first, with their time."""
    out = []
    for e in events:
        when = int(e.get("id", "0-0").split("-")[0]) / 1000.0
        if since <= when < until and e.get("action") in ("lock", "unlock", "restore"):
            out.append({**e, "when": _iso(when)})
    return list(reversed(out))


# -- text -------------------------------------------------------------------------------
def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def text(rep: Report, title: str = "mailwarden") -> str:
    out = [f"{title} report {_iso(rep.since)} .. {_iso(rep.until)}",
           f"sources: {', '.join(rep.sources) or '-'}", ""]
    refused = sum(r.total for r in rep.by_rule.values())
    out.append(f"Decisions: {rep.decisions}  refused: {refused} "
               f"(reject {rep.actions.get('reject', 0)}, defer {rep.actions.get('defer', 0)})"
               f"  monitor: {rep.actions.get('monitor', 0)}")
    out += ["", "Refusals by rule and article"]
    rules = rep.rules()
    if rules:
        out += _table([("RULE", "ARTICLE", "REJECT", "DEFER", "MONITOR")] +
                      [(r.rule, r.article or "-", str(r.reject), str(r.defer), str(r.monitor))
                       for r in rules])
    else:
        out.append("  none")
    for name, items in (("Top refused senders", rep.top_senders),
                        ("Top refused recipients", rep.top_recipients)):
        out += ["", name]
        out += [f"  {n:6d}  {a}" for a, n in items] or ["  none"]
    out += ["", "Tempfails by cause (451)"]
    out += [f"  {c:9} {n}" for c, n in sorted(rep.tempfails.items())] or ["  none"]
    if rep.unchecked:
        out += ["", "Passed unchecked by cause (failure policy accept)"]
        out += [f"  {c:9} {n}" for c, n in sorted(rep.unchecked.items())]
    out += ["", "Locks and unlocks"]
    if rep.locks_error:
        out.append(f"  audit stream not read: {rep.locks_error}")
    elif rep.locks:
        out += ["  " + line for line in _table(
            [("WHEN", "ACTION", "ACCOUNT", "KIND", "BY", "COUNT", "REASON")] +
            [(e["when"], e.get("action", ""), e.get("account", ""), e.get("kind", "-") or "-",
              e.get("by", "-") or "-", e.get("count", "-") or "-", e.get("reason", ""))
             for e in rep.locks])]
    else:
        out.append("  none")
    return "\n".join(out) + "\n"


# -- HTML with inline SVG ---------------------------------------------------------------
_CSS = """body{font-family:sans-serif;margin:2em;color:#222;max-width:70em}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .6em;
text-align:left}th{background:#eee}td.n{text-align:right}svg{display:block;margin:.5em 0}
.note{color:#a00}"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def bar_chart(items: list[tuple[str, int]], *, title: str, color: str = "#c0392b",
              width: int = 640) -> str:
    """Horizontal bars, one per item, labelled; an SVG element (no script, no font)."""
    row, label_w = 24, 260
    height = max(1, len(items)) * row + 30
    top = max([n for _, n in items] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f"<title>{_e(title)}</title>"]
    for i, (label, n) in enumerate(items):
        y = 20 + i * row
        w = (width - label_w - 60) * n / top
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{_e(label[:40])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="16" '
                     f'fill="{color}"/>')
        parts.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 15}" font-size="12">{n}</text>')
    if not items:
        parts.append('<text x="0" y="35" font-size="12">none</text>')
    parts.append("</svg>")
    return "".join(parts)


def hourly_chart(hourly: list[tuple[float, int, int]], width: int = 640) -> str:
    """Stacked columns per hour: rejects (red) and deferrals (orange)."""
    height, base = 180, 150
    n = max(1, len(hourly))
    col = min(40.0, max(2.0, (width - 40) / n))
    top = max([r + d for _, r, d in hourly] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             "<title>Refusals per hour</title>",
             f'<line x1="30" y1="{base}" x2="{width}" y2="{base}" stroke="#888"/>',
             f'<text x="0" y="20" font-size="11">{top}</text>']
    for i, (h, r, d) in enumerate(hourly):
        x = 32 + i * col
        hr, hd = 130 * r / top, 130 * d / top
        parts.append(f'<rect x="{x:.1f}" y="{base - hr:.1f}" width="{col * .8:.1f}" '
                     f'height="{hr:.1f}" fill="#c0392b"><title>{_e(_iso(h))}: {r} reject'
                     "</title></rect>")
        parts.append(f'<rect x="{x:.1f}" y="{base - hr - hd:.1f}" width="{col * .8:.1f}" '
                     f'height="{hd:.1f}" fill="#e67e22"><title>{_e(_iso(h))}: {d} defer'
                     "</title></rect>")
        if i % max(1, n // 8) == 0:
            parts.append(f'<text x="{x:.1f}" y="{base + 15}" font-size="10">'
                         f"{_e(time.strftime('%H:%M', time.gmtime(h)))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _html_table(head: tuple[str, ...], rows: list[tuple[Any, ...]], cls: str) -> str:
    if not rows:
        return "<p>none</p>"
    out = [f'<table class="{cls}"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td class="n">{_e(c)}</td>' if isinstance(c, int) else f"<td>{_e(c)}</td>"
            for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def to_html(rep: Report, title: str = "mailwarden") -> str:
    rules = rep.rules()
    body = [f"<h1>{_e(title)} report</h1>",
            f"<p>{_e(_iso(rep.since))} .. {_e(_iso(rep.until))}; sources: "
            f"{_e(', '.join(rep.sources) or '-')}; {rep.decisions} decisions.</p>",
            "<h2>Refusals by rule and article</h2>",
            bar_chart([(r.rule, r.total) for r in rules if r.total], title="Refusals by rule"),
            _html_table(("rule", "article", "reject", "defer", "monitor"),
                        [(r.rule, r.article or "-", r.reject, r.defer, r.monitor)
                         for r in rules], "rules"),
            "<h2>Refusals per hour</h2>", hourly_chart(rep.hourly),
            "<h2>Top refused senders</h2>",
            _html_table(("sender", "refusals"), list(rep.top_senders), "senders"),
            "<h2>Top refused recipients</h2>",
            _html_table(("recipient", "refusals"), list(rep.top_recipients), "recipients"),
            "<h2>Tempfails by cause</h2>",
            bar_chart(sorted(rep.tempfails.items()), title="Tempfails by cause",
                      color="#e67e22"),
            "<h2>Locks and unlocks</h2>"]
    if rep.locks_error:
        body.append(f'<p class="note">audit stream not read: {_e(rep.locks_error)}</p>')
    else:
        body.append(_html_table(
            ("when", "action", "account", "kind", "by", "count", "reason"),
            [(e["when"], e.get("action", ""), e.get("account", ""), e.get("kind", "-"),
              e.get("by", "-"), e.get("count", "-"), e.get("reason", "")) for e in rep.locks],
            "locks"))
    return ("<!DOCTYPE html>\n<html lang=\"vi\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)} report</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def to_json(rep: Report) -> str:
    return json.dumps(rep.to_json(), indent=2, ensure_ascii=False)
