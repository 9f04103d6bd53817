"""The two servers bench/serve measures, as containers: dogbreed-serve and the seed-style baseline.

Each runs alone on a free loopback port with the model directory mounted read-only at
/opt/ml/model, as SageMaker runs a container (``docker run IMAGE serve``). With
``direct``, clients reach it at its own address on Docker's bridge instead, as SageMaker's
router reaches a container: the published port goes through docker-proxy, a userland copy
of every byte that would count against the server on the same CPUs. A server
counts as ready when ``/ping`` is 200 and a real photo is answered 200: MMS without a
front answers ``/ping`` before its workers have loaded the model, and the first
requests must not be counted as the model's.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_COMPOSE = REPO / "bench" / "baseline" / "compose.yml"
BASELINE_IMAGE = "dogbreed-bench-baseline:latest"
READY_LIMIT_S = 300


def ca_bundle() -> Path:
    """The CA bundle the builds get as a secret, chosen as the Makefile chooses it."""
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    return system if system.is_file() else REPO / "docker" / "no-extra-ca.pem"


def build_baseline(train_image: str, image: str = BASELINE_IMAGE) -> None:
    """Build the baseline image (bench/baseline) from ``train_image`` with BuildKit; cached layers make a rebuild quick."""
    env = {"CA_BUNDLE": str(ca_bundle()), "TRAIN_IMAGE": train_image, "BASELINE_IMAGE": image}
    proc = subprocess.run(["docker", "compose", "-f", str(BASELINE_COMPOSE), "build", "baseline"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"building the baseline image failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One running server container."""

    name: str
    url: str

    def logs(self) -> str:
        proc = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return proc.stdout + proc.stderr

    def log_lines(self, pattern: str) -> list[str]:
        """Log lines matching the regular expression ``pattern``."""
        return [line for line in self.logs().splitlines() if re.search(pattern, line)]

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=120)


def start(image: str, model_dir: Path, env: dict[str, str], photo: bytes, direct: bool = False) -> Server:
    """``docker run IMAGE serve`` with ``model_dir`` at /opt/ml/model; returns once ready (see module doc)."""
    server = Server(f"dogbreed-bench-{uuid.uuid4().hex[:8]}", "")
    port = free_port()
    cmd = ["docker", "run", "-d", "--name", server.name, "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{model_dir.resolve()}:/opt/ml/model:ro"]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    subprocess.run(cmd + [image, "serve"], check=True, capture_output=True, timeout=120)
    server.url = container_url(server.name) if direct else f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, photo)
    except BaseException:
        server.remove()
        raise
    return server


def container_url(name: str) -> str:
    """The container's own address on Docker's bridge (reachable from a Linux host, not Docker Desktop's)."""
    proc = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name],
                          capture_output=True, text=True, timeout=60)
    address = proc.stdout.strip()
    if not address:
        raise SystemExit(f"bench: container {name} has no bridge address ({proc.stderr.strip()}): use --published-port")
    return f"http://{address}:8080"


def _wait_ready(server: Server, photo: bytes) -> None:
    import requests

    deadline = time.monotonic() + READY_LIMIT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(server.url + "/ping", timeout=5).status_code == 200:
                answer = requests.post(server.url + "/invocations", data=photo,
                                       headers={"Content-Type": "image/jpeg"}, timeout=120)
                if answer.status_code == 200:
                    return
        except requests.RequestException:
            pass
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", server.name],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        if state != "true":
            raise SystemExit(f"{server.name} exited while starting:\n{server.logs()[-4000:]}")
        time.sleep(1)
    raise SystemExit(f"{server.name} was not ready within {READY_LIMIT_S} s:\n{server.logs()[-4000:]}")
