"""The fault suite's table: one row per fault, printed at the end of the run (and written
to $MAILWARDEN_FAULT_TABLE when set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROWS: list[dict[str, Any]] = []

COLUMNS = ("fault", "sent", "accepted", "refused", "deferred", "delivered", "queued",
           "eicar_delivered", "locked_accepted", "lock_after", "seconds")


def table() -> str:
    rows = [COLUMNS, *[tuple(str(r.get(c, "")) for c in COLUMNS) for r in ROWS]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(table())
    if path := os.environ.get("MAILWARDEN_FAULT_TABLE"):
        Path(path).write_text(table() + "\n")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The fault suite (~3 min) is not part of the default run: it runs when tests/faults
    is named (`make test-faults`, and `make test` runs it after the rest) or a -m
    expression is given."""
    if config.getoption("markexpr") or any("faults" in str(a) for a in config.args):
        return
    keep = [it for it in items if not it.get_closest_marker("faults")]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[it for it in items if it not in keep])
        items[:] = keep
