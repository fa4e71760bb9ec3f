"""The harness itself: private Redis, sink and Postfix behave as the other tests assume.

A private Postfix relays to the sink byte for byte (it prepends exactly one
Received: header), XCLIENT LOGIN turns a session into an authenticated one,
`policy=` wires a policy service into both restriction stages, the queue
helpers see deferred mail, instances run side by side and stop by PID with
their children, and `python -m harness` comes up and goes down: on every exit path
(signals, a closed output pipe, a failed start) with every child stopped, restarting a
child that dies, keeping mail queued by an earlier run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import procs
from harness.postfix import PostfixInstance
from harness.redis import RedisInstance
from harness.sink import Sink
from harness.smtpclient import send

pytestmark = pytest.mark.integration

# Vietnamese 8-bit text, and lines that need dot-stuffing on the wire both ways.
BODY = ("Kính gửi Sở Khoa học và Công nghệ,\r\n"
        "Xin gửi kèm báo cáo quý IV.\r\n"
        ".\r\n"
        "..hai dấu chấm\r\n"
        ".một dấu chấm\r\n"
        "Trân trọng.\r\n").encode()

# What Postfix prepends, and nothing else when From/Date/Message-ID are present:
#   Received: from HELO (NAME [ADDR])
#   <TAB>by myhostname (Postfix) with PROTO id QUEUEID
#   <TAB>for <RCPT>; DATE
# PROTO is ESMTP, ESMTPA after XCLIENT LOGIN, UTF8SMTP(A) with SMTPUTF8.
RECEIVED = re.compile(
    rb"Received: from pc1\.test \((?P<name>[^ ]+) \[(?P<addr>[0-9.]+)\]\)\r\n"
    rb"\tby mail\.ninhbinh\.gov\.vn \(Postfix\) with (?P<proto>[A-Z0-9]+) "
    rb"id (?P<qid>[0-9A-F]{6,})\r\n"
    rb"\tfor <(?P<rcpt>[^>]+)>; [A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} [0-9:]{8} "
    rb"[+-]\d{4} \([A-Z]+\)\r\n")


def message(to: str, subject: str = "=?UTF-8?B?QsOhbyBjw6Fv?=") -> bytes:
    return (f"From: alice@ninhbinh.gov.vn\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <bc-q4@ninhbinh.gov.vn>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + BODY


def split_received(data: bytes) -> tuple[re.Match[bytes], bytes]:
    m = RECEIVED.match(data)
    assert m, f"no Postfix Received: header on top of {data[:300]!r}"
    return m, data[m.end():]


# -- Postfix -> sink, byte for byte ---------------------------------------------------

@pytest.mark.parametrize(("rcpt", "login", "name", "addr", "proto"), [
    ("y@ninhbinh.gov.vn", None, "unknown", "127.0.0.1", b"ESMTP"),  # inbound, province
    ("x@gmail.com", "alice@ninhbinh.gov.vn", "pc1.test", "10.20.30.40", b"ESMTPA"),  # out
], ids=["inbound-province", "outbound-authenticated"])
def test_relay_to_sink_byte_for_byte(postfix_factory: Callable[..., PostfixInstance],
                                     sink: Sink, rcpt: str, login: str | None, name: str,
                                     addr: str, proto: bytes) -> None:
    pf = postfix_factory()
    sent = message(rcpt)
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", [rcpt], sent, login=login,
             mail_options=["BODY=8BITMIME"])
    assert t.rcpt == {rcpt: (250, "2.1.5 Ok")}
    assert t.data is not None and t.data[0] == 250
    queued_as = t.data[1].rsplit(" ", 1)[-1]

    [(env, data)] = sink.wait_for(1)
    assert env["mail_from"] == "alice@ninhbinh.gov.vn" and env["rcpt_to"] == [rcpt]
    assert "BODY=8BITMIME" in env["mail_params"]  # type: ignore[operator]
    received, rest = split_received(data)
    assert rest == sent
    assert (received["name"], received["addr"]) == (name.encode(), addr.encode())
    assert received["proto"] == proto and received["rcpt"] == rcpt.encode()
    assert received["qid"].decode() == queued_as

    # The queue id's life in the maillog, from smtpd to removal.
    qid = re.escape(queued_as)
    pf.wait_for_log(rf"postfix/smtpd\[\d+\]: {qid}: client={re.escape(name)}\[{addr}\]")
    pf.wait_for_log(rf"postfix/cleanup\[\d+\]: {qid}: message-id=<bc-q4@ninhbinh\.gov\.vn>")
    pf.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<alice@ninhbinh\.gov\.vn>, "
                    rf"size=\d+, nrcpt=1 \(queue active\)")
    pf.wait_for_log(rf"postfix/smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, "
                    rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{sink.port}, .*dsn=2\.0\.0, "
                    rf"status=sent \(250 2\.0\.0 stored as 1\)")
    pf.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed")


def test_smtputf8_address_and_raw_utf8_header(postfix_factory: Callable[..., PostfixInstance],
                                              sink: Sink) -> None:
    pf = postfix_factory()
    rcpt = "nguyễn.văn.a@ninhbinh.gov.vn"
    sent = message(rcpt, subject="Báo cáo quý IV")
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", [rcpt], sent,
             mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    assert t.data is not None and t.data[0] == 250, t
    [(env, data)] = sink.wait_for(1)
    assert env["rcpt_to"] == [rcpt] and "SMTPUTF8" in env["mail_params"]  # type: ignore[operator]
    received, rest = split_received(data)
    assert received["proto"] == b"UTF8SMTP" and rest == sent


# -- XCLIENT and relay permissions ----------------------------------------------------

def test_xclient_login_allows_relaying_out(postfix_factory: Callable[..., PostfixInstance],
                                           sink: Sink) -> None:
    pf = postfix_factory()
    msg = message("x@gmail.com")
    local = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com"], None)
    assert local.rcpt["x@gmail.com"][0] == 250  # 127.0.0.1 itself is in mynetworks

    outside = send(pf.smtpd_port, "alice@ninhbinh.gov.vn",
                   ["x@gmail.com", "y@ninhbinh.gov.vn"], None, login="",
                   client_addr="10.20.30.40")
    assert outside.refused("x@gmail.com") == "554 5.7.1 <x@gmail.com>: Relay access denied"
    assert outside.rcpt["y@ninhbinh.gov.vn"][0] == 250  # relay_domains: still accepted
    pf.wait_for_log(r"NOQUEUE: reject: RCPT from pc1\.test\[10\.20\.30\.40\]: 554 5\.7\.1 "
                    r"<x@gmail\.com>: Relay access denied; from=<alice@ninhbinh\.gov\.vn> "
                    r"to=<x@gmail\.com> proto=ESMTP helo=<pc1\.test>")

    authed = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com"], msg,
                  login="alice@ninhbinh.gov.vn", client_addr="10.20.30.40")
    assert authed.accepted == ["x@gmail.com"]
    assert authed.data is not None and authed.data[0] == 250
    pf.wait_for_log(r": client=pc1\.test\[10\.20\.30\.40\], sasl_method=XCLIENT, "
                    r"sasl_username=alice@ninhbinh\.gov\.vn")
    [(env, _)] = sink.wait_for(1)
    assert env["rcpt_to"] == ["x@gmail.com"]


# -- policy service wiring --------------------------------------------------------------

class _Policy(socketserver.StreamRequestHandler):
    """A stand-in policy service: REJECT recipients starting with "blocked", else DUNNO."""

    requests: list[dict[str, str]]

    def handle(self) -> None:
        while True:
            request: dict[str, str] = {}
            while (line := self.rfile.readline()) not in (b"\n", b""):
                key, _, value = line.decode().rstrip("\n").partition("=")
                request[key] = value
            if not request:
                return
            self.requests.append(request)
            refuse = request.get("recipient", "").startswith("blocked")
            action = "REJECT blocked by test policy" if refuse else "DUNNO"
            self.wfile.write(f"action={action}\n\n".encode())


@pytest.fixture(params=["unix", "inet"])
def policy_service(request: pytest.FixtureRequest, postfix_dir: Path
                   ) -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Policy,), {"requests": seen})
    server: socketserver.BaseServer
    if request.param == "unix":  # an absolute path outside Postfix's queue directory
        path = postfix_dir / "policy.sock"
        server = socketserver.ThreadingUnixStreamServer(str(path), handler)
        path.chmod(0o666)  # smtpd runs as user postfix
        address = f"unix:{path}"
    else:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        address = f"inet:127.0.0.1:{server.server_address[1]}"
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield address, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_policy_service_is_asked_at_rcpt_and_end_of_message(
        postfix_factory: Callable[..., PostfixInstance], sink: Sink,
        policy_service: tuple[str, list[dict[str, str]]]) -> None:
    address, seen = policy_service
    pf = postfix_factory(policy=address)
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com", "blocked@gmail.com"],
             message("x@gmail.com"), login="alice@ninhbinh.gov.vn")
    assert t.refused("blocked@gmail.com") == \
        "554 5.7.1 <blocked@gmail.com>: Recipient address rejected: blocked by test policy"
    assert t.data is not None and t.data[0] == 250
    qid = t.data[1].rsplit(" ", 1)[-1]
    assert len(sink.wait_for(1)) == 1

    states = [(r["protocol_state"], r["recipient"], r["recipient_count"]) for r in seen]
    assert states == [("RCPT", "x@gmail.com", "0"), ("RCPT", "blocked@gmail.com", "0"),
                      ("END-OF-MESSAGE", "x@gmail.com", "1")]
    eom = seen[-1]
    assert eom["queue_id"] == qid and eom["sasl_username"] == "alice@ninhbinh.gov.vn"
    assert eom["client_address"] == "10.20.30.40" and int(eom["size"]) > 0
    assert len({r["instance"] for r in seen}) == 1  # one transaction


def test_policy_service_down_means_tempfail(postfix_factory: Callable[..., PostfixInstance],
                                            postfix_dir: Path, sink: Sink) -> None:
    pf = postfix_factory(policy=f"unix:{postfix_dir}/nobody-listens.sock")
    t = send(pf.smtpd_port, "alice@ninhbinh.gov.vn", ["x@gmail.com"], None,
             login="alice@ninhbinh.gov.vn")
    assert t.refused("x@gmail.com").startswith("451 4.3.5 ")
    assert pf.postconf("-h", "smtpd_policy_service_default_action").strip() == \
        "451 4.3.5 policy service unavailable"
    assert sink.messages() == []


# -- queue helpers, reload ------------------------------------------------------------

def test_relay_down_defers_then_flush_delivers(postfix_factory: Callable[..., PostfixInstance],
                                               sink: Sink) -> None:
    # Long backoff: the message waits in "deferred" until flush() (no retry on its own).
    pf = postfix_factory(main_cf_extra={"queue_run_delay": "300s",
                                        "minimal_backoff_time": "300s",
                                        "maximal_backoff_time": "300s"})
    sink.stop()
    t = send(pf.smtpd_port, "x@gmail.com", ["y@ninhbinh.gov.vn"], message("y@ninhbinh.gov.vn"))
    assert t.data is not None and t.data[0] == 250
    qid = t.data[1].rsplit(" ", 1)[-1]
    pf.wait_for_log(rf"{qid}: to=<y@ninhbinh\.gov\.vn>, .*status=deferred \(.*"
                    rf"Connection refused\)")
    assert pf.queue_ids() == [qid]
    # qmgr moves the file to "deferred" just after smtp has logged the failure.
    procs.wait_until(lambda: [e["queue_name"] for e in pf.queue_entries()] == ["deferred"],
                     10, "message in the deferred queue")
    [entry] = pf.queue_entries()
    assert entry["sender"] == "x@gmail.com"
    recipients: Any = entry["recipients"]
    assert [r["address"] for r in recipients] == ["y@ninhbinh.gov.vn"]
    assert "Connection refused" in recipients[0]["delay_reason"]

    sink.start()  # same port: the relay is back
    pf.flush()
    assert len(sink.wait_for(1)) == 1
    procs.wait_until(lambda: pf.queue_ids() == [], 15, "empty queue")


def test_reload_applies_changed_settings(postfix_factory: Callable[..., PostfixInstance],
                                         sink: Sink) -> None:
    pf = postfix_factory()
    assert pf.postconf("-h", "message_size_limit").strip() == "52428800"
    pf.main_cf_extra["message_size_limit"] = "2000"
    pf.reload()
    assert pf.postconf("-h", "message_size_limit").strip() == "2000"

    def big_refused() -> bool:  # smtpd processes started before the reload may linger
        t = send(pf.smtpd_port, "x@gmail.com", ["y@ninhbinh.gov.vn"],
                 message("y@ninhbinh.gov.vn") + b"x" * 3000 + b"\r\n")
        return t.data is not None and t.data[0] == 552

    procs.wait_until(big_refused, 15, "552 for a message over the reloaded limit")


# -- side by side, stop by PID -----------------------------------------------------------

def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_two_instances_side_by_side_and_stop_by_pid(
        postfix_factory: Callable[..., PostfixInstance], sink: Sink) -> None:
    a, b = postfix_factory("pf-a"), postfix_factory("pf-b")
    assert a.smtpd_port != b.smtpd_port and a.pid != b.pid
    ids = {}
    for pf in (a, b):
        t = send(pf.smtpd_port, "x@gmail.com", ["y@ninhbinh.gov.vn"],
                 message("y@ninhbinh.gov.vn"))
        assert t.data is not None
        ids[pf.smtpd_port] = t.data[1].rsplit(" ", 1)[-1]
    assert len(sink.wait_for(2)) == 2
    for pf, other in ((a, b), (b, a)):  # each logs to its own maillog only
        pf.wait_for_log(rf"{ids[pf.smtpd_port]}: removed")
        assert ids[other.smtpd_port] not in pf.log_text()

    master = a.pid
    children = _children(master)
    assert children, "master has no children (qmgr, pickup, postlogd, ...)"
    a.stop()
    assert not _alive(master)
    procs.wait_until(lambda: not any(_alive(c) for c in children), 10, "children gone")
    assert not procs.tcp_ready("127.0.0.1", a.smtpd_port)()
    assert procs.tcp_ready("127.0.0.1", b.smtpd_port)()  # the other one is untouched


def test_bad_setting_fails_fast_with_postfix_words(postfix_dir: Path, sink: Sink) -> None:
    pf = PostfixInstance(postfix_dir / "bad", relay_port=sink.port,
                         main_cf_extra={"smtpd_policy_service_retry_delay": "0s"})
    started = time.monotonic()
    with pytest.raises(procs.StartError, match=r"fatal: invalid smtpd_policy_service_retry_d"):
        pf.start()
    assert time.monotonic() - started < 10
    master = int((pf.queue_dir / "pid" / "master.pid").read_text().split()[0])
    assert not _alive(master), "a failed start must not leave its master running"
    assert pf.master_pid == 0 and not procs.tcp_ready("127.0.0.1", pf.smtpd_port)()


def test_start_refuses_a_busy_port_and_a_private_parent(postfix_dir: Path, sink: Sink,
                                                        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(procs.StartError, match="already in use"):
            PostfixInstance(postfix_dir / "busy", relay_port=sink.port,
                            smtpd_port=port).start()
    tmp_path.chmod(0o700)
    with pytest.raises(procs.StartError, match="not searchable"):
        PostfixInstance(tmp_path / "pf", relay_port=sink.port).start()


# -- Redis ----------------------------------------------------------------------------------

def test_redis_stops_and_starts_on_the_same_socket(redis_server: RedisInstance) -> None:
    import redis

    assert redis_server.url == f"unix://{redis_server.socket}"
    r: Any = redis.Redis.from_url(redis_server.url)
    assert r.ping()
    first = redis_server.pid
    redis_server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        r.ping()
    redis_server.start()
    assert r.ping() and redis_server.pid != first
    r.close()


def test_redis_tcp_and_appendonly_keep_data_across_restart(tmp_path: Path) -> None:
    import redis

    with RedisInstance(tmp_path / "r", tcp=True, appendonly=True) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        r: Any = redis.Redis.from_url(server.url)
        r.set("mw:{alice}:lock", "1")
        server.stop()
        server.start()
        assert r.get("mw:{alice}:lock") == b"1"
        r.close()
    with RedisInstance(tmp_path / "plain") as server:  # no persistence by default
        r = redis.Redis.from_url(server.url)
        r.set("k", "1")
        server.stop()
        server.start()
        assert r.get("k") is None
        r.close()


# -- the sink on its own -------------------------------------------------------------------

def _dialogue(port: int, *commands: bytes) -> list[bytes]:
    """Send each chunk and read one reply (of any number of lines) after it."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()  # banner
        for chunk in commands:
            s.sendall(chunk)
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            replies.append(b"".join(lines))
    return replies


def test_sink_stores_exact_bytes_and_answers_protocol_errors(tmp_path: Path) -> None:
    with Sink(tmp_path, reject_rcpt_regex=r"^bounce") as s:
        long_line = b"A" * 200_000 + b"\r\n"  # longer than the stream buffer
        body = b"Subject: raw\r\n\r\nbare\nLF kept\r\n..dot\r\n" + long_line + b"end\r\n"
        r = _dialogue(s.port,
                      b"EHLO t\r\n", b"RCPT TO:<a@b>\r\n", b"X" * 5000 + b"\r\n",
                      b"MAIL FROM:<s@t> BODY=8BITMIME\r\n", b"RCPT TO:<bounce@x>\r\n",
                      b"RCPT TO:<ok@x>\r\n", b"DATA\r\n", body + b".\r\n", b"QUIT\r\n")
        assert b"250-8BITMIME" in r[0] and b"250-SMTPUTF8" in r[0] and b"SIZE" in r[0]
        assert r[1].startswith(b"503") and r[2].startswith(b"500 5.5.2 line too long")
        assert r[4].startswith(b"550 5.1.1") and r[5].startswith(b"250")
        assert r[6].startswith(b"354") and r[7] == b"250 2.0.0 stored as 1\r\n"
        [(env, data)] = s.messages()
        assert env["rcpt_to"] == ["ok@x"] and env["mail_params"] == ["BODY=8BITMIME"]
        assert data == body.replace(b"\r\n..dot", b"\r\n.dot")
        assert sorted(p.name for p in s.dir.iterdir()) == ["000001.eml", "000001.json"]


# -- `make run` ---------------------------------------------------------------------------

def test_make_run_sandbox_comes_up_delivers_and_stops_on_sigint(sandbox_root: Path) -> None:
    root = sandbox_root / "make-run"
    port = procs.free_port()
    out = sandbox_root / "make-run.out"
    proc = procs.spawn([sys.executable, "-m", "harness", "--dir", str(root),
                        "--port", str(port), "--no-milter"], out)
    try:
        procs.wait_until(lambda: "sandbox is up" in out.read_text(errors="replace"), 60,
                         "sandbox banner", alive=lambda: proc.poll() is None, log=out)
        t = send(port, "someone@gmail.com", ["alice@ninhbinh.gov.vn"],
                 message("alice@ninhbinh.gov.vn"))
        assert t.data is not None and t.data[0] == 250
        procs.wait_until(lambda: any((root / "mail").glob("*.eml")), 30, "mail in sandbox")
        master = int((root / "postfix/queue/pid/master.pid").read_text().split()[0])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        procs.stop(proc)
    text = out.read_text()
    assert "sandbox stopped" in text and "[maillog]" in text
    assert not _alive(master) and not procs.tcp_ready("127.0.0.1", port)()
    assert not (root / "redis" / "redis.sock").exists()
    assert not (root / "policyd.sock").exists()


# -- `make run`: every way out stops every child; a dead child comes back ------------------

def _running(pid: int) -> bool:
    """The process exists and is not a zombie (reaped or not, a zombie runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _processes_of(root: Path) -> list[str]:
    """Running processes that belong to the sandbox in `root`: working directory inside
    it (Postfix's daemons sit in the queue directory, redis and clamd in theirs) or its
    path on the command line (our daemons' --config, the sink's --dir)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if (cwd == str(root) or cwd.startswith(f"{root}/") or str(root) in cmdline) \
                and _running(int(proc.name)):
            found.append(f"{proc.name} cwd={cwd} {cmdline[:200]}")
    return found


def _harness_pids(root: Path) -> dict[str, list[int]]:
    data: dict[str, list[int]] = json.loads((root / "pids.json").read_text())
    return data


class Harness:
    """`python -m harness` with its stdout (and stderr) on a pipe we read, like
    `make run 2>&1 | tee run.log`."""

    def __init__(self, root: Path, *args: str, port: int | None = None) -> None:
        self.root = root
        self.port = port or procs.free_port()
        self.output = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "--dir", str(root), "--port", str(self.port),
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=procs.child_env(), start_new_session=True)

    def read_until(self, text: str, timeout_s: float = 90.0) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while text.encode() not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not in the harness's output:\n{self.output.decode()}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"harness exited before {text!r}:\n{self.output.decode()}"
                self.output += chunk

    def close_reader(self) -> None:
        assert self.proc.stdout is not None
        self.proc.stdout.close()  # the reader is gone: the next write gets EPIPE

    def log(self) -> str:
        path = self.root / "harness.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        """After a failed test: let the harness stop its children (SIGTERM), then stop
        whatever is left by the PIDs it recorded."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        with contextlib.suppress(OSError, ValueError):
            for pids in _harness_pids(self.root).values():
                for pid in reversed(pids):
                    if _running(pid):
                        procs.stop_pid(pid)

    def assert_everything_stopped(self, pids: dict[str, list[int]]) -> None:
        left = {name: [p for p in ps if _running(p)] for name, ps in pids.items()}
        assert not any(left.values()), f"still running: {left}\n{self.log()}"
        procs.wait_until(lambda: not _processes_of(self.root), 10,
                         f"sandbox processes gone: {_processes_of(self.root)}")
        assert not procs.tcp_ready("127.0.0.1", self.port)()


@pytest.mark.parametrize(("how", "args"), [
    pytest.param("SIGINT", (), id="sigint-full-sandbox"),
    pytest.param("SIGTERM", ("--no-milter",), id="sigterm"),
    pytest.param("SIGHUP", ("--no-milter",), id="sighup"),
    pytest.param(None, ("--no-milter",), id="reader-gone-no-signal"),
])
def test_make_run_piped_stops_every_child_when_the_reader_goes(
        sandbox_root: Path, how: str | None, args: tuple[str, ...]) -> None:
    """`make run 2>&1 | tee run.log`, then Ctrl-C (tee dies first): the harness used to
    die of BrokenPipeError and leave Redis, clamd, both daemons and Postfix running."""
    root = sandbox_root / f"piped-{how or 'none'}"
    h = Harness(root, *args)
    try:
        h.read_until("sandbox is up")
        pids = _harness_pids(root)
        expected = {"harness", "redis-server", "sink", "policyd", "postfix"}
        expected |= set() if args else {"clamd", "milter"}
        assert set(pids) == expected and all(pids.values()), pids
        assert len(pids["postfix"]) == 2  # the start-fg wrapper and the master
        assert all(_running(p) for ps in pids.values() for p in ps)
        h.close_reader()
        if how is not None:
            h.proc.send_signal(getattr(signal, how))
        assert h.proc.wait(60) == 0, h.log()
        h.assert_everything_stopped(pids)
        log = h.log()
        assert "sandbox stopped" in log
        assert f"stopping ({how or 'output closed'})" in log
        assert "Traceback" not in log
    finally:
        h.cleanup()


def test_make_run_stops_what_it_started_when_start_up_fails(sandbox_root: Path) -> None:
    root = sandbox_root / "start-fails"
    with socket.socket() as taken:  # Postfix, started last, cannot have its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        h = Harness(root, "--no-milter", port=taken.getsockname()[1])
        try:
            assert h.proc.wait(90) == 1
            assert h.proc.stdout is not None
            out = h.proc.stdout.read().decode(errors="replace")
            assert "could not start" in out and "already in use" in out, out
            pids = _harness_pids(root)
            assert {"redis-server", "sink", "policyd"} <= set(pids), pids
            left = {n: [p for p in ps if _running(p)] for n, ps in pids.items()}
            assert not any(left.values()), left
            procs.wait_until(lambda: not _processes_of(root), 10, "sandbox processes gone")
        finally:
            h.cleanup()


def test_make_run_restarts_a_daemon_that_dies(sandbox_root: Path) -> None:
    root = sandbox_root / "restart"
    h = Harness(root, "--no-milter")
    try:
        h.read_until("sandbox is up")
        first = _harness_pids(root)["policyd"][0]
        os.kill(first, signal.SIGKILL)
        h.read_until("policyd restarted", 60)
        assert b"policyd died (status -9); restarting it" in h.output
        pids = _harness_pids(root)
        [dead, new] = pids["policyd"]
        assert dead == first and _running(new) and h.proc.poll() is None
        # the new one answers Postfix: an inbound message is accepted and delivered
        t = send(h.port, "someone@gmail.com", ["alice@ninhbinh.gov.vn"],
                 message("alice@ninhbinh.gov.vn"))
        assert t.data is not None and t.data[0] == 250, t
        procs.wait_until(lambda: any((root / "mail").glob("*.eml")), 30, "mail delivered")
        h.proc.send_signal(signal.SIGINT)
        assert h.proc.wait(60) == 0, h.log()
        h.assert_everything_stopped(pids)
    finally:
        h.cleanup()


def test_make_run_keeps_mail_queued_by_an_earlier_run(sandbox_root: Path) -> None:
    """Mail Postfix accepted but had not delivered when the sandbox stopped is delivered by
    the next `make run` (it used to wipe the queue at start)."""
    root = sandbox_root / "queue-kept"
    etc = str(root / "postfix" / "etc")
    first = Harness(root, "--no-milter", "--no-policyd")
    try:
        first.read_until("sandbox is up")
        # hold outbound delivery in this run only: the next run rewrites main.cf
        subprocess.run(["postconf", "-c", etc, "-e", "defer_transports = relay, smtp"],
                       check=True, timeout=30)
        subprocess.run(["postfix", "-c", etc, "reload"], check=True, capture_output=True,
                       timeout=30)
        maillog = root / "postfix" / "maillog"
        procs.wait_until(lambda: "reload -- version" in maillog.read_text(), 30,
                         "postfix reloaded")
        t = send(first.port, "someone@gmail.com", ["bob@ninhbinh.gov.vn"],
                 message("bob@ninhbinh.gov.vn", subject="queued"))
        assert t.data is not None and t.data[0] == 250, t
        procs.wait_until(lambda: "deferred transport" in maillog.read_text(), 30,
                         "message deferred")
        first.proc.send_signal(signal.SIGINT)
        assert first.proc.wait(60) == 0, first.log()
    finally:
        first.cleanup()
    assert not any((root / "mail").glob("*.eml"))
    second = Harness(root, "--no-milter", "--no-policyd")
    try:
        second.read_until("sandbox is up")
        procs.wait_until(lambda: any((root / "mail").glob("*.eml")), 30,
                         "the earlier run's mail delivered")
        [eml] = (root / "mail").glob("*.eml")
        assert b"Subject: queued" in eml.read_bytes()
        assert (root / "postfix" / "maillog.prev").exists()
        second.proc.send_signal(signal.SIGINT)
        assert second.proc.wait(60) == 0, second.log()
    finally:
        second.cleanup()


# -- the harness is not part of the product ------------------------------------------------

def test_the_harness_is_not_shipped_and_the_package_never_imports_it() -> None:
    import ast
    import configparser

    import setuptools

    root = Path(__file__).resolve().parents[2]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    include = cfg["options.packages.find"]["include"].replace(",", " ").split()
    shipped = setuptools.find_packages(where=str(root), include=include)
    assert "mailwarden" in shipped and "mailwarden.audit" in shipped
    assert not [p for p in shipped if p.split(".")[0] in ("harness", "tests", "benchmarks")]
    importers = []
    for py in (root / "mailwarden").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            importers += [f"{py}: {n}" for n in names if n.split(".")[0] == "harness"]
    assert not importers
