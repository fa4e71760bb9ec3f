"""Hand-written 7z/RAR listers against libarchive (libarchive-c over libarchive13).

Each measurement runs in a fresh child process, which lists one archive and
sniffs the first 64 KiB of every member, then reports its CPU time and the
growth of its peak RSS over an idle child that imported the same modules (so
C allocations, which tracemalloc cannot see, count too). The numbers are in
docs/decisions/archive-listing.md.

    .venv/bin/python -m benchmarks.archive_listing [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import io, json, resource, sys, time
which, path = sys.argv[1], sys.argv[2]
import libarchive
from mailwarden.inspect import DEFAULT_EXECUTABLE_EXTENSIONS, InspectLimits
from mailwarden.inspect.archives import Budget, Context, LimitReached, inspect_blob
data = open(path, "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.process_time()
outcome = ""
entries = 0
if which == "ours":
    limits = InspectLimits(DEFAULT_EXECUTABLE_EXTENSIONS)
    ctx = Context(limits, Budget(limits, time.monotonic() + 60, time.monotonic))
    try:
        inspect_blob(ctx, io.BytesIO(data), len(data), "a", 0)
    except LimitReached as exc:
        outcome = exc.detected
    entries = ctx.budget.entries
    outcome = outcome or ",".join(sorted({f.detected for f in ctx.findings})) or "clean"
elif which == "libarchive":
    deadline = time.monotonic() + 60
    try:
        with libarchive.memory_reader(data) as archive:
            for entry in archive:
                entries += 1
                got = 0
                for block in entry.get_blocks():
                    got += len(block)
                    if got >= 65536:
                        break
                if time.monotonic() > deadline or entries > 10000:
                    outcome = "stopped"
                    break
        outcome = outcome or "listed"
    except Exception as exc:
        outcome = type(exc).__name__ + ": " + str(exc)[:60]
cpu = time.process_time() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"cpu": cpu, "rss_kb": peak - base, "entries": entries, "outcome": outcome}))
"""


def corpus(tmp: Path) -> dict[str, bytes]:
    from tests.unit.inspect_corpus import clam_exe, rar5_service_flood, sevenzip_folder_bomb
    from tests.unit.test_inspect_builders import pdf, rar4, rar5, sevenzip

    exe = clam_exe()
    docs = {f"tai-lieu-{i}.pdf": pdf(pad=2000 + i) for i in range(100)}
    many = {f"d/{i}.txt": b"x" * (i % 50) for i in range(5000)}
    out = {
        "7z 100 PDFs (LZMA2)": sevenzip(tmp, docs, "-mx=5", name="docs.7z"),
        "7z 5000 small files": sevenzip(tmp, many, "-mx=5", name="many.7z"),
        "7z PE (BCJ2)": sevenzip(tmp, {"a.exe": exe * 50}, "-m0=BCJ2", "-m1=LZMA",
                                 "-m2=LZMA", "-m3=LZMA", "-mb0:1", "-mb0s1:2", "-mb0s2:3",
                                 name="bcj2.7z"),
        "7z PPMd": sevenzip(tmp, docs, "-m0=PPMd", name="ppmd.7z"),
        "RAR5 stored, 2 files": rar5([("a.txt", b"hello", False), ("b.pdf", exe, False)]),
        "RAR4 stored, 2 files": rar4([("a.txt", b"hello", False), ("b.pdf", exe, False)]),
        "bomb: 7z header of 2M folders (8 KB)": sevenzip_folder_bomb(2_000_000),
        "bomb: 7z header of 200k folders": sevenzip_folder_bomb(200_000),
        "bomb: RAR5 of 100k service headers": rar5_service_flood(100_000),
    }
    return out


def measure(which: str, path: Path) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", CHILD, which, str(path)],
                            capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        return {"cpu": float("nan"), "rss_kb": 0, "entries": 0,
                "outcome": f"died rc={result.returncode} {result.stderr.strip()[-80:]}"}
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = corpus(Path(tmp))
        print("| archive | size | lister | CPU s (median) | peak RSS growth | entries | outcome |")
        print("|---|---:|---|---:|---:|---:|---|")
        for name, data in cases.items():
            path = Path(tmp) / "case.bin"
            path.write_bytes(data)
            for which in ("ours", "libarchive"):
                runs = [measure(which, path) for _ in range(args.repeat)]
                runs.sort(key=lambda r: float(str(r["cpu"])))
                mid = runs[len(runs) // 2]
                print(f"| {name} | {len(data):,} | {which} | {float(str(mid['cpu'])):.3f} | "
                      f"{int(str(mid['rss_kb'])) / 1024:.1f} MB | {mid['entries']} | "
                      f"{mid['outcome']} |", flush=True)


if __name__ == "__main__":
    main()
