"""Fixtures for the real servers: private instances on loopback, stopped by PID.

A fixture that needs a program (redis-server, postfix, clamd) or root FAILS
with the reason when it is missing: CI installs them (`make test`), and a
silent skip would hide untested code. Tests that use none of these fixtures
(unit tests) run anywhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.clamd import ClamdInstance
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink


def require(*programs: str, root: bool = False) -> None:
    missing = [p for p in programs
               if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if missing:
        pytest.fail(f"missing programs {missing}: run `make test` (it installs them)",
                    pytrace=False)
    if root and os.geteuid() != 0:
        pytest.fail("a private Postfix runs as root: run the integration tests as root",
                    pytrace=False)


@pytest.fixture(scope="session")
def sandbox_root() -> Iterator[Path]:
    """One 0755 directory under /tmp for the session's private servers: Postfix's
    unprivileged daemons must traverse it (pytest's own tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="mailwarden-sandbox-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def postfix_dir(sandbox_root: Path) -> Iterator[Path]:
    """A fresh 0755 directory per test, under `sandbox_root`."""
    d = Path(tempfile.mkdtemp(prefix="t-", dir=sandbox_root))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisInstance]:
    require("redis-server")
    with RedisInstance(tmp_path / "redis") as r:
        yield r


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    """A fresh sink (own mail dir, own port) per test."""
    with Sink(tmp_path / "sink") as s:
        yield s


@pytest.fixture
def postfix_factory(postfix_dir: Path, sink: Sink) -> Iterator[Callable[..., PostfixInstance]]:
    """make(name="postfix", **PostfixInstance kwargs) -> a started private Postfix relaying
    to this test's sink; every instance made is stopped (by master PID) at teardown."""
    require("postfix", "postqueue", "postconf", root=True)
    started: list[PostfixInstance] = []

    def make(name: str = "postfix", **kwargs: Any) -> PostfixInstance:
        kwargs.setdefault("relay_port", sink.port)
        pf = PostfixInstance(postfix_dir / name, **kwargs).start()
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
    require("clamd", "sigtool")
    with ClamdInstance(tmp_path_factory.mktemp("clamd"), inet=True) as instance:
        yield instance
