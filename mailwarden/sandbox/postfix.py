"""A private Postfix 3.x instance, run as root from its own config directory.

Loopback only, no DNS, relays everything to a local sink, logs to its own
file (no syslog on these machines). Started with `postfix start-fg` under our
own process, so we hold the master's PID and stop it by that PID.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from mailwarden.sandbox import procs

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
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        master = MASTER_CF.format(smtpd_listen=f"127.0.0.1:{self.smtpd_port}")
        (self.config_dir / "master.cf").write_text(master + self.master_cf_extra)
        shutil.chown(self.data_dir, "postfix", "postfix")

    # -- lifecycle -----------------------------------------------------------
    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.config_dir), *args], check=check,
                              capture_output=True, text=True, timeout=60)

    def start(self) -> PostfixInstance:
        self.write_config()
        self.maillog.touch()
        # `start-fg` checks the configuration and creates the queue's subdirectories with
        # Postfix's own ownership and modes; a fatal problem ends it (see master.out).
        self.proc = procs.spawn(["postfix", "-c", str(self.config_dir), "start-fg"],
                                self.dir / "master.out")
        procs.wait_until(self._banner, 30, "postfix smtpd",
                         alive=lambda: self.proc is not None and self.proc.poll() is None,
                         log=self.maillog)
        # `start-fg` runs master under a shell wrapper that does not pass SIGTERM on:
        # the master's own PID (from its pid file) is what we stop.
        self.master_pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        return self

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.smtpd_port), timeout=2) as s:
                return s.recv(512).startswith(b"220")
        except OSError:
            return False

    def stop(self) -> None:
        if self.master_pid:
            procs.stop_pid(self.master_pid, timeout_s=20)  # master stops its children
            self.master_pid = 0
        if self.proc is not None:
            procs.stop(self.proc, timeout_s=20)
            self.proc = None

    def reload(self) -> None:
        self.write_config()
        self.postfix("reload")

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------
    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_for_log(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in maillog after {timeout_s}s:\n"
                                     + "\n".join(self.log_text().splitlines()[-30:]))
            time.sleep(0.05)

    def queue(self) -> str:
        return subprocess.run(["postqueue", "-c", str(self.config_dir), "-p"],
                              capture_output=True, text=True, timeout=30).stdout

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.config_dir), "-f"], check=False,
                       capture_output=True, timeout=30)
