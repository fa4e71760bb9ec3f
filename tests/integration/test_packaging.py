"""What an operator touches first: the console script, the shipped config, --daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import procs
from harness.daemons import write_config
from harness.redis import RedisInstance

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mailwarden"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["policyd", "milter", "check", "config", "locks", "lock",
                                     "unlock", "status", "audit", "authpolicy", "inactive"])
def test_every_subcommand_has_help(command: str) -> None:
    out = run(command, "--help")
    assert out.returncode == 0 and "usage: mailwarden" in out.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "mailwarden"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("mailwarden ")


def test_config_check_on_the_shipped_config() -> None:
    out = run("config", "check", "--config", str(ROOT / "conf" / "mailwarden.toml"))
    assert out.returncode == 0, out.stderr
    assert "ratelimit.limit = 250    # profile ninhbinh-162-2025" in out.stdout


def test_bad_config_is_refused_at_start_with_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[policyd]\nlisten = "127.0.0.1:10031"\n')
    out = run("--config", str(bad), "policyd")
    assert out.returncode == 2
    assert f"{bad}: policyd.listen:" in out.stderr and "inet:HOST:PORT" in out.stderr


def test_daemon_mode_detaches_with_pidfile_and_stops_on_sigterm(tmp_path: Path) -> None:
    d = tmp_path.resolve()
    with RedisInstance(d / "redis") as redis:
        config = write_config(d / "mw.toml", {"policyd.listen": f"unix:{d}/p.sock",
                                              "redis.url": redis.url})
        out = run("--config", str(config), "policyd", "--daemon", "--pidfile",
                  str(d / "p.pid"), "--log-file", str(d / "p.log"))
        assert out.returncode == 0, out.stderr  # the foreground parent returned
        procs.wait_until(procs.unix_ready(d / "p.sock"), 20, "daemonized policyd",
                         log=d / "p.log")
        pid = int((d / "p.pid").read_text())
        status = Path(f"/proc/{pid}/status").read_text()
        ppid = int(status.split("PPid:")[1].split()[0])
        assert ppid != os.getpid()  # detached: not a child of the test, nor of the CLI
        assert "Umask:\t0027" in status
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists()
        assert not (d / "p.pid").exists() and not (d / "p.sock").exists()
        assert "listening on" in (d / "p.log").read_text()


def test_daemon_mode_without_a_log_destination_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "mw.toml", {"policyd.listen": f"unix:{tmp_path}/p.sock"})
    out = run("--config", str(config), "policyd", "--daemon", "--pidfile",
              str(tmp_path / "p.pid"))
    assert out.returncode == 2 and "--log-file" in out.stderr


def test_systemd_units_are_complete() -> None:
    for unit in ("mailwarden-policyd.service", "mailwarden-milter.service",
                 "mailwarden-authpolicy.service"):
        text = (ROOT / "systemd" / unit).read_text()
        for directive in ("Type=notify", "User=mailwarden", "NoNewPrivileges=yes",
                          "ProtectSystem=strict", "Restart=on-failure", "RuntimeDirectory="):
            assert directive in text, (unit, directive)
    if shutil.which("systemd-analyze"):
        out = subprocess.run(["systemd-analyze", "verify",
                              *map(str, (ROOT / "systemd").glob("*.service"))],
                             capture_output=True, text=True, timeout=60)
        # On a machine where mailwarden is not installed in /usr/local/bin, that is the
        # only complaint allowed; any other line is a real problem in a unit.
        problems = [line for line in out.stderr.splitlines() if line.strip()
                    and "Command /usr/local/bin/mailwarden is not executable" not in line]
        assert problems == [], out.stderr
