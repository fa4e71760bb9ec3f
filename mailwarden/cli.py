"""The `mailwarden` command: daemons, config checks and the operator's lock tools.

Exit status: 0 success, 1 the operation failed (e.g. Redis unreachable),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mailwarden import __version__
from mailwarden.addresses import mailbox_key
from mailwarden.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    describe,
    load_config,
    reference_markdown,
)
from mailwarden.config import sample_config as _sample_config

if TYPE_CHECKING:
    from mailwarden.settings import Settings

T = TypeVar("T")
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    env = os.environ.get("MAILWARDEN_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def _load(args: argparse.Namespace) -> Config:
    path = _config_path(args.config)
    if path is None:
        print(f"mailwarden: {DEFAULT_CONFIG_PATH} not found; using built-in defaults",
              file=sys.stderr)
    return load_config(path)


def _settings(cfg: Config) -> Settings:
    from mailwarden.settings import Settings

    return Settings.from_config(cfg)


def _store(cfg: Config) -> Any:
    from mailwarden.store.redis_store import RedisStore

    # An operator's command may wait longer for Redis than a daemon answering Postfix.
    return RedisStore.from_settings(_settings(cfg).redis, min_timeout_s=2.0)


def _with_store(cfg: Config, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        store = _store(cfg)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _operator() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _account(cfg: Config, addr: str) -> str:
    ours = _settings(cfg).ours
    if "@" not in addr:
        raise ConfigError(f"{addr!r}: give the full address, e.g. {addr}@{ours.local_domains[0]}")
    return mailbox_key(addr, ours.recipient_delimiter)


def _setup_logging(cfg: Config, name: str) -> None:
    from mailwarden.logs import setup_logging

    s = _settings(cfg).logging
    setup_logging(name, s.level, s.syslog, s.facility, s.socket)


# -- commands ------------------------------------------------------------------
def _run_daemon(args: argparse.Namespace, cfg: Config, name: str,
                run: Callable[[], int]) -> int:
    """Foreground (systemd) by default; --daemon detaches (hosts without systemd)."""
    if args.daemon:
        return _daemonize(args, cfg, name, run)
    _setup_logging(cfg, name)
    return run()


def cmd_policyd(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.policyd import server

    return _run_daemon(args, cfg, "policyd", lambda: server.run(cfg))


def cmd_milter(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.milter import app

    return _run_daemon(args, cfg, "milter", lambda: app.run(cfg))


def cmd_authpolicy(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.authpolicy import server

    return _run_daemon(args, cfg, "authpolicy", lambda: server.run(cfg))


def cmd_notifier(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.notify import daemon

    return _run_daemon(args, cfg, "notifier", lambda: daemon.run(_settings(cfg)))


def cmd_report(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.ops import command

    return command.report(args, _settings(cfg), lambda: _with_store(
        cfg, lambda st: st.audit(100_000)))


def cmd_health(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.ops import health

    status, line = health.run(_settings(cfg), tuple(args.skip or ()))
    print(line)
    return status


def cmd_check(args: argparse.Namespace, cfg: Config) -> int:
    """Offline: the milter's verdict on FILE.eml, with every reason (the same engine,
    authentication included: give --client-addr/--helo as the milter would see them)."""
    from mailwarden.engine import Engine, Envelope
    from mailwarden.settings import Settings
    from mailwarden.verdict import Action

    settings = Settings.from_config(cfg)
    if args.no_scan:
        settings = replace(settings, content=replace(settings.content, scan=False))
    if args.no_auth:
        settings = replace(settings, auth=replace(settings.auth, enabled=False))
    try:
        fp = open(args.file, "rb")
    except OSError as e:
        print(f"mailwarden: {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    client = args.client_addr or ("127.0.0.1" if args.sasl_user else "")
    envelope = Envelope(mail_from=args.sender or "", recipients=tuple(args.to or ()),
                        original_recipients=tuple("" for _ in args.to or ()),
                        client_addr=client, authenticated=bool(args.sasl_user),
                        helo=args.helo or "")
    engine = Engine.from_settings(settings)
    with fp:
        result = engine.evaluate(fp, envelope)
    decisive = result.decisive
    action = "accept" if decisive is None else (
        "reject" if decisive.action is Action.REJECT else "tempfail")
    reasons = [{"rule": v.rule, "detail": " ".join(f"{k}={v2}" for k, v2 in v.detail.items()),
                "article": v.article, "action": "monitor" if v.monitor else v.action.value}
               for v in result.verdicts]
    out: dict[str, Any] = {"action": action,
                           "reply": decisive.reply if decisive else "250 2.0.0 Ok",
           "reasons": reasons}
    if args.json:
        model = result.model
        out["attachments"] = [a.__dict__ for a in model.attachments] if model else []
        out["defects"] = list(model.defects) if model else []
        out["envelope"] = {"from": args.sender or "", "to": args.to or [],
                           "sasl_user": args.sasl_user or ""}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(f"{action}: {out['reply']}")
        for r in reasons:
            print(f"  - {r['rule']} ({r['action']}): {r['detail']}"
                  + (f" [{r['article']}]" if r["article"] else ""))
        if result.model:
            for a in result.model.attachments:
                print(f"  attachment: {a.name or '(no name)'} {a.content_type} "
                      f"{a.decoded_size} bytes, looks like {a.detected_type}")
    return EXIT_OK if action == "accept" else EXIT_FAIL


def cmd_forwarding(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.audit import command as forwarding_audit
    from mailwarden.settings import Settings

    settings = Settings.from_config(cfg)
    return forwarding_audit.main(args, settings.content.forwarding, settings.audit)


def cmd_dkim(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.auth.dkim_sign import keygen

    try:
        path, record = keygen(args.domain, args.selector, args.dir, owner_user=args.user,
                              algorithm=args.algorithm)
    except (OSError, ValueError) as e:
        print(f"mailwarden: dkim keygen: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"# private key written to {path} (mode 0600)")
    print("# add to mailwarden.toml:")
    print(f'#   [[dkim.keys]]\n#   domain = "{args.domain}"\n#   selector = "{args.selector}"'
          f'\n#   key_file = "{path}"' + (f'\n#   algorithm = "{args.algorithm}"'
                                           if args.algorithm != "rsa-sha256" else ""))
    print("# publish this TXT record in the domain's zone:")
    print(record)
    return EXIT_OK


def _daemonize(args: argparse.Namespace, cfg: Config, name: str, run: Callable[[], int]) -> int:
    """Detach for hosts without systemd (pidfile, umask, cwd /, closed descriptors)."""
    import daemon
    import daemon.pidfile

    pidfile = args.pidfile or f"/run/mailwarden/{name}.pid"
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
    log_out = open(args.log_file, "a") if args.log_file else None
    if log_out is None and not _settings(cfg).logging.syslog:
        print("mailwarden: --daemon closes stderr: set logging.syslog = true or give "
              "--log-file FILE", file=sys.stderr)
        return EXIT_USAGE
    ctx = daemon.DaemonContext(
        working_directory="/", umask=0o027,
        pidfile=daemon.pidfile.TimeoutPIDLockFile(pidfile, acquire_timeout=1),
        stdout=log_out, stderr=log_out, signal_map={},  # asyncio installs its own handlers
    )
    with ctx:
        _setup_logging(cfg, name)
        return run()


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "sample":
        sys.stdout.write(_sample_config())
        return EXIT_OK
    if args.action == "reference":
        sys.stdout.write(reference_markdown())
        return EXIT_OK
    if args.action == "rules":
        from mailwarden.verdict import rules_markdown

        sys.stdout.write(rules_markdown())
        return EXIT_OK
    cfg = _load(args)
    sys.stdout.write(f"# {cfg.path}: OK\n")
    sys.stdout.write(describe(cfg))
    return _probe_policy_signatures(cfg)


def _probe_policy_signatures(cfg: Config) -> int:
    """clamd has conf/clamav/mailwarden-policy.ndb (antivirus.policy_signatures)?"""
    content = _settings(cfg).content
    if not content.scan or content.policy_signatures == "off":
        return EXIT_OK
    from mailwarden.engine.scanning import probe_policy_signatures

    ok, said = probe_policy_signatures(content.clamd_address, timeout_s=5.0)
    if ok:
        sys.stdout.write(f"# clamd {content.clamd_address}: policy signatures loaded ({said})\n")
        return EXIT_OK
    if ok is None:  # clamd may start after us: the milter probes again at start
        print(f"mailwarden: warning: could not probe clamd {content.clamd_address}: {said}",
              file=sys.stderr)
        return EXIT_OK
    print(f"mailwarden: clamd {content.clamd_address} lacks the policy signatures "
          f"(conf/clamav/mailwarden-policy.ndb): the probe PE came back {said!r}",
          file=sys.stderr)
    return EXIT_FAIL if content.policy_signatures == "require" else EXIT_OK


def cmd_locks(args: argparse.Namespace, cfg: Config) -> int:
    locks = _with_store(cfg, lambda st: st.list_locks())
    if args.json:
        print(json.dumps([lk.__dict__ for lk in locks], indent=2))
        return EXIT_OK
    if not locks:
        print("no locked accounts")
        return EXIT_OK
    rows = [("ACCOUNT", "KIND", "SINCE", "COUNT", "BY", "REASON")]
    rows += [(lk.account, lk.kind, _when(lk.since), str(lk.count or "-"), lk.by or "-", lk.reason)
             for lk in locks]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    return EXIT_OK


def cmd_lock(args: argparse.Namespace, cfg: Config) -> int:
    account = _account(cfg, args.address)
    async def lock(st: Any) -> tuple[bool, tuple[int, int]]:
        made = await st.lock(account, reason=args.reason, by=args.by, now=time.time(),
                             kind="manual")
        return made, await st.wait_replicas()  # redis.replica_wait, bounded

    new, (acked, replicas) = _with_store(cfg, lock)
    if acked < replicas:
        print(f"warning: only {acked} of {replicas} Redis replicas confirmed the lock within "
              "redis.replica_wait", file=sys.stderr)
    print(f"{account}: {'locked' if new else 'was already locked; reason updated'}; "
          f"running policy daemons apply it at once (published), at the latest within "
          f"{_settings(cfg).policyd.lock_refresh_s:g}s")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace, cfg: Config) -> int:
    account = _account(cfg, args.address)
    lifted = _with_store(cfg, lambda st: st.unlock(account, reason=args.reason, by=args.by))
    if not lifted:
        print(f"{account}: was not locked (window counters cleared)")
        return EXIT_FAIL
    print(f"{account}: unlocked; running policy daemons apply it at once (published), "
          f"at the latest within {_settings(cfg).policyd.lock_refresh_s:g}s")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    from mailwarden.rules.ratelock import limit_for
    from mailwarden.settings import Settings

    account = _account(cfg, args.address)
    s = Settings.from_config(cfg).rate
    st = _with_store(cfg, lambda store: store.status(account, now=time.time(),
                                                     window_s=s.window_s))
    limit = "exempt" if account in s.exempt else str(limit_for(account, s))
    out = {
        "account": account, "window_s": s.window_s, "count": st.committed,
        "reserved": st.pending, "limit": limit, "unit": s.count_unit,
        "locked": st.lock is not None,
    }
    out["failed_logins"] = _with_store(cfg, lambda store: store.failed_logins(account))
    if st.lock:
        out.update(lock_reason=st.lock.reason, lock_since=_when(st.lock.since),
                   lock_kind=st.lock.kind, lock_by=st.lock.by)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:12} {v}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, cfg: Config) -> int:
    account = _account(cfg, args.account) if args.account else ""
    events = _with_store(cfg, lambda st: st.audit(args.n, account))
    if args.json:
        print(json.dumps(events, indent=2))
        return EXIT_OK
    for e in events:
        when = _when(int(e["id"].split("-")[0]) / 1000)
        extra = f" count={e['count']}" if e.get("count") else ""
        print(f"{when}  {e.get('action', '?'):6}  {e.get('account', '?')}  by={e.get('by', '?')}"
              f"  kind={e.get('kind', '-')}{extra}  reason={e.get('reason', '')!r}")
    if not events:
        print("no lock or unlock events")
    return EXIT_OK


def _accounts_file(path: str) -> list[str]:
    """One address a line ('#' comments): the mailboxes that exist (`doveadm user '*'`)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def cmd_inactive(args: argparse.Namespace, cfg: Config) -> int:
    """Accounts past the profile's inactivity period (or --days N), with their dates;
    --lock (or --scheduled with accounts.inactive_auto_lock) locks them, kind inactive."""
    from mailwarden.rules.accounts import LOCK_KIND_INACTIVE, InactiveInputs, decide_inactive
    from mailwarden.settings import accounts_from, ours_from

    s = accounts_from(cfg, ours_from(cfg))
    if args.days is None and s.inactive_lock_months <= 0:
        if args.scheduled:  # the monthly timer on a profile without a period
            print(f"profile {_settings(cfg).profile_name}: no inactivity period, nothing to do")
            return EXIT_OK
        print(f"mailwarden: profile {_settings(cfg).profile_name} sets no inactivity period "
              "(accounts.inactive_lock_months = 0): give --days N", file=sys.stderr)
        return EXIT_USAGE
    try:
        listed = [_account(cfg, a) for a in _accounts_file(args.accounts)] \
            if args.accounts else []
    except OSError as e:
        print(f"mailwarden: {args.accounts}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    lock = args.lock or (args.scheduled and s.inactive_auto_lock)
    now = time.time()

    async def go(store: Any) -> list[dict[str, Any]]:
        act = await store.activity()
        locks = {lk.account: lk for lk in await store.list_locks()}
        found = []
        for account in sorted(set(act.last_login) | set(act.last_send) | set(listed)):
            for v in decide_inactive(InactiveInputs(
                    account, act.last_login.get(account), act.last_send.get(account),
                    act.since if act.since is not None else now, now, locks.get(account),
                    args.days), s):
                row: dict[str, Any] = {**v.detail, "idle_days": int(v.detail["idle_days"]),
                                       "article": v.article, "locked_now": False}
                if lock and account not in locks:
                    row["locked_now"] = await store.lock(
                        account, reason=f"unused for {row['idle_days']} days "
                        f"({v.article or 'mailwarden inactive'})", by=args.by, now=now,
                        kind=LOCK_KIND_INACTIVE)
                    row["locked"] = LOCK_KIND_INACTIVE
                found.append(row)
        return found

    rows = _with_store(cfg, go)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    period = f"{args.days} days" if args.days is not None else \
        f"{s.inactive_lock_months} months ({s.inactive_citation})"
    if not rows:
        print(f"no account unused for {period}")
        return EXIT_OK
    table = [("ACCOUNT", "IDLE_DAYS", "LAST_LOGIN", "LAST_SEND", "LOCKED", "REMOVE")]
    table += [(r["account"], str(r["idle_days"]), r["last_login"], r["last_send"],
               r["locked"] + (" (now)" if r["locked_now"] else ""), r.get("remove", "-"))
              for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(6)]
    print(f"# unused for {period}")
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())
    return EXIT_OK


# -- argument parsing ------------------------------------------------------------
def _daemon_parser(sub: Any, name: str, help_text: str) -> None:
    """A daemon's subcommand: foreground by default, --daemon for hosts without systemd."""
    d = sub.add_parser(name, help=help_text)
    d.add_argument("--daemon", action="store_true", help="detach (hosts without systemd)")
    d.add_argument("--pidfile", help=f"with --daemon (default /run/mailwarden/{name}.pid)")
    d.add_argument("--log-file", help="with --daemon, when not logging to syslog")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailwarden", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"mailwarden {__version__}")
    p.add_argument("--config", "-c", metavar="FILE",
                   help=f"config file (default: $MAILWARDEN_CONFIG or {DEFAULT_CONFIG_PATH})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _daemon_parser(sub, "policyd", "run the policy daemon in the foreground")

    _daemon_parser(sub, "milter", "run the milter in the foreground")

    _daemon_parser(sub, "authpolicy", "run Dovecot's auth policy server in the foreground "
                   "(locked = no login; failed-login lock)")

    ia = sub.add_parser("inactive", help="accounts unused past the profile's period, with "
                        "their last login and send")
    ia.add_argument("--days", type=int, help="unused for N days instead of the profile's "
                    "months")
    ia.add_argument("--accounts", metavar="FILE", help="every mailbox, one address a line "
                    "(e.g. from doveadm user '*'): one never seen counts as unused since "
                    "recording started")
    ia.add_argument("--json", action="store_true")
    ia.add_argument("--lock", action="store_true", help="lock what is listed (kind "
                    "inactive, citing the profile's article)")
    ia.add_argument("--scheduled", action="store_true", help="the timer's run: locks only "
                    "when accounts.inactive_auto_lock = true")
    ia.add_argument("--by", default=_operator(), help="who locks (default: the login name)")

    _daemon_parser(sub, "notifier", "run the lock notifier in the foreground (mails lock "
                   "and unlock events of the audit stream)")

    r = sub.add_parser("report", help="refusals, tempfails, locks and unlocks of a period "
                       "(from the mail log and the audit stream)")
    r.add_argument("--log", action="append", metavar="FILE",
                   help="mail log to read (repeat; .gz too; - = stdin); default "
                   "report.log_files")
    r.add_argument("--since", default="24h", metavar="DURATION",
                   help="how far back (default 24h)")
    r.add_argument("--until", metavar="EPOCH|ISO", help="end of the period (default now)")
    r.add_argument("--year", type=int, help="year of syslog time stamps without one "
                   "(default: this year)")
    fmt = r.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    fmt.add_argument("--mail", action="store_true", help="mail the text report to "
                     "notifier.admins through notifier.smtp (the systemd timer)")

    h = sub.add_parser("health", help="Nagios-style check: exit 0 OK, 1 warning, 2 critical")
    h.add_argument("--skip", action="append", metavar="CHECK",
                   choices=("redis", "clamd", "policyd", "milter", "notifier"),
                   help="leave a check out (repeat), e.g. on a host without the milter")

    k = sub.add_parser("check", help="the milter's verdict on a message file, offline "
                       "(exit 0 accepted, 1 refused, 2 usage/config error)")
    k.add_argument("file", metavar="FILE.eml")
    k.add_argument("--from", dest="sender", metavar="ADDR", help="envelope sender")
    k.add_argument("--to", action="append", metavar="ADDR", help="envelope recipient (repeat)")
    k.add_argument("--sasl-user", metavar="LOGIN", help="as if sent by this SASL login")
    k.add_argument("--client-addr", metavar="IP", help="the SMTP client's address, as the "
                   "milter sees it (SPF, trusted networks; default 127.0.0.1 with --sasl-user)")
    k.add_argument("--helo", metavar="NAME", help="the client's HELO/EHLO name (SPF)")
    k.add_argument("--no-auth", action="store_true", help="skip SPF/DKIM/DMARC and signing")
    k.add_argument("--json", action="store_true")
    k.add_argument("--no-scan", action="store_true", help="skip clamd")

    f = sub.add_parser("forwarding", help="forwarding tools")
    fsub = f.add_subparsers(dest="forwarding_command", required=True, metavar="ACTION")
    fa = fsub.add_parser("audit", help="list configured forwards from local mailboxes to "
                         "private addresses (aliases, .forward, Sieve); exit 1 if any")
    from mailwarden.audit import command as forwarding_audit

    forwarding_audit.add_arguments(fa)

    kd = sub.add_parser("dkim", help="DKIM tools")
    ksub = kd.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    kg = ksub.add_parser("keygen", help="write a private key (0600) and print the DNS TXT "
                         "record to publish")
    kg.add_argument("domain")
    kg.add_argument("selector")
    kg.add_argument("--dir", default="/etc/mailwarden/dkim", help="where the key goes")
    kg.add_argument("--user", default="mailwarden",
                    help="owner of the key file, if that user exists (default mailwarden)")
    kg.add_argument("--algorithm", choices=("rsa-sha256", "ed25519-sha256"),
                    default="rsa-sha256")

    c = sub.add_parser("config", help="check the config or print the annotated sample")
    c.add_argument("action", choices=("check", "sample", "reference", "rules"))
    c.add_argument("--config", "-c", dest="sub_config", metavar="FILE")

    sub.add_parser("locks", help="list locked accounts").add_argument("--json", action="store_true")
    for name, helptext in (("lock", "lock an account (Dieu 7.2)"),
                           ("unlock", "lift a lock (Dieu 7.3)")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("address")
        q.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        q.add_argument("--by", default=_operator(), help="who (default: the login name)")
    s = sub.add_parser("status", help="window count, limit and lock of an account")
    s.add_argument("address")
    s.add_argument("--json", action="store_true")
    a = sub.add_parser("audit", help="lock/unlock history, newest first")
    a.add_argument("--account")
    a.add_argument("-n", type=int, default=50, help="how many events (default 50)")
    a.add_argument("--json", action="store_true")
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "authpolicy": cmd_authpolicy, "inactive": cmd_inactive,
    "policyd": cmd_policyd, "milter": cmd_milter, "check": cmd_check, "locks": cmd_locks,
    "lock": cmd_lock, "unlock": cmd_unlock, "status": cmd_status, "audit": cmd_audit,
    "forwarding": cmd_forwarding, "dkim": cmd_dkim, "notifier": cmd_notifier,
    "report": cmd_report, "health": cmd_health,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "sub_config", None):
        args.config = args.sub_config
    try:
        if args.command == "config":
            return cmd_config(args)
        cfg = _load(args)
        return COMMANDS[args.command](args, cfg)
    except ConfigError as e:
        print(f"mailwarden: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL
    except Exception as e:
        from redis.exceptions import RedisError

        if isinstance(e, RedisError | OSError):
            print(f"mailwarden: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_FAIL
        raise
