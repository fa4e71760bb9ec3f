"""failure.on_internal_error: one policy for a bug in either daemon (issue 9).

A failing service is injected into the real policy server (real unix socket) and
into the milter's end-of-message callback (driven by pymilter's test context).
Both answer 451 under "defer" (the default) and let the mail through under
"accept"; both log ONE line at error level with rule=internal.error and the
exception's type, never the exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import Milter
import pytest
from Milter import testctx

from mailwarden.config import load_config
from mailwarden.milter import app
from tests.component.test_policy_server import ALICE, out, policy_server

SECRET = "secret-text-from-the-message"


def boom(*_: Any, **__: Any) -> Any:
    raise ZeroDivisionError(SECRET)


def _records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    """Decision lines, and anything else with a traceback or the exception's text."""
    return [r for r in caplog.records if r.name == logger and (
        "rule=" in r.getMessage() or r.exc_info or SECRET in r.getMessage())]


@pytest.mark.parametrize("policy,expected,action", [
    pytest.param("defer", "451 4.7.1 ", "defer", id="defer"),
    pytest.param("accept", "DUNNO", "accept-unchecked", id="accept"),
])
@pytest.mark.parametrize("state", ["RCPT", "END-OF-MESSAGE"])
def test_policyd_internal_error_policy(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       policy: str, expected: str, action: str,
                                       state: str) -> None:
    async def go() -> tuple[str, str]:
        async with policy_server(tmp_path, f"unix://{tmp_path}/no-redis.sock", **{
                "failure.on_internal_error": policy}) as (server, connect):
            server.service.handle = boom  # type: ignore[method-assign]
            c = await connect()
            first = await c.ask(out(ALICE, "x@gmail.com", protocol_state=state))
            # the daemon keeps serving on the same connection
            return first, await c.ask(out(ALICE, "y@gmail.com", protocol_state=state))

    with caplog.at_level(logging.INFO, logger="mailwarden.policyd"):
        first, second = asyncio.run(go())
    assert first.startswith(expected) and second.startswith(expected)
    lines = _records(caplog, "mailwarden.policyd")
    assert len(lines) == 2  # one line per request
    for r in lines:
        text = r.getMessage()
        assert r.levelno == logging.ERROR and r.exc_info is None
        assert f": {action}: {state} from " in text
        assert "rule=internal.error" in text and "error=ZeroDivisionError" in text
        assert "where=" in text and SECRET not in text


def test_policyd_internal_error_default_is_defer() -> None:
    assert load_config(None, {})["failure.on_internal_error"] == "defer"


@pytest.fixture
def milter_ctx(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A WardenMilter with a Runtime built from config, on pymilter's test context
    (macros, setreply), at end of message with inspection failing with a bug."""
    def make(policy: str) -> tuple[app.WardenMilter, testctx.TestCtx]:
        cfg = load_config(None, {"failure.on_internal_error": policy,
                                 "milter.release_on_refusal": False,
                                 "antivirus.enabled": False, "auth.enabled": False})
        monkeypatch.setattr(app, "RUNTIME", app.Runtime(cfg))
        monkeypatch.setattr(app, "evaluate", boom)
        ctx = testctx.TestCtx()
        ctx._stage = -1  # every macro visible
        ctx._setsymval("i", "4Q8Zl02Bv1z")
        m = app.WardenMilter()
        m._setctx(ctx)
        m.connect("pc1.example", socket.AF_INET, ("10.20.30.40", 40000))
        m.envfrom(f"<{ALICE}>")
        m.envrcpt("<x@gmail.com>")
        m.body(b"Subject: " + SECRET.encode() + b"\r\n\r\nNoi dung.\r\n")
        return m, ctx

    return make


@pytest.mark.parametrize("policy,rc,action", [
    pytest.param("defer", Milter.TEMPFAIL, "defer", id="defer"),
    pytest.param("accept", Milter.CONTINUE, "accept-unchecked", id="accept"),
])
def test_milter_internal_error_policy(milter_ctx: Any, caplog: pytest.LogCaptureFixture,
                                      policy: str, rc: int, action: str) -> None:
    m, ctx = milter_ctx(policy)
    with caplog.at_level(logging.INFO, logger="mailwarden.milter"):
        assert m.eom() == rc
    if policy == "defer":
        assert ctx._reply[:2] == ("451", "4.7.1")
    else:
        assert ctx._reply is None
    [r] = _records(caplog, "mailwarden.milter")
    text = r.getMessage()
    assert r.levelno == logging.ERROR and r.exc_info is None
    assert text.startswith(f"4Q8Zl02Bv1z: {action}: EOM from pc1.example[10.20.30.40]: ")
    assert "rule=internal.error" in text and "error=ZeroDivisionError" in text
    assert SECRET not in text
