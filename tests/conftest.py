"""Fixtures for the real servers: private instances on loopback, stopped by PID."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwarden.sandbox.clamd import ClamdInstance
from mailwarden.sandbox.postfix import PostfixInstance
from mailwarden.sandbox.redis import RedisInstance
from mailwarden.sandbox.sink import Sink

REQUIRED = ("redis-server", "postfix", "clamd", "sigtool")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [b for b in REQUIRED if shutil.which(b) is None
               and not Path(f"/usr/sbin/{b}").exists()]
    if missing:  # fail loudly: CI installs these; a silent skip would hide untested code
        raise pytest.UsageError(f"missing programs {missing}: run `make test` (installs them)")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisInstance]:
    with RedisInstance(tmp_path / "redis") as r:
        yield r


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path / "sink").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def postfix_dir() -> Iterator[Path]:
    """A directory Postfix's unprivileged daemons can traverse (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="mailwarden-postfix-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def postfix_factory(postfix_dir: Path, sink: Sink) -> Iterator[Callable[..., PostfixInstance]]:
    started: list[PostfixInstance] = []

    def make(name: str = "postfix", **kwargs: Any) -> PostfixInstance:
        pf = PostfixInstance(postfix_dir / name, relay_port=sink.port, **kwargs).start()
        started.append(pf)
        return pf

    try:
        yield make
    finally:
        for pf in reversed(started):
            pf.stop()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdInstance]:
    """One private clamd for the session: unix socket + 127.0.0.1, 64 MiB StreamMaxLength,
    DisableCache yes, test signatures only (EICAR, clam.exe). Stopped by PID at the end."""
    with ClamdInstance(tmp_path_factory.mktemp("clamd"), inet=True) as instance:
        yield instance
