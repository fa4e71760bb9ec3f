"""A private Dovecot (IMAP only) on loopback, for the auth policy daemon's tests.

Debian's `dovecot-imapd` runs as root in the foreground with `dovecot -F -c FILE`;
everything lives in `workdir` (config, base_dir, state_dir, log, passwd-file,
homes). /etc/dovecot is never read: the config is complete on its own. Users are
a passwd-file of `address:{PLAIN}password` lines and a static userdb whose uid is
Debian's `dovecot` system user (Dovecot refuses root as a mail user).

`policy_url` points `auth_policy_server_url` at mailwarden's authpolicy daemon
(None: no policy server configured). The other auth policy settings are the
ones conf/dovecot/95-mailwarden-authpolicy.conf ships, so the tests exercise
the shipped wiring. `imap_login()` logs in from a chosen loopback source
address with imaplib, so per-address logic can be driven from one machine.

    with DovecotInstance(tmp, users={"a@x": "pw"}, policy_url="http://...") as dc:
        dc.imap_login("a@x", "pw")  # (True, "...") or (False, "why")
"""

from __future__ import annotations

import imaplib
import os
import pwd
import socket
from collections.abc import Callable
from pathlib import Path

from harness import procs

DOVECOT = "/usr/sbin/dovecot"
# The nonce Dovecot mixes into the password hashes it sends (auth_policy_hash_nonce).
TEST_NONCE = "mailwarden-test-nonce"


class _SourceIMAP(imaplib.IMAP4):
    """imaplib.IMAP4 connecting from a chosen local address (127.0.0.x)."""

    def __init__(self, host: str, port: int, source: str, timeout: float) -> None:
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))


class DovecotInstance(procs.Child):
    name = "dovecot"
    start_timeout_s = 30.0

    def __init__(self, workdir: Path, *, users: dict[str, str], policy_url: str | None = None,
                 api_header: str = "", reject_on_fail: bool = False,
                 policy_timeout_ms: int = 2000) -> None:
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        super().__init__(self.dir / "dovecot.stdout")
        self.users = dict(users)
        self.policy_url = policy_url
        self.api_header = api_header
        self.reject_on_fail = reject_on_fail
        self.policy_timeout_ms = policy_timeout_ms
        self.port = procs.free_port()
        self.conf = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"

    def write_config(self) -> None:
        mail_user = pwd.getpwnam("dovecot")
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        passwd = self.dir / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        passwd.chmod(0o600)
        os.chown(passwd, mail_user.pw_uid, mail_user.pw_gid)  # auth runs as dovecot
        for sub in ("run", "state"):
            (self.dir / sub).mkdir(exist_ok=True)
        policy = ""
        if self.policy_url is not None:
            policy = "\n".join([
                f"auth_policy_server_url = {self.policy_url}",
                "auth_policy_request_attributes = login=%{requested_username} "
                "pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id} protocol=%s "
                "session_id=%{session}",
                f"auth_policy_hash_nonce = {TEST_NONCE}",
                "auth_policy_hash_truncate = 12",
                "auth_policy_report_after_auth = yes",
                "auth_policy_check_before_auth = yes",
                "auth_policy_check_after_auth = yes",
                f"auth_policy_reject_on_fail = {'yes' if self.reject_on_fail else 'no'}",
                f"auth_policy_server_timeout_msecs = {self.policy_timeout_ms}",
                f"auth_policy_server_api_header = {self.api_header}" if self.api_header else "",
            ])
        self.conf.write_text(f"""\
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.log_path}
instance_name = mailwarden-test-{self.port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
auth_verbose = yes
first_valid_uid = 100
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={home}/%u
}}
service anvil {{
  chroot =
  # Dovecot's own per-address penalty (2s doubling to 15s after failures) would stack
  # on mailwarden's delays and slow the tests: mode 0 turns it off (Dovecot's way).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{policy}
""")

    def argv(self) -> list[str]:
        return [DOVECOT, "-F", "-c", str(self.conf)]

    def start(self) -> DovecotInstance:
        self.write_config()
        super().start()
        return self

    def ready_probe(self) -> Callable[[], bool]:
        def probe() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    return s.recv(64).startswith(b"* OK")
            except OSError:
                return False

        return probe

    def imap_login(self, user: str, password: str, *, source: str = "127.0.0.1",
                   timeout_s: float = 30.0) -> tuple[bool, str]:
        """LOGIN over IMAP from `source`: (True, reply) or (False, Dovecot's reason)."""
        imap = _SourceIMAP("127.0.0.1", self.port, source, timeout_s)
        try:
            try:
                typ, data = imap.login(user, password)
            except imaplib.IMAP4.error as e:
                return False, str(e)
            ok = typ == "OK"
            if ok:
                imap.select("INBOX")  # the mailbox is really usable
            return ok, b" ".join(d for d in data if isinstance(d, bytes)).decode(
                "utf-8", "replace")
        finally:
            try:
                imap.logout()
            except (imaplib.IMAP4.error, OSError):
                imap.shutdown()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
