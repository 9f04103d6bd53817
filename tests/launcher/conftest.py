"""Fixtures for the launcher tests: moto in server mode and a Docker registry, both on 127.0.0.1.

These tests run in `.venv-launcher` (`make test-launcher`): the SageMaker SDK 3.x and
moto live there, not in the training venv. Nothing here talks to a non-loopback address:
every AWS client points at the moto server through AWS_ENDPOINT_URL, with fake keys.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import free_port
from tests.prerequisites import missing, require


def require_launcher_venv() -> None:
    """Skip a test module outside .venv-launcher (the SDK 3.x and moto live only there); fail it under CI."""
    for module in ("sagemaker.train", "moto"):
        try:
            importlib.import_module(module)
            continue
        except ImportError as exc:
            reason = str(exc)
        missing(f"{module} cannot be imported ({reason}): the launcher tests run in .venv-launcher, which "
                "`make test-launcher` creates and uses")


REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
SERVE_IMAGE = os.environ.get("SERVE_IMAGE", "dogbreed-serve:latest")
TRAIN_IMAGE = os.environ.get("TRAIN_IMAGE", "dogbreed-train:latest")


def run_in_training_venv(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``.venv/bin/python *args`` (torch lives there, not in this venv), with that venv's own imports."""
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make venv` creates it")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server (every AWS API it has) on 127.0.0.1, for this session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch, tmp_path) -> dict[str, str]:
    """Fake credentials and a region, every client sent to moto; no shared config files."""
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ACCOUNT_ID", "ECR_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not _docker_ok():
        pytest.fail("no Docker engine answers; .ci/run starts one")


@pytest.fixture(scope="session")
def serve_image(docker_engine) -> str:
    if subprocess.run(["docker", "image", "inspect", SERVE_IMAGE], capture_output=True).returncode != 0:
        pytest.fail(f"image {SERVE_IMAGE} is missing; run `make build` first")
    return SERVE_IMAGE


@pytest.fixture(scope="session")
def train_image(docker_engine) -> str:
    if subprocess.run(["docker", "image", "inspect", TRAIN_IMAGE], capture_output=True).returncode != 0:
        pytest.fail(f"image {TRAIN_IMAGE} is missing; run `make build` first")
    return TRAIN_IMAGE


def _registry_binary() -> str:
    """Debian's docker-registry (the CNCF distribution registry), installed with apt when missing."""
    binary = shutil.which("docker-registry")
    if binary:
        return binary
    require(shutil.which("apt-get") is not None,
            "docker-registry is not installed, and there is no apt-get to install it with: install the CNCF "
            "distribution registry as `docker-registry` on PATH")
    require(os.geteuid() == 0, "docker-registry is not installed, and apt-get needs root to install it: "
                               "sudo apt-get install docker-registry (CI runs as root and installs it)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "docker-registry"]):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    binary = shutil.which("docker-registry")
    assert binary, "apt-get installed docker-registry but it is not on PATH"
    return binary


class Registry:
    """A docker-registry process on 127.0.0.1 with its own config and storage."""

    def __init__(self, binary: str, root: Path, readonly: bool = False):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        maintenance = "  maintenance:\n    readonly:\n      enabled: true\n" if readonly else ""
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n"
            f"  filesystem:\n    rootdirectory: {root / 'data'}\n{maintenance}"
            f"http:\n  addr: {self.host}\n"
        )
        self.log = open(root / "registry.log", "w")
        # Not the Debian system service: a private process, ended by the fixture.
        self.process = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
                break
            except OSError:
                assert self.process.poll() is None, (root / "registry.log").read_text()
                assert time.monotonic() < deadline, "docker-registry did not answer in 30 s"
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="session")
def registry_binary() -> str:
    return _registry_binary()


@pytest.fixture(scope="session")
def registry(registry_binary, docker_engine, tmp_path_factory) -> Iterator[Registry]:
    reg = Registry(registry_binary, tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def readonly_registry(registry_binary, docker_engine, tmp_path_factory) -> Iterator[Registry]:
    """A registry that refuses every push (maintenance read-only mode)."""
    reg = Registry(registry_binary, tmp_path_factory.mktemp("readonly-registry"), readonly=True)
    yield reg
    reg.stop()


@pytest.fixture
def remove_sdk_containers(train_image, serve_image):
    """The SDK's local mode leaves its stopped compose containers behind: remove this test's."""
    def exited() -> set[str]:
        ids = set()
        for image in (train_image, serve_image):
            ids |= set(subprocess.run(["docker", "ps", "-aq", "--filter", f"ancestor={image}", "--filter",
                                       "status=exited"], capture_output=True, text=True).stdout.split())
        return ids
    before = exited()
    yield
    new = exited() - before
    if new:
        subprocess.run(["docker", "rm", *new], capture_output=True)
