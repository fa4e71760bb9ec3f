#!/usr/bin/python3
"""A small compose driver for mailwarden's topologies: `podman run` per service.

    containers/compose.py up   single|ha|FILE [--project NAME]
    containers/compose.py down single|ha|FILE [--project NAME]
    containers/compose.py kill single|ha|FILE SERVICE [--project NAME]
    containers/compose.py ps   single|ha|FILE [--project NAME]

It reads the same compose files podman-compose and docker compose read
(containers/compose/*.yml), the subset they use: image, command, environment,
volumes (bind mounts), ulimits, depends_on (start order), network_mode: host, and
`x-ready: tcp:HOST:PORT` (this driver waits until that port accepts before starting
the services that depend on it). `${VAR}` and `${VAR:-default}` are taken from the
environment. Every container is labelled with the project; `down` and `kill` act on
the container ids `up` recorded, never on names.

Why not podman-compose here (docs/deployment.md): these machines need runc, cgroupfs,
host networking and explicit ulimits on every podman call, readiness must be probed
rather than slept, and tests must stop exactly the containers they started.

Runs with Debian's python3 and python3-yaml (`make test-containers` installs them).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
STATE = Path(os.environ.get("MW_COMPOSE_STATE", "/run/mailwarden-compose"))


def interpolate(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        value = os.environ.get(name)
        if value is None or (value == "" and m.group(2) == ":-"):
            if default is None:
                if value is None:
                    raise SystemExit(f"compose: ${{{name}}} is not set")
                return value
            return default
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", sub, text)


def load(topology: str) -> tuple[Path, dict[str, Any]]:
    path = Path(topology)
    if not path.suffix:
        path = HERE / "compose" / f"{topology}.yml"
    doc = yaml.safe_load(interpolate(path.read_text()))
    return path, doc["services"]


def order(services: dict[str, Any]) -> list[str]:
    done: list[str] = []

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in done:
            return
        if name in stack:
            raise SystemExit(f"compose: dependency cycle at {name}")
        deps = services[name].get("depends_on", [])
        for dep in deps if isinstance(deps, list) else list(deps):
            visit(dep, (*stack, name))
        done.append(name)

    for name in services:
        visit(name)
    return done


def wait_ready(spec: str, cid: str, timeout_s: float = 90.0) -> None:
    """Until the port accepts; a container that exited meanwhile fails at once, with
    the tail of its log."""
    kind, _, addr = spec.partition(":")
    host, _, port = addr.rpartition(":")
    assert kind == "tcp", spec
    deadline = time.monotonic() + timeout_s
    checked = 0.0
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
        if time.monotonic() - checked > 1.0:
            checked = time.monotonic()
            state = subprocess.run([*PODMAN, "inspect", "-f", "{{.State.Running}}", cid],
                                   capture_output=True, text=True, check=False).stdout.strip()
            if state != "true":
                break
    log = subprocess.run([*PODMAN, "logs", "--tail", "20", cid], capture_output=True,
                         text=True, check=False)
    raise SystemExit(f"compose: {spec} not ready\n{log.stdout}{log.stderr}")


def run_args(project: str, name: str, svc: dict[str, Any], base: Path) -> list[str]:
    if svc.get("network_mode", "host") != "host":
        raise SystemExit(f"compose: {name}: only network_mode: host is supported here")
    args = [*PODMAN, "run", "-d", "--network=host", "--label", f"mailwarden.project={project}",
            "--name", f"{project}-{name}"]
    limits = {"nofile": 1024, "nproc": 1024}
    for k, v in (svc.get("ulimits") or {}).items():
        limits[k] = v["soft"] if isinstance(v, dict) else v
    for k, v in limits.items():
        args += ["--ulimit", f"{k}={v}:{v}"]
    env = svc.get("environment") or {}
    items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
    for k, v in items:
        # YAML reads an empty value as null and yes/no/true as booleans
        v = "" if v is None else {True: "true", False: "false"}.get(v, v) \
            if isinstance(v, bool) else v
        args += ["-e", f"{k}={v}"]
    for vol in svc.get("volumes") or []:
        src, _, rest = vol.partition(":")
        if src.startswith("."):
            src = str((base / src).resolve())
        Path(src).mkdir(parents=True, exist_ok=True) if not Path(src).exists() else None
        args += ["-v", f"{src}:{rest}"]
    if "entrypoint" in svc:
        args += ["--entrypoint", svc["entrypoint"]]
    args.append(svc["image"])
    cmd = svc.get("command") or []
    args += cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    return args


def state_file(project: str) -> Path:
    return STATE / f"{project}.json"


def up(topology: str, project: str) -> None:
    path, services = load(topology)
    STATE.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    try:
        for name in order(services):
            svc = services[name]
            out = subprocess.run(run_args(project, name, svc, path.parent), capture_output=True,
                                 text=True, check=False)
            if out.returncode:
                raise SystemExit(f"compose: {name}: {out.stderr.strip()}")
            ids[name] = out.stdout.strip().splitlines()[-1]
            state_file(project).write_text(json.dumps(ids))
            if "x-ready" in svc:
                wait_ready(svc["x-ready"], ids[name])
            print(f"{name} {ids[name][:12]}", flush=True)
    except BaseException:
        down(topology, project)
        raise


def down(topology: str, project: str) -> None:
    f = state_file(project)
    if not f.exists():
        return
    ids = json.loads(f.read_text())
    for name in reversed(list(ids)):
        subprocess.run([*PODMAN, "rm", "-f", "-t", "5", ids[name]], capture_output=True,
                       check=False)
    f.unlink()


def kill(topology: str, project: str, service: str) -> None:
    ids = json.loads(state_file(project).read_text())
    subprocess.run([*PODMAN, "kill", "--signal", "KILL", ids[service]], check=True,
                   capture_output=True)


def ps(topology: str, project: str) -> None:
    f = state_file(project)
    for name, cid in (json.loads(f.read_text()) if f.exists() else {}).items():
        print(name, cid[:12])


def main(argv: list[str]) -> int:
    project = "mw"
    if "--project" in argv:
        i = argv.index("--project")
        project = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, topology, *rest = argv
    if cmd == "up":
        up(topology, project)
    elif cmd == "down":
        down(topology, project)
    elif cmd == "kill":
        kill(topology, project, rest[0])
    elif cmd == "ps":
        ps(topology, project)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
