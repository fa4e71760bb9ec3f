"""Helpers for tests against a private, real clamd (the `clamd` fixture is in conftest)."""

from __future__ import annotations

import shutil

import pytest


def require_clamd() -> None:
    missing = [p for p in ("clamd", "sigtool") if shutil.which(p) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: make deps (Debian clamav-daemon)")
