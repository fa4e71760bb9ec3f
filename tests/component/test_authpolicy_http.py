"""The auth policy daemon's HTTP edges, on a real daemon and Redis: the shared secret,
bounded bodies, a stalled body, malformed requests, unknown commands, Redis down (an
HTTP error, so Dovecot applies auth_policy_reject_on_fail) and a unix socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemons import Daemon, write_config
from harness.procs import free_port
from harness.redis import RedisInstance

KEY = "k-123"


def http(daemon: Daemon, body: bytes, *, path: str = "/?command=allow", key: str = KEY,
         length: int | None = None, stall_s: float = 0.0) -> tuple[int, dict[str, Any]]:
    """One POST over a raw socket (so a body can be announced and not sent)."""
    if daemon.listen.family == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.listen.path)
    else:
        s = socket.create_connection((daemon.listen.host, daemon.listen.port))
    with s:
        s.settimeout(10)
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-API-Key: {key}\r\nContent-Length: {len(body) if length is None else length}"
                "\r\nConnection: close\r\n\r\n").encode()
        s.sendall(head + body)
        if stall_s:
            time.sleep(stall_s)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head_b, _, payload = data.partition(b"\r\n\r\n")
        want = next((int(h.split(b":", 1)[1]) for h in head_b.split(b"\r\n")
                     if h.lower().startswith(b"content-length:")), 0)
        while len(payload) < want and (chunk := s.recv(65536)):
            payload += chunk
    status = int(data.split(b" ", 2)[1])
    return status, (json.loads(payload) if payload.startswith(b"{") else {})


@pytest.fixture
def daemon_factory(tmp_path: Path, redis_server: RedisInstance,
                   ) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(listen: str | None = None) -> Daemon:
        listen = listen or f"inet:127.0.0.1:{free_port()}"
        config = write_config(tmp_path / "mw.toml", {
            "authpolicy.listen": listen, "authpolicy.api_key": KEY,
            "authpolicy.request_timeout": 0.5, "authpolicy.max_request_bytes": 1024,
            "redis.url": redis_server.url, "redis.timeout": 0.2})
        d = Daemon("authpolicy", config, listen, tmp_path / "authpolicy.log").start()
        started.append(d)
        return d

    try:
        yield make
    finally:
        for d in started:
            d.stop()


LOGIN = json.dumps({"login": "alice@ninhbinh.gov.vn", "remote": "203.0.113.5",
                    "pwhash": "abc", "protocol": "imap", "session_id": "s1"}).encode()


def test_http_edges(daemon_factory: Callable[..., Daemon],
                    redis_server: RedisInstance) -> None:
    d = daemon_factory()
    assert http(d, LOGIN) == (200, {"status": 0, "msg": ""})
    assert http(d, LOGIN, key="wrong")[0] == 401
    assert http(d, b"{" + b" " * 2000 + b"}")[0] == 413
    assert http(d, b"[1, 2]")[0] == 400
    assert http(d, b"{not json")[0] == 400
    assert http(d, b'{"login": 5}')[0] == 400
    assert http(d, LOGIN, path="/?command=drop")[0] == 404
    t0 = time.monotonic()
    status, _ = http(d, b"{", length=200)  # announces 200 bytes, sends 1, waits
    assert status == 408 and time.monotonic() - t0 < 5
    log = d.log_text()
    assert "request without the right API key refused" in log
    assert "request body not sent within request_timeout" in log
    # Redis down: an HTTP error, never a guessed answer; back up, answers again.
    redis_server.stop()
    status, body = http(d, LOGIN)
    assert status == 503 and body["error"] == "backend"
    assert "cannot answer: Dovecot applies auth_policy_reject_on_fail" in d.log_text()
    redis_server.start()
    deadline = time.monotonic() + 10
    while http(d, LOGIN)[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_unix_socket(daemon_factory: Callable[..., Daemon], tmp_path: Path) -> None:
    d = daemon_factory(f"unix:{tmp_path}/ap.sock")
    assert http(d, LOGIN) == (200, {"status": 0, "msg": ""})
    assert (tmp_path / "ap.sock").stat().st_mode & 0o777 == 0o660
    d.stop()
    assert not (tmp_path / "ap.sock").exists()
