"""Fixtures for tests against a private, real clamd (import them into the test module).

    from tests.integration.clamd_fixtures import clamd  # noqa: F401
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from mailwarden.sandbox.clamd import ClamdInstance


def require_clamd() -> None:
    missing = [p for p in ("clamd", "sigtool") if shutil.which(p) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: make deps (Debian clamav-daemon)")


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdInstance]:
    """One private clamd for the session: unix socket + 127.0.0.1, 64 MiB StreamMaxLength,
    DisableCache yes. Stopped by PID at the end."""
    require_clamd()
    with ClamdInstance(tmp_path_factory.mktemp("clamd"), inet=True) as instance:
        yield instance
