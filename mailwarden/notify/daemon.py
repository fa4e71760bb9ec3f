"""`mailwarden notifier`: mail lock and unlock events to owners and administrators.

Why a daemon of its own, not a task inside the policy daemon: a policy answer must
never wait for SMTP, a notification must not be lost when a policy daemon restarts,
and with several MTAs (several policy daemons) one Redis must produce one mail per
event. So the notifier is off the request path entirely: it reads the audit stream
(written by the same Lua script that makes the lock, once per lock) through one Redis
consumer group (store/events.py). Run one per host, or just one: the group hands each
event to one notifier; one that dies holding an event loses it to another after
notifier.claim_after. A relay that is down only delays the mail: the event stays
pending and is retried with a growing pause (notifier.retry_min .. retry_max).

Mail goes to the local MTA (notifier.smtp) with the null envelope sender <>, which
no lock can block (the policy daemon counts and locks accounts, never <>) and which
never bounces back into a loop, plus `Auto-Submitted: auto-generated` (RFC 3834).
"""

from __future__ import annotations

import email.utils
import logging
import signal
import smtplib
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from redis.exceptions import RedisError

from mailwarden import __version__, logs, metrics
from mailwarden.addresses import parse_listen
from mailwarden.notify import templates
from mailwarden.settings import Settings
from mailwarden.store.events import AuditEvent, AuditQueue

log = logging.getLogger("mailwarden.notifier")

ACTIONS = ("lock", "unlock")
# Kinds whose lock is a re-creation, not news: put back after Redis lost its data.
QUIET_KINDS = ("restored",)


@dataclass
class _Retry:
    tries: int = 0
    next_at: float = 0.0


@dataclass
class Outcome:
    sent: list[str] = field(default_factory=list)  # roles mailed now
    failed: list[str] = field(default_factory=list)


class Notifier:
    def __init__(self, settings: Settings, queue: AuditQueue) -> None:
        self.settings = settings
        self.n = settings.notifier
        self.queue = queue
        self.consumer = self.n.consumer
        self.dir = Path(self.n.templates) if self.n.templates else templates.shipped_dir()
        self.retry: dict[str, _Retry] = {}
        self.smtp = parse_listen(self.n.smtp)
        if self.smtp.family != "inet":
            raise ValueError(f"notifier.smtp {self.n.smtp}: inet:HOST:PORT expected")

    # -- one event -------------------------------------------------------------------
    def recipients(self, event: AuditEvent) -> dict[str, list[str]]:
        """role -> addresses: the owner (lock and unlock), the admins (lock)."""
        out: dict[str, list[str]] = {}
        if self.n.notify_owner and "@" in event.account:
            out["owner"] = [event.account]
        if event.action == "lock" and self.n.admins:
            out["admins"] = list(self.n.admins)
        return out

    def message(self, event: AuditEvent, role: str, to: list[str]) -> EmailMessage:
        vals = templates.values(event, self.n, self.settings.rate)
        rendered = templates.render(templates.pick(self.dir, event, vals["kind"]), vals)
        msg = EmailMessage(policy=SMTP)
        msg["From"] = self.n.sender_header
        msg["To"] = ", ".join(to)
        msg["Subject"] = rendered.subject
        msg["Date"] = email.utils.formatdate(localtime=False)
        domain = self.n.sender_header.rpartition("@")[2] or "localhost"
        # The same for every try: a duplicate that slipped through is recognisable.
        msg["Message-ID"] = f"<mailwarden.{event.action}.{event.id}.{role}@{domain}>"
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Mailwarden-Event"] = f"{event.action} {event.id}"
        msg.set_content(rendered.body, charset="utf-8")
        return msg

    def send(self, msg: EmailMessage, to: list[str]) -> None:
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.n.timeout_s,
                          local_hostname="mailwarden-notifier") as smtp:
            smtp.send_message(msg, from_addr="", to_addrs=to)

    def handle(self, event: AuditEvent) -> Outcome | None:
        """Mail what is still missing for one event; None = nothing to do (ack it)."""
        if event.action not in ACTIONS or not event.account \
                or event.fields.get("kind", "") in QUIET_KINDS:
            return None
        metrics.lock_event("notifier", event.action, event.fields.get("kind", ""))
        done = self.queue.notified(event.id)
        out = Outcome()
        for role, to in self.recipients(event).items():
            if role in done:
                continue
            try:
                self.send(self.message(event, role, to), to)
            except (OSError, smtplib.SMTPException) as e:
                out.failed.append(role)
                metrics.notification(event.action, role, "failed")
                metrics.backend_error("notifier", "smtp")
                log.warning("%s", logs.note("notification not sent, will retry",
                                            event=event.id, action=event.action,
                                            account=event.account, role=role,
                                            error=f"{type(e).__name__}: {e}"))
                continue
            except templates.TemplateError as e:  # an operator's edit: keep the event
                out.failed.append(role)
                log.error("%s", logs.note("notification template error, will retry",
                                          event=event.id, error=str(e)))
                continue
            self.queue.mark_notified(event.id, role)
            out.sent.append(role)
            metrics.notification(event.action, role, "sent")
            log.info("%s", logs.note("notification sent", event=event.id,
                                     action=event.action, account=event.account, role=role,
                                     to=",".join(to)))
        return out

    def process(self, events: list[AuditEvent], now: float) -> None:
        for ev in events:
            r = self.retry.get(ev.id)
            if r is not None and r.next_at > now:
                continue
            outcome = self.handle(ev)
            if outcome is None or not outcome.failed:
                self.queue.ack(ev.id)
                self.retry.pop(ev.id, None)
                continue
            r = r or _Retry()
            r.tries += 1
            pause = min(self.n.retry_min_s * 2 ** (r.tries - 1), self.n.retry_max_s)
            r.next_at = now + pause
            self.retry[ev.id] = r

    # -- the loop --------------------------------------------------------------------
    def step(self, block_ms: int = 1000) -> None:
        now = time.time()
        # Our own pending (retries, or taken before a restart), then the dead's, then news.
        self.process(self.queue.read_mine(self.consumer), now)
        self.process(self.queue.take_over(self.consumer,
                                          idle_ms=int(self.n.claim_after_s * 1000)), now)
        due = [r.next_at for r in self.retry.values()]
        wait_ms = block_ms if not due else int(max(0.0, min(due) - time.time()) * 1000)
        self.process(self.queue.read_new(self.consumer, block_ms=max(1, min(block_ms,
                                                                               wait_ms))),
                     time.time())
        metrics.set_notifier_backlog(self.queue.backlog().total)

    def run(self, stop: threading.Event) -> None:
        delay = 0.5
        down = False
        while not stop.is_set():
            try:
                if self.queue.ensure_group():
                    log.info("%s", logs.note("consumer group created on the audit stream"))
                while not stop.is_set():
                    self.step()
                    if down:
                        log.info("%s", logs.note("Redis reachable again"))
                        down, delay = False, 0.5
            except (RedisError, OSError) as e:
                if not down:
                    log.warning("%s", logs.note("Redis unreachable, retrying",
                                                error=f"{type(e).__name__}: {e}"))
                down = True
                metrics.backend_error("notifier", "redis")
                stop.wait(delay)
                delay = min(delay * 2, 10.0)


def run(settings: Settings) -> int:
    """Run the notifier in the foreground until SIGTERM/SIGINT."""
    from mailwarden.policyd.server import sd_notify

    n = settings.notifier
    directory = Path(n.templates) if n.templates else templates.shipped_dir()
    templates.check(directory)  # a broken template is fatal at start, not at 3 a.m.
    if n.metrics_listen:
        metrics.serve("notifier", n.metrics_listen, profile=settings.profile_name,
                      version=__version__)
    queue = AuditQueue.from_settings(settings.redis, timeout_s=5.0)
    notifier = Notifier(settings, queue)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("%s", logs.note("notifier started", consumer=notifier.consumer, smtp=n.smtp,
                             admins=",".join(n.admins) or "-", templates=str(directory)))
    sd_notify("READY=1")
    notifier.run(stop)
    sd_notify("STOPPING=1")
    queue.close()
    log.info("%s", logs.note("notifier stopped"))
    return 0
