"""The container suite (`make test-containers`): the topologies in containers/compose/
started with containers/compose.py from images built by containers/build.sh, on free
loopback ports, with their data in a temporary directory; stopped by container id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import procs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ["/usr/bin/python3", str(ROOT / "containers" / "compose.py")]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


@dataclass
class Topology:
    name: str
    project: str
    env: dict[str, str]
    data: Path
    ports: dict[str, int] = field(default_factory=dict)
    up_s: float = 0.0

    def ids(self) -> dict[str, str]:
        state = Path(self.env["MW_COMPOSE_STATE"]) / f"{self.project}.json"
        return dict(json.loads(state.read_text()))

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMPOSE, args[0], self.name, *args[1:], "--project",
                               self.project],
                              env=self.env, capture_output=True, text=True, timeout=300)

    def exec(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODMAN, "exec", self.ids()[service], *argv],
                              capture_output=True, text=True, timeout=120)

    def cli(self, service: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.exec(service, "mailwarden", "--config", "/etc/mailwarden/mailwarden.toml",
                         *args)

    def logs(self, service: str) -> str:
        out = subprocess.run([*PODMAN, "logs", self.ids()[service]], capture_output=True,
                             text=True, timeout=60)
        return out.stdout + out.stderr

    def delivered(self) -> list[str]:
        """Envelope recipients of every message the sink (smtp-sink -d) has written."""
        out: list[str] = []
        for f in sorted((self.data / "sink").glob("*")):
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("X-Rcpt-Args: "):
                    out.append(line.split("<", 1)[1].split(">", 1)[0])
        return out

    def wait_delivered(self, rcpt: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while rcpt not in self.delivered():
            assert time.monotonic() < deadline, f"{rcpt} never reached the sink"
            time.sleep(0.1)


def start(name: str, ports: list[str], **extra: str) -> Iterator[Topology]:
    if shutil.which("podman") is None:
        pytest.fail("podman missing: run `make test-containers`", pytrace=False)
    data = Path(tempfile.mkdtemp(prefix=f"mailwarden-{name}-"))
    data.chmod(0o755)
    (data / "sink").mkdir()
    (data / "sink").chmod(0o777)  # smtp-sink writes as user postfix
    chosen = {p: procs.free_port() for p in ports}
    env = {**os.environ, "MW_DATA": str(data), "MW_COMPOSE_STATE": str(data / "state"),
           "MW_AUTH": "false", "MW_XCLIENT": "yes", "MW_RATE_LIMIT": "3",
           **{p: str(v) for p, v in chosen.items()}, **extra}
    topo = Topology(name, f"mwtest-{name}-{os.getpid()}", env, data, chosen)
    t0 = time.monotonic()
    up = topo.compose("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        topo.up_s = time.monotonic() - t0
        print(f"\n{name}: {len(topo.ids())} containers up in {topo.up_s:.1f}s")
        yield topo
    finally:
        topo.compose("down")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def single() -> Iterator[Topology]:
    yield from start("single", ["MW_REDIS_PORT", "MW_CLAMD_PORT", "MW_SINK_PORT",
                                "MW_POLICYD_PORT", "MW_MILTER_PORT", "MW_SMTPD_PORT"])


@pytest.fixture(scope="module")
def ha() -> Iterator[Topology]:
    yield from start("ha", ["MW_REDIS_PORT", "MW_REPLICA_PORT", "MW_SENTINEL1_PORT",
                            "MW_SENTINEL2_PORT", "MW_SENTINEL3_PORT", "MW_CLAMD_PORT",
                            "MW_SINK_PORT", "MW_POLICYD1_PORT", "MW_MILTER1_PORT",
                            "MW_SMTPD1_PORT", "MW_POLICYD2_PORT", "MW_MILTER2_PORT",
                            "MW_SMTPD2_PORT"],
                     MW_DOWN_AFTER_MS="1000", MW_FAILOVER_TIMEOUT_MS="5000",
                     MW_ON_REDIS_ERROR="defer")
