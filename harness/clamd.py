"""A private clamd with a tiny, locally generated signature database.

No freshclam and no internet: the database is mailwarden's policy signatures
(conf/clamav/mailwarden-policy.ndb: executables by file type, `MailWarden.Executable.*`,
the same file production installs) and two MD5 hash signatures made at start with
`sigtool --md5` (clamd refuses to start with an empty DatabaseDirectory: "cli_loaddbdir: No
supported database files found"; one .hdb is enough, no daily/main/bytecode or .ign2):

* `Eicar-Test-Signature`: the EICAR test file, written at runtime from parts so the repository
  never contains the raw string;
* `ClamAV-Test-File`: /usr/share/clamav-testfiles/clam.exe (Debian package clamav-testfiles).
  clamd unpacks containers before hashing, so clam.zip, clam.7z, clam.tar.gz, clam.mail ...
  from that package match too. (clam.exe is a PE, so the policy signature matches it
  as well; which name clamd reports first is clamd's choice.)

`AlertEncryptedArchive` and `AlertEncryptedDoc` are on, as docs/milter.md tells production
to set them (encrypted archives -> `Heuristics.Encrypted.*`).

clamd reports signatures from a database that is not signed by Cisco with the suffix
`.UNOFFICIAL` ("Eicar-Test-Signature.UNOFFICIAL"); see EICAR_SIGNATURE.

Everything lives in `workdir`: socket, database, temporary files, log, pid file. The
system's /etc/clamav, /run/clamav and /var/lib/clamav are never touched. clamd.conf has no
`User` line, so clamd keeps the uid that started it (root in a fresh container, or a CI
user): no clamav user, group or directory permissions are needed.

Limits are set ABOVE the caller's `stream_max_bytes` (MaxFileSize, MaxScanSize), and
`AlertExceedsMax yes` turns anything clamd would skip into a "Heuristics.Limits.Exceeded"
detection, so a limit set too low shows up in tests instead of as a silent "OK".

    with ClamdInstance(tmp_path) as clamd:
        scan_stream(data, address=clamd.address, timeout_s=10)
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

from harness import procs
from mailwarden.clients.clamd import UNIX_PATH_MAX, ping

CLAMD = "clamd"
SIGTOOL = "sigtool"
TESTFILES = Path("/usr/share/clamav-testfiles")

EICAR_SIGNATURE = "Eicar-Test-Signature.UNOFFICIAL"
CLAM_EXE_SIGNATURE = "ClamAV-Test-File.UNOFFICIAL"
POLICY_PE_SIGNATURE = "MailWarden.Executable.PE.UNOFFICIAL"
POLICY_DATABASE = Path(__file__).resolve().parents[1] / "conf" / "clamav" / \
    "mailwarden-policy.ndb"

MiB = 1024 * 1024
# The mail cap is 30 MB decoded, about 42 MB raw (base64 + headers): 64 MiB leaves room.
DEFAULT_STREAM_MAX_BYTES = 64 * MiB
# clamd 1.4 defaults, kept as floors so a small test instance still scans like a real one.
_MAX_FILE_SIZE_FLOOR = 100 * MiB
_MAX_SCAN_SIZE_FLOOR = 400 * MiB


def eicar_bytes() -> bytes:
    """The 68-byte EICAR test file, assembled here so no file in the repo holds it whole."""
    parts = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-", "TEST-FILE!$H+H*")
    data = "".join(parts).encode("ascii")
    return data


class ClamdInstance:
    """A clamd on a private unix socket (and 127.0.0.1:<free port> when `inet=True`)."""

    def __init__(self, workdir: Path, *, stream_max_bytes: int = DEFAULT_STREAM_MAX_BYTES,
                 disable_cache: bool = True, inet: bool = False, max_threads: int = 2,
                 start_timeout_s: float = 60.0, policy_signatures: bool = True) -> None:
        self.workdir = Path(workdir).resolve()
        self.stream_max_bytes = stream_max_bytes
        self.disable_cache = disable_cache
        self.max_threads = max_threads
        self.policy_signatures = policy_signatures
        self.start_timeout_s = start_timeout_s
        self.socket_path = self.workdir / "clamd.sock"
        if len(str(self.socket_path).encode()) > UNIX_PATH_MAX:
            raise ValueError(f"{self.socket_path}: too long for a unix socket, use a shorter "
                             "workdir")
        self.conf_path = self.workdir / "clamd.conf"
        self.log_path = self.workdir / "clamd.log"
        self.db_dir = self.workdir / "db"
        self.tmp_dir = self.workdir / "tmp"
        self.samples_dir = self.workdir / "samples"
        self.port = procs.free_port() if inet else None
        self.startup_s = 0.0  # how long start() waited for the first PONG
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def inet_address(self) -> str:
        if self.port is None:
            raise RuntimeError("this ClamdInstance was created without inet=True")
        return f"inet:127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("clamd is not running")
        return self._proc.pid

    @property
    def eicar_path(self) -> Path:
        return self.samples_dir / "eicar.com"

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> ClamdInstance:
        if self._proc is not None:
            raise RuntimeError("clamd already started")
        for d in (self.workdir, self.db_dir, self.tmp_dir, self.samples_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_database()
        self.conf_path.write_text(self._config_text())
        self.socket_path.unlink(missing_ok=True)  # a stale socket from an earlier run here

        begin = time.monotonic()
        proc = procs.spawn([CLAMD, f"--config-file={self.conf_path}"], self.log_path,
                           cwd=self.workdir)
        self._proc = proc
        try:
            procs.wait_until(lambda: ping(self.address, timeout_s=1.0), self.start_timeout_s,
                             f"clamd ({self.conf_path})", alive=lambda: proc.poll() is None,
                             log=self.log_path)
            if self.port is not None:
                procs.wait_until(lambda: ping(self.inet_address, timeout_s=1.0),
                                 self.start_timeout_s, f"clamd inet ({self.conf_path})",
                                 alive=lambda: proc.poll() is None, log=self.log_path)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - begin
        return self

    def stop(self) -> None:
        """SIGTERM by PID (then SIGKILL); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            procs.stop(proc)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ClamdInstance:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- files -----------------------------------------------------------------------------

    def _write_database(self) -> None:
        self.eicar_path.write_bytes(eicar_bytes())
        clam_exe = TESTFILES / "clam.exe"
        if not clam_exe.is_file():
            raise FileNotFoundError(f"{clam_exe} missing: apt-get install clamav-testfiles")
        lines = [
            _hash_signature(self.eicar_path, EICAR_SIGNATURE.removesuffix(".UNOFFICIAL")),
            _hash_signature(clam_exe, CLAM_EXE_SIGNATURE.removesuffix(".UNOFFICIAL")),
        ]
        (self.db_dir / "test.hdb").write_text("".join(f"{line}\n" for line in lines))
        if self.policy_signatures:
            (self.db_dir / POLICY_DATABASE.name).write_bytes(POLICY_DATABASE.read_bytes())

    def _config_text(self) -> str:
        n = self.stream_max_bytes
        settings: list[tuple[str, object]] = [
            ("Foreground", "yes"),
            ("LocalSocket", self.socket_path),
            ("LocalSocketMode", "600"),
            ("FixStaleSocket", "yes"),
            ("DatabaseDirectory", self.db_dir),
            ("TemporaryDirectory", self.tmp_dir),
            # The same file spawn() captures stdout/stderr in: both append, one place to read.
            ("LogFile", self.log_path),
            ("LogTime", "yes"),
            ("PidFile", self.workdir / "clamd.pid"),
            ("MaxThreads", self.max_threads),
            ("MaxQueue", max(4 * self.max_threads, 8)),
            ("Bytecode", "no"),
            ("StreamMaxLength", n),
            # MaxFileSize covers the stream itself; MaxScanSize counts a container AND what
            # it unpacks to (a 42 MB message with a 30 MB attachment is ~72 MB of scanning).
            ("MaxFileSize", max(n, _MAX_FILE_SIZE_FLOOR)),
            ("MaxScanSize", max(4 * n, _MAX_SCAN_SIZE_FLOOR)),
            ("AlertExceedsMax", "yes"),
            ("DisableCache", "yes" if self.disable_cache else "no"),
            ("AlertEncryptedArchive", "yes"),
            ("AlertEncryptedDoc", "yes"),
        ]
        if self.port is not None:
            settings += [("TCPSocket", self.port), ("TCPAddr", "127.0.0.1")]
        return "".join(f"{key} {value}\n" for key, value in settings)


def _hash_signature(path: Path, name: str) -> str:
    """`sigtool --md5 FILE` -> "md5:size:FILE", renamed to "md5:size:NAME"."""
    out = subprocess.run([SIGTOOL, "--md5", str(path)], capture_output=True, check=True,
                         timeout=30, cwd=path.parent).stdout.decode("ascii").strip()
    md5, size, _ = out.split(":", 2)
    if len(md5) != 32 or not size.isdigit():
        raise RuntimeError(f"unexpected sigtool output for {path}: {out!r}")
    return f"{md5}:{size}:{name}"
