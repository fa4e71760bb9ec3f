"""Run mailwarden's own daemons as child processes, the way systemd would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mailwarden.addresses import parse_listen
from mailwarden.config import SCHEMA_BY_NAME, render_value
from mailwarden.sandbox import procs


def write_config(path: Path, values: dict[str, Any]) -> Path:
    """A mailwarden.toml from {"section.key": value}, rendered through the schema."""
    sections: dict[str, list[str]] = {}
    for name, value in values.items():
        section, key = name.split(".", 1)
        rendered = render_value(SCHEMA_BY_NAME[name], value)
        sections.setdefault(section, []).append(f"{key} = {rendered}")
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n\n"
                            for s, lines in sections.items()))
    return path


class Daemon:
    """`mailwarden --config FILE policyd|milter` in the foreground, ready when it listens."""

    def __init__(self, kind: str, config: Path, listen: str, log: Path) -> None:
        self.kind, self.config, self.log = kind, config, log
        self.listen = parse_listen(listen)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Daemon:
        self.proc = procs.spawn([sys.executable, "-m", "mailwarden", "--config",
                                 str(self.config), self.kind], self.log)
        probe = procs.unix_ready(self.listen.path) if self.listen.family == "unix" else \
            procs.tcp_ready(self.listen.host, self.listen.port)
        procs.wait_until(probe, 30, f"mailwarden {self.kind}",
                         alive=lambda: self.proc is not None and self.proc.poll() is None,
                         log=self.log)
        return self

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return None
        procs.stop(self.proc)
        code, self.proc = self.proc.returncode, None
        return code

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
