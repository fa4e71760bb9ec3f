"""Cost of message authentication per message: DKIM signing and verification, SPF/DMARC.

    .venv/bin/python -m benchmarks.auth_cost [--size 20480] [--iterations 300]

Everything is in-process, except the rows marked "loopback DNS", which query
a sandbox DNS server (harness.dns) started here on 127.0.0.1 and
stopped by its PID. Keys are made with `keygen` in a temporary directory.
The message is a realistic ~20 KB MIME message (text part + base64 PDF-like
attachment). Times are wall-clock per message on one thread, median and p95
over the iterations, in microseconds. The "static DNS" rows answer lookups
from memory, so they show the CPU cost of the crypto and canonicalization
alone; the "loopback DNS" rows add real UDP queries (cold = new resolver,
empty cache; warm = the TTL cache answers, as for a second message from the
same domain).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.dns import DnsServer
from mailwarden.auth.dkim_sign import KeyRing, keygen, load_keys
from mailwarden.auth.dmarc import PublicSuffixes
from mailwarden.auth.dns import Resolver, StaticLookup
from mailwarden.auth.engine import Authenticator, AuthSettings
from mailwarden.auth.verify import VerifySettings, verify_dkim
from mailwarden.rules.authentication import AuthRuleSettings

DOMAIN = "ninhbinh.gov.vn"


def build_message(size: int) -> bytes:
    attachment = base64.encodebytes(os.urandom(max(0, size - 2500) * 3 // 4)).replace(
        b"\n", b"\r\n")
    return (
        b"Received: from pc1.ninhbinh.gov.vn (pc1 [10.20.30.40]) by mx.ninhbinh.gov.vn\r\n"
        b"From: Van Phong So <vanphong@ninhbinh.gov.vn>\r\n"
        b"To: Doi Tac <lienhe@example.org>\r\n"
        b"Cc: Luu Tru <luutru@ninhbinh.gov.vn>\r\n"
        b"Subject: Cong van so 123/SKHCN-VP ve viec bao cao dinh ky\r\n"
        b"Date: Tue, 02 Jan 2024 08:00:00 +0700\r\n"
        b"Message-ID: <20240102080000.123@ninhbinh.gov.vn>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + b"Kinh gui quy co quan, noi dung cong van dinh kem.\r\n" * 20
        + b"\r\n--b1\r\nContent-Type: application/pdf; name=\"cv123.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=\"cv123.pdf\"\r\n\r\n"
        + attachment + b"\r\n--b1--\r\n")


def measure(fn: Callable[[], object], iterations: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.auth_cost")
    p.add_argument("--size", type=int, default=20 * 1024)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--large", type=int, default=10 * 1024 * 1024,
                   help="also time one larger message (bytes; 0 = skip)")
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mailwarden-authbench-"))
    try:
        return run(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(a: argparse.Namespace, work: Path) -> int:
    rsa_path, rsa_rec = keygen(DOMAIN, "rsa", work)
    ed_path, ed_rec = keygen(DOMAIN, "ed", work, algorithm="ed25519-sha256")
    rsa_entry = {"domain": DOMAIN, "selector": "rsa", "key_file": str(rsa_path)}
    ed_entry = {"domain": DOMAIN, "selector": "ed", "key_file": str(ed_path),
                "algorithm": "ed25519-sha256"}
    rsa_ring, ed_ring, dual = (load_keys([rsa_entry]), load_keys([ed_entry]),
                               load_keys([rsa_entry, ed_entry]))
    msg = build_message(a.size)

    def signed(ring: KeyRing, m: bytes = msg) -> bytes:
        return b"".join(f.as_bytes() for f in ring.sign(m, DOMAIN)) + m

    static = StaticLookup({(k.dns_name, "TXT"): [k.txt_value()] for k in dual.keys})
    static.add(DOMAIN, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    static.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject")
    settings = AuthSettings("mx.example", True, VerifySettings(),
                            AuthRuleSettings((DOMAIN,), True, "cite"),
                            PublicSuffixes.from_setting(""))

    rows: list[tuple[str, float, float]] = []
    n = a.iterations
    rows.append(("DKIM sign, rsa-sha256 2048-bit", *measure(lambda: rsa_ring.sign(msg, DOMAIN), n)))
    rows.append(("DKIM sign, ed25519-sha256", *measure(lambda: ed_ring.sign(msg, DOMAIN), n)))
    rows.append(("DKIM sign, dual (rsa + ed25519)", *measure(lambda: dual.sign(msg, DOMAIN), n)))
    s_rsa, s_ed, s_dual = signed(rsa_ring), signed(ed_ring), signed(dual)
    rows.append(("DKIM verify, rsa-sha256 2048-bit (static DNS)",
                 *measure(lambda: verify_dkim(s_rsa, static), n)))
    rows.append(("DKIM verify, ed25519-sha256 (static DNS)",
                 *measure(lambda: verify_dkim(s_ed, static), n)))
    rows.append(("DKIM verify, both signatures (static DNS)",
                 *measure(lambda: verify_dkim(s_dual, static), n)))
    auth = Authenticator(settings, static, dual)
    rows.append(("outbound step: sign (engine, dual)", *measure(lambda: auth.process(
        msg, client_ip="10.20.30.40", helo="pc1", mail_from=f"a@{DOMAIN}", ours=True), n)))
    rows.append(("inbound step: SPF + DKIM(2) + DMARC + rule + A-R (static DNS)",
                 *measure(lambda: auth.process(s_dual, client_ip="203.0.113.5", helo="h",
                                               mail_from=f"a@{DOMAIN}", ours=False), n)))

    with DnsServer(work / "dns", rsa_rec + "\n" + ed_rec + "\n"
                   f'{DOMAIN}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"\n'
                   f'_dmarc.{DOMAIN}. IN TXT "v=DMARC1; p=reject"\n') as server:
        def cold() -> object:
            r = Resolver([server.address], timeout_s=1.0, attempts=1)
            return Authenticator(settings, r, dual).process(
                s_dual, client_ip="203.0.113.5", helo="h", mail_from=f"a@{DOMAIN}",
                ours=False)
        warm_resolver = Resolver([server.address], timeout_s=1.0, attempts=1)
        warm_auth = Authenticator(settings, warm_resolver, dual)
        rows.append(("inbound step, loopback DNS, cold cache (5 queries)",
                     *measure(cold, max(20, n // 5))))
        rows.append(("inbound step, loopback DNS, warm cache",
                     *measure(lambda: warm_auth.process(
                         s_dual, client_ip="203.0.113.5", helo="h",
                         mail_from=f"a@{DOMAIN}", ours=False), n)))

    if a.large:
        big = build_message(a.large)
        s_big = signed(dual, big)
        rows.append((f"DKIM sign, dual, {a.large // (1024 * 1024)} MB message",
                     *measure(lambda: dual.sign(big, DOMAIN), 3)))
        rows.append((f"DKIM verify, both, {a.large // (1024 * 1024)} MB message",
                     *measure(lambda: verify_dkim(s_big, static), 3)))

    print(f"# auth cost: {len(msg)} byte message, {n} iterations, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print()
    print("| step | median µs | p95 µs |")
    print("|---|---:|---:|")
    for name, med, p95 in rows:
        print(f"| {name} | {med:,.0f} | {p95:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
