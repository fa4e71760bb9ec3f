"""`mailwarden report`: arguments -> sources -> report (ops/report.py) -> output."""

from __future__ import annotations

import argparse
import calendar
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mailwarden.ops import report as rp
from mailwarden.settings import Settings
from mailwarden.units import parse_duration

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _when(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text.rstrip("Z"), fmt)))
        except ValueError:
            continue
    raise ValueError(f"{text!r}: expected epoch seconds or YYYY-MM-DD[THH:MM[:SS]] (UTC)")


def report(args: argparse.Namespace, s: Settings,
           audit: Callable[[], list[dict[str, str]]]) -> int:
    try:
        until = _when(args.until) if args.until else time.time()
        since = until - parse_duration(args.since)
    except ValueError as e:
        print(f"mailwarden: report: {e}", file=sys.stderr)
        return EXIT_USAGE
    files = list(args.log or s.ops.log_files)
    decisions: list[rp.Decision] = []
    read: list[str] = []
    for path in files:
        try:
            with rp.open_log(path) as fh:
                decisions.extend(rp.read_decisions(fh, since, until, args.year))
            read.append(path)
        except OSError as e:
            print(f"mailwarden: report: {path}: {e.strerror or e}", file=sys.stderr)
    if not read:
        print("mailwarden: report: no mail log could be read (give --log FILE)",
              file=sys.stderr)
        return EXIT_FAIL
    rep = rp.build(decisions, since, until, top=s.ops.top)
    rep.sources = [*read, "redis audit stream"]
    try:
        rep.locks = rp.lock_events(audit(), since, until)
    except Exception as e:  # Redis down: the rest of the report still matters
        rep.locks_error = f"{type(e).__name__}: {e}"
        rep.sources.pop()
    title = f"mailwarden ({s.profile_name})"
    if getattr(args, "mail", False):
        return mail(rp.text(rep, title), s, title)
    if args.json:
        print(rp.to_json(rep))
    elif args.html:
        Path(args.html).write_text(rp.to_html(rep, title), encoding="utf-8")
        print(f"wrote {args.html}")
    else:
        sys.stdout.write(rp.text(rep, title))
    return EXIT_OK


def mail(body: str, s: Settings, title: str) -> int:
    """The text report to notifier.admins through notifier.smtp (the systemd timer)."""
    import smtplib
    from email.message import EmailMessage
    from email.policy import SMTP

    from mailwarden.addresses import parse_listen

    n = s.notifier
    if not n.admins:
        print("mailwarden: report --mail: notifier.admins is empty", file=sys.stderr)
        return EXIT_USAGE
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"] = n.sender_header, ", ".join(n.admins)
    msg["Subject"] = f"{title} report {time.strftime('%Y-%m-%d', time.gmtime())}"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, charset="utf-8")
    where = parse_listen(n.smtp)
    try:
        with smtplib.SMTP(where.host, where.port, timeout=n.timeout_s,
                          local_hostname="mailwarden-report") as smtp:
            smtp.send_message(msg, from_addr="", to_addrs=list(n.admins))
    except (OSError, smtplib.SMTPException) as e:
        print(f"mailwarden: report --mail: {n.smtp}: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"mailed to {', '.join(n.admins)}")
    return EXIT_OK
