"""Milter throughput with authentication off / DKIM signing / inbound verification.

    .venv/bin/python -m benchmarks.milter_auth [--messages 300] [--sessions 20]

Same private Postfix, clamd (DisableCache yes), DNS server and sink for every row; only
the milter's config changes between rows (the milter is restarted on the same socket).
Load: Postfix's smtp-source sends one pre-built ~20 KB message per connection, S sessions
in parallel; "end to end" = messages / (start .. all of them stored by the sink).
Milter CPU per message from /proc/PID/stat. Issue #5's benchmark rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.clamd import ClamdInstance
from harness.daemons import Daemon, write_config
from harness.dns import DnsServer
from harness.postfix import PostfixInstance
from harness.sink import Sink
from mailwarden.auth.dkim_sign import keygen, load_keys

LOCAL = "ninhbinh.gov.vn"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def message(signed_by: object | None = None) -> bytes:
    body = ("Kinh gui cac co quan, don vi. " * 40 + "\r\n") * 16  # ~20 KB
    raw = (f"From: alice@{LOCAL}\r\nTo: x@gmail.com\r\nSubject: Thong bao\r\n"
           f"Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMessage-ID: <b1@{LOCAL}>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           + body).encode()
    if signed_by is not None:
        fields = signed_by.sign(raw, LOCAL)  # type: ignore[attr-defined]
        raw = b"".join(f"{f.name}: {f.value}\r\n".encode() for f in fields) + raw
    return raw


def run_row(name: str, pf: PostfixInstance, sink: Sink, root: Path, config: dict[str, object],
            eml: Path, n: int, sessions: int) -> str:
    sock = f"unix:{root}/m.sock"
    cfg = write_config(root / f"{name}.toml", {
        "milter.listen": sock, "milter.socket_mode": "0666", "logging.level": "warning",
        "milter.release_on_refusal": False, **config})
    milter = Daemon("milter", cfg, sock, root / f"{name}.log").start()
    deadline = time.monotonic() + 10  # the milter sets the socket's mode right after bind
    while (root / "m.sock").stat().st_mode & 0o777 != 0o666 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        for f in sink.dir.iterdir():
            f.unlink(missing_ok=True)
        cpu0, t0 = cpu_s(milter.pid), time.monotonic()
        subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(n), "-f",
                        f"alice@{LOCAL}", "-t", "x@gmail.com", "-F", str(eml),
                        f"127.0.0.1:{pf.smtpd_port}"], check=True, timeout=600)
        got = len(sink.wait_for(n, timeout_s=300))
        wall = time.monotonic() - t0
        cpu = cpu_s(milter.pid) - cpu0
        refused = n - got
    finally:
        milter.stop()
    return (f"| {name} | {n / wall:.1f} | {1000 * cpu / n:.2f} | {refused} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=20)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mw-auth-bench-"))
    root.chmod(0o755)
    started: list[object] = []
    try:
        key, record = keygen(LOCAL, "b2026", root / "dkim")
        ring = load_keys([{"domain": LOCAL, "selector": "b2026", "key_file": str(key)}])
        dns = DnsServer(root / "dns", f'{LOCAL}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
                        f'_dmarc.{LOCAL}. IN TXT "v=DMARC1; p=reject"\n{record}\n').start()
        started.append(dns)
        clamd = ClamdInstance(root / "clamd", disable_cache=True).start()
        started.append(clamd)
        sink = Sink(root / "sink").start()
        started.append(sink)
        pf = PostfixInstance(root / "pf", relay_port=sink.port, milter=f"unix:{root}/m.sock",
                             main_cf_extra={"disable_mime_output_conversion": "yes"}).start()
        started.append(pf)
        plain, signed = root / "plain.eml", root / "signed.eml"
        plain.write_bytes(message())
        signed.write_bytes(message(ring))
        base = {"antivirus.clamd": clamd.address, "dns.nameservers": [dns.address],
                "dns.timeout": 0.5, "auth.authserv_id": "mail.ninhbinh.gov.vn"}
        keys = {"dkim.keys": [{"domain": LOCAL, "selector": "b2026", "key_file": str(key)}]}
        outside = {"domains.trusted_networks": ["192.0.2.250/32"]}  # 127.0.0.1 is not ours
        rows = [
            ("auth off (auth.enabled=false, no keys)", plain, {"auth.enabled": False}),
            ("outbound: DKIM-sign rsa-sha256 2048", plain, keys),
            ("auth off again (order check)", plain, {"auth.enabled": False}),
            ("inbound: SPF+DKIM verify+DMARC", signed, outside),
        ]
        out = ["| row | end to end msg/s | milter CPU ms/msg | refused |", "|---|---:|---:|---:|"]
        for name, eml, cfg in rows:
            out.append(run_row(name.split(" ")[0] + str(len(out)), pf, sink, root,
                               {**base, **cfg}, eml, a.messages, a.sessions)
                       .replace(name.split(" ")[0] + str(len(out)), name, 1))
            print(out[-1], flush=True)
        print("\n".join(out))
    finally:
        for s in reversed(started):
            s.stop()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
