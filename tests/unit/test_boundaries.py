"""AST guards for the package's boundaries (DESIGN.md): each fact has one home.

- rules/ import no I/O (test_layering.py);
- Redis key and channel strings are built only in store/keys.py;
- log lines are shaped only in logs.py: every log call elsewhere passes a constant
  format string (no f-strings, .format or %-operator), and decision/statistics line
  shapes appear in no other module;
- config values are read only in config.py and settings.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mailwarden"
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PKG.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def rel(path: Path) -> str:
    return str(path.relative_to(PKG.parent))


def test_redis_keys_only_in_store_keys() -> None:
    bad = []
    for path, tree in modules():
        if rel(path) == "mailwarden/store/keys.py":
            continue
        for node in ast.walk(tree):
            # f"{prefix}:..." or a literal "mw:..." / ":lock" key suffix
            if isinstance(node, ast.JoinedStr):
                parts = [v for v in node.values if isinstance(v, ast.Constant)]
                if any(isinstance(p.value, str) and p.value.startswith(":") for p in parts) \
                        and any(isinstance(v, ast.FormattedValue) and "prefix" in ast.unparse(v)
                                for v in node.values):
                    bad.append(f"{rel(path)}:{node.lineno}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.startswith("mw:"):
                bad.append(f"{rel(path)}:{node.lineno}")
    assert not bad, f"Redis keys built outside store/keys.py: {bad}"


def _log_calls(tree: ast.Module) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in LOG_METHODS and isinstance(node.func.value, ast.Name) and \
                node.func.value.id in ("log", "logger", "logging"):
            yield node


def test_log_calls_use_constant_formats() -> None:
    bad = []
    for path, tree in modules():
        if rel(path) == "mailwarden/logs.py":
            continue
        for call in _log_calls(tree):
            args = call.args[1:] if call.func.attr == "log" else call.args  # type: ignore[attr-defined]
            if not args or not (isinstance(args[0], ast.Constant)
                                and isinstance(args[0].value, str)):
                bad.append(f"{rel(path)}:{call.lineno}: {ast.unparse(args[0]) if args else ''}")
    assert not bad, f"log calls must pass a constant format (shapes live in logs.py): {bad}"


def test_decision_and_statistics_shapes_only_in_logs() -> None:
    shapes = (": reject: ", ": defer: ", ": accept: ", "statistics: ", "rule=", "reply=")
    bad = []
    for path, tree in modules():
        if rel(path) == "mailwarden/logs.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    any(s in node.value for s in shapes):
                bad.append(f"{rel(path)}:{node.lineno}: {node.value[:40]!r}")
    assert not bad, f"log line shapes outside logs.py: {bad}"


def test_config_values_read_only_in_settings() -> None:
    """Settings are built once (settings.py) from the schema (config.py): no other module
    reads a config key, so no other module can hold its own default."""
    bad = []
    for path, tree in modules():
        if rel(path) in ("mailwarden/config.py", "mailwarden/settings.py"):
            continue
        for node in ast.walk(tree):
            target = None
            if isinstance(node, ast.Subscript):
                target = node.value
            elif isinstance(node, ast.Attribute) and node.attr in ("values", "local_domains",
                                                                   "profile", "origins"):
                target = node.value
            if target is not None and ast.unparse(target) in ("cfg", "self.cfg", "config",
                                                              "self.rt.cfg", "cfg.values"):
                bad.append(f"{rel(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, f"config read outside settings.py: {bad}"
