"""Run mailwarden's own daemons as child processes, the way systemd would."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import procs
from mailwarden.addresses import parse_listen
from mailwarden.config import SCHEMA_BY_NAME, render_value


def write_config(path: Path, values: dict[str, Any]) -> Path:
    """A mailwarden.toml from {"section.key": value}, rendered through the schema.

    The lock snapshot defaults to a file beside the config (the shipped default is under
    /var/lib/mailwarden, which tests must neither need nor share)."""
    if any(k.startswith("policyd.") for k in values):
        values = {"policyd.lock_snapshot": str(path.with_suffix(".locks.json")), **values}
    sections: dict[str, list[str]] = {}
    for name, value in values.items():
        section, key = name.split(".", 1)
        rendered = render_value(SCHEMA_BY_NAME[name], value)
        sections.setdefault(section, []).append(f"{key} = {rendered}")
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n\n"
                            for s, lines in sections.items()))
    return path


class Daemon(procs.Child):
    """`mailwarden --config FILE policyd|milter` in the foreground, ready when it listens."""

    start_timeout_s = 30.0

    def __init__(self, kind: str, config: Path, listen: str, log: Path) -> None:
        super().__init__(log)
        self.kind, self.config = kind, config
        self.name = f"mailwarden {kind}"
        self.listen = parse_listen(listen)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "mailwarden", "--config", str(self.config), self.kind]

    def ready_probe(self) -> Callable[[], bool]:
        if self.listen.family == "unix":
            return procs.unix_ready(self.listen.path)
        return procs.tcp_ready(self.listen.host, self.listen.port)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
