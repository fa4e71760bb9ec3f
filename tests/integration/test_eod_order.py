"""Which runs first at end of data: the policy check or the milter? (issue #2)

Postfix 3.7 asks the policy service at END-OF-MESSAGE before the cleanup
server runs the milters' end-of-message step. So a message the milter refuses
was already committed to the rate window; the milter uncounts it by queue id.
This test shows both halves with real programs: without the release the
refused message stays counted, with it the count goes back to zero.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.smtpclient import send
from tests.integration.test_milter_postfix import message, pe32

pytestmark = pytest.mark.integration

ALICE = "alice@ninhbinh.gov.vn"


@pytest.mark.parametrize("release", [False, True])
def test_milter_refusal_after_policy_commit(postfix_dir: Path, clamd: ClamdInstance,
                                            redis_server: RedisInstance,
                                            postfix_factory: Callable[..., PostfixInstance],
                                            release: bool) -> None:
    config = write_config(postfix_dir / "mailwarden.toml", {
        "policyd.listen": f"unix:{postfix_dir}/p.sock", "policyd.socket_mode": "0666",
        "milter.listen": f"unix:{postfix_dir}/m.sock", "milter.socket_mode": "0666",
        "milter.release_on_refusal": release, "antivirus.clamd": clamd.address,
        "redis.url": redis_server.url, "logging.level": "info", "logging.log_accepts": True})
    policyd = Daemon("policyd", config, f"unix:{postfix_dir}/p.sock",
                     postfix_dir / "policyd.log").start()
    milter = Daemon("milter", config, f"unix:{postfix_dir}/m.sock",
                    postfix_dir / "milter.log").start()
    try:
        pf = postfix_factory(policy=f"unix:{postfix_dir}/p.sock",
                             milter=f"unix:{postfix_dir}/m.sock")
        rcpts = ["x@gmail.com", "y@gmail.com", "z@yahoo.com"]
        t = send(pf.smtpd_port, ALICE, rcpts,
                 message(("hoa-don.pdf", "application/pdf", pe32())), login=ALICE)
        assert t.accepted == rcpts and t.data is not None and t.data[0] == 550
        status = subprocess.run([sys.executable, "-m", "mailwarden", "--config", str(config),
                                 "status", ALICE, "--json"], capture_output=True, text=True,
                                check=True)
        counted = json.loads(status.stdout)["count"]
        # The policy daemon saw END-OF-MESSAGE with the queue id, before the milter's verdict:
        qid = pf.wait_for_log(r"([0-9A-F]{8,}): milter-reject: END-OF-MESSAGE").group(1)
        assert re.search(rf"{qid}: reject: EOM .*rule=attachment\.executable",
                         milter.log_text())
        if release:
            assert counted == 0
            assert f"{qid}: uncounted 3 recipients" in milter.log_text()
        else:
            assert counted == 3
    finally:
        milter.stop()
        policyd.stop()
