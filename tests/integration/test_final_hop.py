"""The final-hop layout of conf/postfix/final-hop/ with a real Postfix (issue #4 item 2).

The files shipped in conf/postfix/final-hop/ are loaded as they are (only the
hop's port, the milter address and, for one assertion, smtpd peer debugging
are filled in), so the layout tested is the layout documented. Checked here:
external mail -- a virtual alias to a private domain included -- passes the
second smtpd once after rewriting, with Postfix's ORCPT naming the local
mailbox; mail for our own domains (a local -> local alias) does not take the
hop; nothing loops. The milter assertion (the forward refused at the hop, the
sender bounced) comes with the milter wiring of the forwarding rule.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import procs
from harness.postfix import PostfixInstance
from harness.sink import Sink
from harness.smtpclient import send

pytestmark = pytest.mark.integration

LAYOUT = Path(__file__).resolve().parents[2] / "conf" / "postfix" / "final-hop"
HOP_SERVICE = "127.0.0.1:10026"


def layout(hop_port: int, milter: str = "", debug_hop: bool = False) -> tuple[dict[str, str],
                                                                                 str]:
    """main.cf settings and master.cf text of the shipped layout, for this sandbox."""
    main: dict[str, str] = {}
    for line in (LAYOUT / "main.cf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, line
            main[name.strip()] = value.strip()
    main["mailwarden_final_hop"] = f"[127.0.0.1]:{hop_port}"
    main["mailwarden_milter"] = milter
    master = (LAYOUT / "master.cf").read_text()
    assert master.count(HOP_SERVICE) == 1
    master = master.replace(HOP_SERVICE, f"127.0.0.1:{hop_port}")
    if debug_hop:  # log the hop's SMTP dialogue, to see the ORCPT it receives
        master = master.replace("  -o syslog_name=postfix/finalhop\n",
                                "  -o syslog_name=postfix/finalhop\n"
                                "  -o debug_peer_list=127.0.0.1\n")
    return main, master


def message(to: str) -> bytes:
    return (f"From: alice@ninhbinh.gov.vn\r\nTo: {to}\r\nSubject: Giay moi\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\n\r\nNoi dung.\r\n").encode()


def queue_id(reply: str) -> str:
    m = re.search(r"queued as ([0-9A-F]+)", reply)
    assert m, reply
    return m.group(1)


@dataclass
class Hop:
    pf: PostfixInstance
    port: int


@pytest.fixture
def hop(postfix_dir: Path, postfix_factory: Callable[..., PostfixInstance]) -> Hop:
    hop_port = procs.free_port()
    main, master = layout(hop_port, debug_hop=True)
    (postfix_dir / "virtual").write_text(
        "user@ninhbinh.gov.vn   someone@gmail.com\n"
        "bob@ninhbinh.gov.vn    carol@ninhbinh.gov.vn\n"
        "lan@ninhbinh.gov.vn    lan@hanoi.gov.vn\n")
    main["virtual_alias_maps"] = f"texthash:{postfix_dir}/virtual"
    pf = postfix_factory(main_cf_extra=main, master_cf_extra=master)
    procs.wait_until(procs.tcp_ready("127.0.0.1", hop_port), 20, "final-hop smtpd",
                     log=pf.maillog)
    return Hop(pf, hop_port)


def test_shipped_layout_is_valid_postfix(hop: Hop) -> None:
    etc = str(hop.pf.config_dir)
    out = subprocess.run(["postconf", "-c", etc, "-nx"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
    assert f"default_transport = finalhop:[127.0.0.1]:{hop.port}" in out.stdout
    # The hop hands mail to the next hop external mail had before (relayhost: the sink).
    svc = subprocess.run(["postconf", "-c", etc, "-Px",
                          f"127.0.0.1:{hop.port}/inet/content_filter"],
                         capture_output=True, text=True, timeout=30)
    assert svc.stdout.strip().endswith(
        f"content_filter = smtp:[127.0.0.1]:{hop.pf.relay_port}"), svc.stdout + svc.stderr


def test_virtual_alias_to_private_domain_passes_the_hop_with_orcpt(hop: Hop,
                                                                   sink: Sink) -> None:
    pf = hop.pf
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["user@ninhbinh.gov.vn"],
             message("user@ninhbinh.gov.vn"))
    assert t.data is not None and t.data[0] == 250
    first = queue_id(t.data[1])
    [(env, _)] = sink.wait_for(1)
    assert env["rcpt_to"] == ["someone@gmail.com"]
    assert env["mail_from"] == "alice@ninhbinh.gov.vn"
    # First pass: rewritten in cleanup, handed to the hop by the finalhop transport.
    pf.wait_for_log(rf"postfix/finalhop-out/smtp\[\d+\]: {first}: to=<someone@gmail\.com>, "
                    rf"orig_to=<user@ninhbinh\.gov\.vn>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                    rf"{hop.port}, .*status=sent")
    # Second pass: the hop's smtpd got it (XFORWARD keeps the first queue id) with the
    # pre-alias address as ORCPT, and the plain smtp transport delivered it once.
    m = pf.wait_for_log(rf"postfix/finalhop/smtpd\[\d+\]: ([0-9A-F]+): client=.*"
                        rf"orig_queue_id={first}")
    second = m.group(1)
    pf.wait_for_log(r"postfix/finalhop/smtpd\[\d+\]: < .*: RCPT TO:<someone@gmail\.com> "
                    r"ORCPT=rfc822;user@ninhbinh\.gov\.vn")
    pf.wait_for_log(rf"postfix/smtp\[\d+\]: {second}: to=<someone@gmail\.com>, "
                    rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{sink.port}, .*status=sent")
    assert pf.log_text().count(f"orig_queue_id={second}") == 0  # no second lap


def test_local_alias_does_not_take_the_hop(hop: Hop, sink: Sink) -> None:
    pf = hop.pf
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["bob@ninhbinh.gov.vn"],
             message("bob@ninhbinh.gov.vn"))
    assert t.data is not None and t.data[0] == 250
    qid = queue_id(t.data[1])
    [(env, _)] = sink.wait_for(1)
    assert env["rcpt_to"] == ["carol@ninhbinh.gov.vn"]
    pf.wait_for_log(rf"{qid}: to=<carol@ninhbinh\.gov\.vn>, orig_to=<bob@ninhbinh\.gov\.vn>, "
                    rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{sink.port}, .*status=sent")
    log = pf.log_text()
    assert "finalhop" not in "\n".join(ln for ln in log.splitlines() if qid in ln)
    assert "orig_queue_id=" not in log and "postfix/finalhop-out/" not in log


@pytest.mark.parametrize("rcpt,delivered", [
    ("lan@ninhbinh.gov.vn", "lan@hanoi.gov.vn"),  # local -> state: external, allowed
    ("x@gmail.com", "x@gmail.com"),  # a person writing to Gmail: external, ORCPT = RCPT
], ids=["alias-to-state", "direct-external"])
def test_all_external_mail_takes_the_hop_once(hop: Hop, sink: Sink, rcpt: str,
                                              delivered: str) -> None:
    pf = hop.pf
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", [rcpt], message(rcpt))
    assert t.data is not None and t.data[0] == 250
    first = queue_id(t.data[1])
    [(env, _)] = sink.wait_for(1)
    assert env["rcpt_to"] == [delivered]
    pf.wait_for_log(rf"postfix/finalhop/smtpd\[\d+\]: [0-9A-F]+: client=.*"
                    rf"orig_queue_id={first}")
    pf.wait_for_log(rf"RCPT TO:<{re.escape(delivered)}> ORCPT=rfc822;{re.escape(rcpt)}")
