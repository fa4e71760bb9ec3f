"""End to end through the containerised stack (issue 12): `single` and `ha`.

single: mail from outside is accepted and delivered; an executable and EICAR are
refused by the milter (clamd in its own container); the rate lock at the limit and
the operator's unlock. ha: the window is one window across the two MTAs, a lock made
on one holds on the other, an unlock reaches both; then the Redis master's container
is SIGKILLed and the test measures how long until counting resumes (policyd's
on_redis_error = defer: 451 meanwhile) and checks that the lock made before survived.
"""

from __future__ import annotations

import time
from email.message import EmailMessage

from harness.smtpclient import Transaction, send

from .conftest import Topology

ALICE, BOB = "alice@ninhbinh.gov.vn", "bob@ninhbinh.gov.vn"
LIMIT = 3
EICAR = b"".join([b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR-STANDARD-ANTIVIRUS",
                  b"-TEST-FILE!$H+H*"])


def message(to: str, attachment: tuple[str, bytes] | None = None) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = ALICE, to, "Bao cao"
    m["Date"], m["Message-ID"] = "Mon, 23 Nov 2026 08:00:00 +0700", f"<{time.time()}@t>"
    m.set_content("Noi dung.\n")
    if attachment:
        m.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                         filename=attachment[0])
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def probe(port: int, login: str, rcpt: str) -> Transaction:
    return send(port, login, [rcpt], None, login=login)


def until(port: int, login: str, rcpt: str, code: int, timeout_s: float = 10) -> float:
    t0 = time.monotonic()
    while probe(port, login, rcpt).rcpt[rcpt][0] != code:
        assert time.monotonic() - t0 < timeout_s, (port, rcpt, code)
        time.sleep(0.02)
    return time.monotonic() - t0


def test_single_inbound_executable_eicar(single: Topology) -> None:
    port = single.ports["MW_SMTPD_PORT"]
    t = send(port, "someone@gmail.com", [ALICE], message(ALICE), login="")
    assert t.accepted == [ALICE] and t.data is not None and t.data[0] == 250, t
    single.wait_delivered(ALICE)

    exe = b"MZ" + b"\x90" * 58 + b"\x80\x00\x00\x00" + b"\x00" * 64 + b"PE\x00\x00" + b"\x00" * 400
    t = send(port, ALICE, ["x@gmail.com"], message("x@gmail.com", ("hoa-don.pdf.exe", exe)),
             login=ALICE)
    assert t.data is not None and t.data[0] == 550, t
    assert "attachment" in t.data[1].lower() or "tep" in t.data[1].lower(), t.data

    t = send(port, ALICE, [BOB], message(BOB, ("eicar.txt", EICAR)), login=ALICE)
    assert t.data is not None and t.data[0] == 550, t
    assert "Eicar" in single.logs("milter") or "av.infected" in single.logs("milter")


def test_single_rate_lock_and_unlock(single: Topology) -> None:
    port = single.ports["MW_SMTPD_PORT"]
    user = "carol@ninhbinh.gov.vn"
    for i in range(LIMIT):
        t = send(port, user, [f"c{i}@gmail.com"], message(f"c{i}@gmail.com"), login=user)
        assert t.accepted == [f"c{i}@gmail.com"], t
    t = probe(port, user, "over@gmail.com")
    assert f"Vuot gioi han {LIMIT} nguoi nhan" in t.refused("over@gmail.com")
    assert "Hop thu bi tam khoa" in probe(port, user, BOB).refused(BOB)
    out = single.cli("policyd", "unlock", user, "--reason", "verified", "--by", "ops1")
    assert out.returncode == 0, out.stderr
    until(port, user, BOB, 250)


def test_ha_one_window_across_two_mtas_then_failover(ha: Topology) -> None:
    ports = [ha.ports["MW_SMTPD1_PORT"], ha.ports["MW_SMTPD2_PORT"]]
    for i in range(LIMIT):
        rcpt = f"r{i}@gmail.com"
        t = send(ports[i % 2], ALICE, [rcpt], message(rcpt), login=ALICE)
        assert t.accepted == [rcpt] and t.data is not None and t.data[0] == 250, (i, t)
    t = probe(ports[LIMIT % 2], ALICE, "over@gmail.com")
    assert f"Vuot gioi han {LIMIT} nguoi nhan" in t.refused("over@gmail.com")
    for port in ports:  # the lock holds on both MTAs at once
        until(port, ALICE, BOB, 550, timeout_s=2)
    out = ha.cli("policyd-2", "unlock", ALICE, "--reason", "verified", "--by", "ops1")
    assert out.returncode == 0, out.stderr
    for port in ports:
        until(port, ALICE, BOB, 250, timeout_s=2)

    # A lock made before the failover, then the master's container is killed.
    out = ha.cli("policyd-1", "lock", BOB, "--reason", "leaked password", "--by", "ops1")
    assert out.returncode == 0, out.stderr
    for port in ports:
        until(port, BOB, ALICE, 550, timeout_s=2)
    time.sleep(0.2)
    out = ha.compose("kill", "redis-a")
    assert out.returncode == 0, out.stderr
    killed = time.monotonic()
    answers: dict[int, int] = {}
    resumed = [0.0, 0.0]
    for i, port in enumerate(ports):
        n = 0
        while True:
            n += 1
            code = probe(port, f"load{i}-{n}@ninhbinh.gov.vn", "x@gmail.com").rcpt[
                "x@gmail.com"][0]
            answers[code] = answers.get(code, 0) + 1
            if code == 250:
                break
            assert time.monotonic() - killed < 60, answers
            time.sleep(0.02)
        resumed[i] = time.monotonic() - killed
    print(f"\nha failover: counting resumed on mx1 {resumed[0]:.1f}s, mx2 {resumed[1]:.1f}s "
          f"after the master's container was killed; RCPT answers meanwhile {answers}")
    for port in ports:  # the lock made before the failover is still enforced ...
        assert "Hop thu bi tam khoa" in probe(port, BOB, ALICE).refused(ALICE)
    out = ha.cli("policyd-2", "locks")  # ... and is in the new master
    assert BOB in out.stdout, out.stdout + out.stderr
