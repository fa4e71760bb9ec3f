"""Benchmark: PyPI `clamd` (1.0.2) vs mailwarden.clients.clamd on a 30 MiB INSTREAM scan.

Starts a private clamd (harness.clamd, DisableCache yes) and measures, for the same
payload, wall time, client CPU and clamd CPU, over a unix socket and over 127.0.0.1 TCP. It
then checks correctness (partial sends, over-limit streams) and measures the two design
questions of our own client: chunk size, and one connection per part vs one zIDSESSION.

    .venv/bin/pip install clamd          # benchmark only, not a runtime dependency
    .venv/bin/python -m benchmarks.clamd_client --runs 10     # from the repository root

Results: stdout (markdown) and benchmarks/results/clamd_client.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import socket
import statistics
import struct
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clamd as pyclamd  # type: ignore[import-untyped]  # PyPI "clamd", benchmark only

from harness.clamd import ClamdInstance, eicar_bytes
from mailwarden.clients.clamd import scan_many, scan_stream

MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class SendSpy:
    """Wraps the socket PyPI clamd uses: counts send() calls that sent less than asked.
    With `inject_partial_at`, makes that one send() short, as the kernel may."""

    def __init__(self, sock: socket.socket, inject_partial_at: int | None = None) -> None:
        self._sock = sock
        self.calls = 0
        self.partial = 0
        self.inject_partial_at = inject_partial_at

    def send(self, data: bytes, *flags: int) -> int:
        self.calls += 1
        if self.calls == self.inject_partial_at:
            data = data[: len(data) // 2]
            self.partial += 1
            return self._sock.send(data, *flags)
        n = self._sock.send(data, *flags)
        if n < len(data):
            self.partial += 1
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def spied(cls: type[Any], inject_partial_at: int | None = None) -> type[Any]:
    class Spied(cls):  # type: ignore[misc]
        spy: SendSpy

        def _init_socket(self) -> None:
            super()._init_socket()
            self.spy = SendSpy(getattr(self, "clamd_socket"), inject_partial_at)  # noqa: B009
            self.clamd_socket = self.spy

    return Spied


def pypi_client(clamd: ClamdInstance, transport: str, timeout: float | None,
                inject_partial_at: int | None = None) -> Any:
    if transport == "unix":
        return spied(pyclamd.ClamdUnixSocket, inject_partial_at)(str(clamd.socket_path),
                                                                 timeout=timeout)
    return spied(pyclamd.ClamdNetworkSocket, inject_partial_at)("127.0.0.1", clamd.port,
                                                                timeout=timeout)


def measure(fn: Callable[[], str], pid: int) -> dict[str, Any]:
    cpu0, clamd0, t0 = time.process_time(), proc_cpu_s(pid), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "client_cpu_s": time.process_time() - cpu0,
            "clamd_cpu_s": proc_cpu_s(pid) - clamd0, "result": result}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(rows), "results": sorted({r["result"] for r in rows})}
    for key in ("wall_s", "client_cpu_s", "clamd_cpu_s"):
        values = [r[key] for r in rows]
        out[key] = {"median": statistics.median(values), "min": min(values),
                    "max": max(values)}
    return out


def ms(summary: dict[str, Any], key: str) -> str:
    s = summary[key]
    return f"{s['median'] * 1000:.0f} ({s['min'] * 1000:.0f}-{s['max'] * 1000:.0f})"


def bench_clients(clamd: ClamdInstance, payload: bytes, runs: int) -> dict[str, Any]:
    """(a) PyPI clamd vs (b) ours, interleaved run by run so drift hits both alike."""
    results: dict[str, Any] = {}
    for transport in ("unix", "tcp"):
        address = clamd.address if transport == "unix" else clamd.inet_address
        rows: dict[str, list[dict[str, Any]]] = {"pypi": [], "ours": []}
        spies: list[SendSpy] = []

        def run_pypi(transport: str = transport, spies: list[SendSpy] = spies) -> str:
            client = pypi_client(clamd, transport, timeout=60)
            reply = client.instream(io.BytesIO(payload))
            spies.append(client.spy)
            return str(reply["stream"][0])

        def run_ours(address: str = address) -> str:
            outcome = scan_stream(io.BytesIO(payload), address=address, timeout_s=60)
            return outcome.status.name

        for _ in range(runs):
            rows["pypi"].append(measure(run_pypi, clamd.pid))
            rows["ours"].append(measure(run_ours, clamd.pid))
        results[transport] = {
            "pypi": {**summarize(rows["pypi"]),
                     "send_calls_per_scan": spies[0].calls,
                     "partial_sends_total": sum(s.partial for s in spies)},
            "ours": summarize(rows["ours"]),
        }
    return results


def bench_chunk_sizes(clamd: ClamdInstance, payload: bytes, runs: int) -> dict[str, Any]:
    sizes = (1024, 16 * 1024, 64 * 1024, 256 * 1024, 1 * MiB)
    rows: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for _ in range(runs):  # round-robin over the sizes so that drift hits all alike
        for size in sizes:
            rows[size].append(measure(lambda size=size: scan_stream(  # type: ignore[misc]
                io.BytesIO(payload), address=clamd.address, timeout_s=60,
                chunk_size=size).status.name, clamd.pid))
    return {str(size): summarize(rows[size]) for size in sizes}


def idsession_scan(path: Path, parts: list[bytes], chunk_size: int = 256 * 1024) -> str:
    """Minimal zIDSESSION client, for the measurement only: all parts over one connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(path))
        s.sendall(b"zIDSESSION\0")
        worst = "CLEAN"
        for i, part in enumerate(parts, 1):
            frames = [b"zINSTREAM\0"]
            for off in range(0, len(part), chunk_size):
                chunk = part[off:off + chunk_size]
                frames.append(struct.pack(">I", len(chunk)) + chunk)
            frames.append(b"\0\0\0\0")
            s.sendall(b"".join(frames))
            reply = b""
            while not reply.endswith(b"\0"):
                data = s.recv(4096)
                if not data:
                    raise ConnectionError("clamd closed the session")
                reply += data
            if reply != f"{i}: stream: OK\0".encode():
                worst = reply.decode()
        s.sendall(b"zEND\0")
        return worst


def bench_session(clamd: ClamdInstance, messages: int) -> dict[str, Any]:
    """Per message: 5 attachments plus the raw message. Typical: attachments of 20-200 KB,
    raw ~1 MB. Tiny: 1 KB parts, where the per-connection cost is all there is to see."""
    rnd = random.Random(7)
    out: dict[str, Any] = {}
    for shape, sizes, raw_size in (
            ("typical: 5 x 20-200 KB + 1 MB raw", (20_000, 50_000, 80_000, 120_000, 200_000),
             1_000_000),
            ("tiny: 6 x 1 KB", (1000,) * 5, 1000)):
        parts = [rnd.randbytes(n) for n in sizes] + [rnd.randbytes(raw_size)]
        labelled = [(f"p{i}", p) for i, p in enumerate(parts)]

        def per_part(labelled: list[tuple[str, bytes]] = labelled) -> str:
            return scan_many(labelled, address=clamd.address, timeout_s=60).status.name

        def session(parts: list[bytes] = parts) -> str:
            return idsession_scan(clamd.socket_path, parts)

        rows: dict[str, list[dict[str, Any]]] = {"per_part": [], "session": []}
        for _ in range(messages):  # interleaved so that drift hits both alike
            rows["per_part"].append(measure(per_part, clamd.pid))
            rows["session"].append(measure(session, clamd.pid))
        out[f"{shape}: connection per part (scan_many)"] = summarize(rows["per_part"])
        out[f"{shape}: one zIDSESSION"] = summarize(rows["session"])
    return out


def check_correctness(clamd: ClamdInstance) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # A tar: a zero-filled member, then EICAR. Intact, clamd unpacks it and finds EICAR.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("zeros.bin", bytes(64 * 1024)), ("eicar.com", eicar_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sample = buf.getvalue()
    intact = pypi_client(clamd, "unix", timeout=10).instream(io.BytesIO(sample))
    # The same bytes, but the n-th send() goes out half-sent, which send() is allowed to do
    # and which PyPI clamd ignores: clamd then reads a frame length from inside the zero-filled
    # member, 00 00 00 00, i.e. "end of stream", and scans a truncated stream. What the caller
    # sees depends on a race: clamd replies and hangs up while the client still sends.
    out["tar(zeros, eicar): pypi intact"] = str(intact)
    for n in (5, 30, 60):
        client = pypi_client(clamd, "unix", timeout=10, inject_partial_at=n)
        try:
            one_partial = str(client.instream(io.BytesIO(sample)))
        except Exception as exc:  # report whatever the library does
            one_partial = f"raised {type(exc).__name__}: {exc}"
        out[f"tar(zeros, eicar): pypi, send() #{n} partial"] = \
            f"{one_partial} (after {client.spy.calls} send() calls)"
    ours = scan_stream(sample, address=clamd.address, timeout_s=10)
    out["tar(zeros, eicar): ours"] = f"{ours.status.name} {ours.signature}"

    over = bytes(clamd.stream_max_bytes + 1)
    try:
        pypi_over = str(pypi_client(clamd, "unix", timeout=60).instream(io.BytesIO(over)))
    except Exception as exc:
        pypi_over = f"raised {type(exc).__module__}.{type(exc).__name__}: {exc}"
    ours_over = scan_stream(over, address=clamd.address, timeout_s=60)
    out["StreamMaxLength+1: pypi"] = pypi_over
    out["StreamMaxLength+1: ours"] = f"{ours_over.status.name} {ours_over.error}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--size-mib", type=int, default=30)
    ap.add_argument("--session-messages", type=int, default=100)
    ap.add_argument("--json", type=Path,
                    default=Path(__file__).parent / "results" / "clamd_client.json")
    args = ap.parse_args()

    payload = random.Random(162).randbytes(args.size_mib * MiB)
    report: dict[str, Any] = {
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "kernel": platform.release(), "pypi_clamd": pyclamd.__version__ or "1.0.2"},
        "payload_bytes": len(payload), "runs": args.runs,
    }
    with tempfile.TemporaryDirectory(prefix="mw-bench-clamd-", dir="/tmp") as d, \
            ClamdInstance(Path(d), inet=True, disable_cache=True) as clamd:
        report["clamd_startup_s"] = clamd.startup_s
        report["clients"] = bench_clients(clamd, payload, args.runs)
        report["chunk_sizes_unix"] = bench_chunk_sizes(clamd, payload, args.runs)
        report["session"] = bench_session(clamd, args.session_messages)
        report["correctness"] = check_correctness(clamd)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_markdown(report)


def print_markdown(r: dict[str, Any]) -> None:
    print(f"payload {r['payload_bytes']} bytes random, {r['runs']} runs, clamd started in "
          f"{r['clamd_startup_s'] * 1000:.0f} ms; {r['host']}\n")
    print("median (min-max) ms per 30 MiB scan\n")
    print("| transport | client | wall ms | client CPU ms | clamd CPU ms | results |")
    print("|---|---|---|---|---|---|")
    for transport, clients in r["clients"].items():
        for name, s in clients.items():
            label = "PyPI clamd 1.0.2 (1 KiB send)" if name == "pypi" else "ours (256 KiB)"
            print(f"| {transport} | {label} | {ms(s, 'wall_s')} | {ms(s, 'client_cpu_s')} | "
                  f"{ms(s, 'clamd_cpu_s')} | {','.join(s['results'])} |")
    for transport, clients in r["clients"].items():
        p = clients["pypi"]
        print(f"\nPyPI clamd over {transport}: {p['send_calls_per_scan']} send() calls per scan, "
              f"{p['partial_sends_total']} partial sends observed in {p['runs']} scans")
    print("\n| chunk size (ours, unix) | wall ms | client CPU ms | clamd CPU ms |")
    print("|---|---|---|---|")
    for size, s in r["chunk_sizes_unix"].items():
        print(f"| {int(size) // 1024} KiB | {ms(s, 'wall_s')} | {ms(s, 'client_cpu_s')} | "
              f"{ms(s, 'clamd_cpu_s')} |")
    print("\n| one message, 6 parts | wall ms | client CPU ms | clamd CPU ms |")
    print("|---|---|---|---|")
    for name, s in r["session"].items():
        print(f"| {name} | {ms(s, 'wall_s')} | {ms(s, 'client_cpu_s')} | "
              f"{ms(s, 'clamd_cpu_s')} |")
    print("\ncorrectness:")
    for k, v in r["correctness"].items():
        print(f"- {k}: {v}")


if __name__ == "__main__":
    main()
