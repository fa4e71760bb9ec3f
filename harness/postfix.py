"""A private Postfix 3.x instance, run as root from its own config directory.

Loopback only, no DNS, relays everything to a local sink, logs to its own
file (no syslog on these machines). Started with `postfix start-fg` under our
own process, so we hold the master's PID and stop it by that PID.

Gotchas this module handles (see docs/sandbox.md):
- `start-fg` runs master under a `postfix-script` shell that does not pass
  SIGTERM on: we stop the master's PID from `QUEUE/pid/master.pid`.
- Postfix re-reads a config file modified within the last second ("hot"
  file, 300 ms steps, ~2 s per start): the files we write are back-dated.
- `maillog_file` must lie under `maillog_file_prefixes`.
- Postfix's unprivileged daemons (user postfix) must traverse the instance
  directory to reach their sockets and the maillog: a 0700 parent breaks it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness import procs

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{smtpd_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    def __init__(self, workdir: Path, *, relay_port: int, smtpd_port: int | None = None,
                 policy: str | None = None, milter: str | None = None,
                 relay_domains: tuple[str, ...] = ("ninhbinh.gov.vn",),
                 main_cf_extra: dict[str, str] | None = None, master_cf_extra: str = "",
                 ) -> None:
        self.dir = Path(workdir)
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "queue"
        self.data_dir = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.smtpd_port = smtpd_port or procs.free_port()
        self.relay_port = relay_port
        self.policy = policy
        self.milter = milter
        self.relay_domains = relay_domains
        self.main_cf_extra = main_cf_extra or {}
        self.master_cf_extra = master_cf_extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.master_pid = 0

    # -- configuration -----------------------------------------------------
    def main_cf(self) -> dict[str, str]:
        cf = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mail.ninhbinh.gov.vn",
            "mydomain": "ninhbinh.gov.vn",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "relay_domains": ", ".join(self.relay_domains),
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtp_dns_support_level": "disabled",
            "disable_dns_lookups": "yes",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            # XCLIENT LOGIN is ignored unless SASL is on (POSTFIX-FACTS.md).
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_relay_restrictions":
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
            "message_size_limit": "52428800",
            "mailbox_size_limit": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            "smtputf8_enable": "yes",
            "shlib_directory": "/usr/lib/postfix",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "smtpd_banner": "$myhostname ESMTP",
            "notify_classes": "",
            "delay_warning_time": "0",
        }
        if self.policy:
            check = f"check_policy_service {self.policy}"
            cf["smtpd_recipient_restrictions"] = check
            cf["smtpd_end_of_data_restrictions"] = check
            cf["smtpd_policy_service_default_action"] = "451 4.3.5 policy service unavailable"
            cf["smtpd_policy_service_timeout"] = "10s"
            cf["smtpd_policy_service_request_limit"] = "0"
        if self.milter:
            cf["smtpd_milters"] = self.milter
            cf["non_smtpd_milters"] = self.milter
            cf["milter_default_action"] = "tempfail"
            cf["milter_protocol"] = "6"
            cf["milter_mail_macros"] = \
                "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
            cf["milter_rcpt_macros"] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}"
            cf["milter_end_of_data_macros"] = "i"
        cf.update(self.main_cf_extra)
        return cf

    def write_config(self) -> None:
        for d in (self.config_dir, self.data_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
        lines = [f"{k} = {v}" for k, v in self.main_cf().items()]
        master = MASTER_CF.format(smtpd_listen=f"127.0.0.1:{self.smtpd_port}")
        past = time.time() - 10  # not "hot": Postfix would wait until it is 1 s old
        for name, text in (("main.cf", "\n".join(lines) + "\n"),
                           ("master.cf", master + self.master_cf_extra)):
            path = self.config_dir / name
            path.write_text(text)
            os.utime(path, (past, past))
        shutil.chown(self.data_dir, "postfix", "postfix")

    def _check_traversable(self) -> None:
        """Postfix's daemons run as user postfix: every parent must be o+x."""
        for d in (self.dir, *self.dir.parents):
            if not d.stat().st_mode & 0o001:
                raise procs.StartError(
                    f"{d} is not searchable by others (mode {d.stat().st_mode & 0o777:o}): "
                    "Postfix's unprivileged daemons could not reach their sockets and log; "
                    "put the instance under a 0755 directory")

    # -- lifecycle -----------------------------------------------------------
    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`postfix -c DIR ARGS...`; with `check`, a failure raises with Postfix's words."""
        done = subprocess.run(["postfix", "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stdout}{done.stderr}")
        return done

    def start(self) -> PostfixInstance:
        if self.proc is not None:
            raise RuntimeError("postfix instance already started")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_traversable()
        if procs.tcp_ready("127.0.0.1", self.smtpd_port)():  # else our banner probe lies
            raise procs.StartError(f"127.0.0.1:{self.smtpd_port} is already in use")
        self.write_config()
        self.maillog.touch()
        pidfile = self.queue_dir / "pid" / "master.pid"
        pidfile.unlink(missing_ok=True)  # a stale one from an earlier run would mislead us
        # `start-fg` checks the configuration and creates the queue's subdirectories with
        # Postfix's own ownership and modes; a fatal problem ends it (see master.out).
        out = self.dir / "master.out"
        self.proc = procs.spawn(["postfix", "-c", str(self.config_dir), "start-fg"], out)
        try:
            procs.wait_until(self._banner, 30, "postfix smtpd", alive=self._starting,
                             log=self.maillog)
        except procs.StartError as e:
            self.stop()  # finds the master even though start did not finish
            tail = out.read_text(errors="replace")[-2000:] if out.exists() else ""
            raise procs.StartError(f"{e}\n--- {out}:\n{tail}") from None
        # `start-fg` runs master under a shell wrapper that does not pass SIGTERM on:
        # the master's own PID (from its pid file, written before it listens) is what we stop.
        self.master_pid = self._find_master()
        return self

    def _find_master(self) -> int:
        """The master's PID: from its pid file (written before it listens), else the child
        of our `postfix-script` wrapper; 0 when there is none."""
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        if self.proc is None:
            return 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    return int(stat.parent.name)
            except (OSError, ValueError, IndexError):
                continue
        return 0

    def _starting(self) -> bool:
        """Still worth waiting for: master runs and no daemon died of a fatal error (a bad
        setting makes smtpd exit while master keeps restarting it, throttled)."""
        return self.proc is not None and self.proc.poll() is None and \
            re.search(r"postfix/\S+\[\d+\]: fatal: ", self.log_text()) is None

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.smtpd_port), timeout=1) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        """The master daemon's PID (0 when stopped)."""
        return self.master_pid

    def stop(self) -> None:
        """SIGTERM the master by PID (it stops its children), then wait for the port."""
        if not self.master_pid and self.proc is not None:
            self.master_pid = self._find_master()  # a start that failed half-way
        if self.master_pid:
            procs.stop_pid(self.master_pid, timeout_s=20)
            self.master_pid = 0
        if self.proc is not None:
            procs.stop(self.proc, timeout_s=20)
            self.proc = None
        listening = procs.tcp_ready("127.0.0.1", self.smtpd_port)
        procs.wait_until(lambda: not listening(), 10,
                         f"postfix stopped (127.0.0.1:{self.smtpd_port} closed)")

    def reload(self) -> None:
        """Rewrite main.cf/master.cf from the current attributes and `postfix reload`;
        returns once master has logged the reload (new smtpd processes use the new
        config; a session already open keeps the old one)."""
        before = self.log_text().count("reload -- version")
        self.write_config()
        self.postfix("reload")
        deadline = time.monotonic() + 15
        while self.log_text().count("reload -- version") <= before:
            if time.monotonic() > deadline:
                raise AssertionError("postfix did not log its reload:\n" + self._tail())
            time.sleep(0.02)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------
    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        """First match of `pattern` (re.MULTILINE) in the maillog, polled until a deadline."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout_s
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in maillog after {timeout_s}s:\n"
                                     + self._tail())
            time.sleep(0.05)

    def postconf(self, *args: str) -> str:
        """`postconf -c DIR ARGS...` (e.g. `postconf("-h", "relayhost")`); its stdout."""
        return subprocess.run(["postconf", "-c", str(self.config_dir), *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def queue(self) -> str:
        """`postqueue -p`: the sendmail-style listing."""
        return subprocess.run(["postqueue", "-c", str(self.config_dir), "-p"],
                              capture_output=True, text=True, timeout=30).stdout

    def queue_entries(self) -> list[dict[str, object]]:
        """`postqueue -j`: one JSON object per queued message (queue_name, queue_id,
        sender, recipients with delay_reason, ...)."""
        out = subprocess.run(["postqueue", "-c", str(self.config_dir), "-j"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(e["queue_id"]) for e in self.queue_entries()]

    def flush(self) -> None:
        """`postqueue -f`: retry every deferred message now."""
        subprocess.run(["postqueue", "-c", str(self.config_dir), "-f"], check=True,
                       capture_output=True, timeout=30)
