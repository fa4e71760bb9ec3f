"""Rules stay pure: no imports of adapters, clients, sockets or Redis."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mailwarden"
FORBIDDEN = ("mailwarden.policyd", "mailwarden.milter", "mailwarden.clients",
             "mailwarden.store", "harness", "redis", "Milter", "milter", "socket",
             "asyncio", "logging", "subprocess", "mailwarden.authpolicy", "aiohttp")


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_rules_import_nothing_with_io() -> None:
    for path in sorted((PKG / "rules").glob("*.py")):
        bad = {m for m in imports(path) if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)}
        assert not bad, f"{path.name} imports {bad}"


def test_only_store_builds_redis_keys() -> None:
    for path in PKG.rglob("*.py"):
        if path.parent.name == "store":
            continue
        assert '"mw:' not in path.read_text() and "f\"{prefix}:" not in path.read_text(), path


def test_no_top_level_milter_or_mime_module() -> None:
    top = Path(__file__).resolve().parents[2]
    for name in ("milter", "mime"):
        assert not (top / f"{name}.py").exists() and not (top / name).is_dir()
