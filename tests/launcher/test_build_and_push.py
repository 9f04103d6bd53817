"""scripts/build_and_push.sh against moto (ECR, STS) and a real Docker registry on 127.0.0.1.

The serving image (1.1 GB) is pushed for real. The training image is replaced by a tiny
stand-in tagged as the training repository: pushing its 6.3 GB to a local registry took
4 min 20 s here, too long for every CI run, and the push path is the same code for both.
The build (`make build`) is skipped with SKIP_BUILD=1; `make test` builds the images first.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
import uuid

import boto3
import pytest

from tests.launcher.conftest import require_launcher_venv

require_launcher_venv()

from tests.launcher.conftest import ACCOUNT, REGION, REPO

pytestmark = pytest.mark.docker
SCRIPT = REPO / "scripts" / "build_and_push.sh"
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def docker(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def tiny_image():
    """A one-file image made with `docker import` (no registry needed), unique per test."""
    name = f"dogbreed-push-test:{uuid.uuid4().hex[:12]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = name.encode()
        info = tarfile.TarInfo("standin.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(["docker", "import", "-", name], input=buffer.getvalue(), check=True, capture_output=True,
                   timeout=120)
    yield name
    docker("rmi", "-f", name, check=False)


def run_script(env_overrides: dict[str, str], docker_config) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_overrides)
    env["SKIP_BUILD"] = "1"
    env["DOCKER_CONFIG"] = str(docker_config)  # docker login must not touch ~/.docker
    # The awscli of this venv first on PATH: the script runs `aws`.
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    return subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def expected_tag() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                            cwd=REPO, check=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO).returncode != 0
    return commit + ("-dirty" if dirty else "")


def registry_digest(host: str, repository: str, tag: str) -> str:
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


@pytest.fixture
def untag_pushed(registry):
    """Remove the registry-named tags the test leaves in the local engine, pass or fail."""
    yield
    names = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                           text=True).stdout.split()
    mine = [n for n in names if n.startswith(f"{registry.host}/")]
    if mine:
        docker("rmi", *mine, check=False)


def test_pushes_both_images_tagged_with_the_commit_and_pulls_back_identical(
    aws_env, registry, serve_image, tiny_image, tmp_path, untag_pushed
):
    before = expected_tag()
    proc = run_script({"ECR_REGISTRY": registry.host, "TRAIN_IMAGE": tiny_image, "SERVE_IMAGE": serve_image},
                      tmp_path / "docker")
    assert proc.returncode == 0, proc.stderr[-4000:]
    uris = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    # HEAD may move while the script runs (a commit in a shared checkout): either is right.
    tag = uris.get("TRAIN_IMAGE_URI", "").rsplit(":", 1)[-1]
    assert tag in {before, expected_tag()}, (tag, before)
    assert uris == {
        "TRAIN_IMAGE_URI": f"{registry.host}/dogbreed-train:{tag}",
        "SERVE_IMAGE_URI": f"{registry.host}/dogbreed-serve:{tag}",
    }
    assert "Login Succeeded" in proc.stderr  # logged in with the ECR token (from moto)

    # The repositories were created in ECR (moto), with scan on push.
    ecr = boto3.client("ecr", region_name=REGION)
    repos = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
    for name in ("dogbreed-train", "dogbreed-serve"):
        assert repos[name]["imageScanningConfiguration"]["scanOnPush"] is True
        assert repos[name]["registryId"] == ACCOUNT  # the account came from STS

    for (local, repository) in ((tiny_image, "dogbreed-train"), (serve_image, "dogbreed-serve")):
        uri = f"{registry.host}/{repository}"
        digest = registry_digest(registry.host, repository, tag)
        assert registry_digest(registry.host, repository, "latest") == digest
        # Drop the local tags and pull back from the registry: the same manifest, and the
        # same image (config digest) as the local one that was pushed.
        docker("rmi", f"{uri}:{tag}", f"{uri}:latest")
        pulled = docker("pull", f"{uri}:{tag}").stdout
        assert digest in pulled, pulled
        assert f"{uri}@{digest}" in json.loads(docker("image", "inspect", f"{uri}:{tag}").stdout)[0]["RepoDigests"]
        same_id = docker("image", "inspect", "-f", "{{.Id}}", f"{uri}:{tag}", local).stdout.split()
        assert same_id[0] == same_id[1]
        docker("rmi", f"{uri}:{tag}")

    # A second run finds the repositories and pushes again without error.
    again = run_script({"ECR_REGISTRY": registry.host, "TRAIN_IMAGE": tiny_image, "SERVE_IMAGE": tiny_image},
                       tmp_path / "docker")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ECR repository dogbreed-train exists" in again.stderr
    for repository in ("dogbreed-train", "dogbreed-serve"):
        docker("rmi", f"{registry.host}/{repository}:{tag}", f"{registry.host}/{repository}:latest", check=False)


def test_missing_credentials_fail_clearly_before_any_push(aws_env, registry, tiny_image, tmp_path):
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    env.update(ECR_REGISTRY=registry.host, TRAIN_IMAGE=tiny_image, SERVE_IMAGE=tiny_image, IMAGE_TAG="nocreds")
    proc = run_script(env, tmp_path / "docker")
    assert proc.returncode == 1, proc.stderr  # die()
    assert "no usable AWS credentials" in proc.stderr, proc.stderr
    assert "pushing" not in proc.stderr


def test_missing_region_fails_clearly(aws_env, tiny_image, tmp_path):
    proc = run_script({"AWS_DEFAULT_REGION": "", "TRAIN_IMAGE": tiny_image, "SERVE_IMAGE": tiny_image},
                      tmp_path / "docker")
    assert proc.returncode == 1, proc.stderr  # die()
    assert "no AWS region" in proc.stderr, proc.stderr


def test_no_docker_engine_fails_clearly(aws_env, tmp_path):
    proc = run_script({"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}, tmp_path / "docker")
    assert proc.returncode == 1, proc.stderr  # die()
    assert "no Docker engine answers" in proc.stderr, proc.stderr


def test_a_refused_push_fails_clearly(aws_env, readonly_registry, tiny_image, tmp_path):
    proc = run_script({"ECR_REGISTRY": readonly_registry.host, "TRAIN_IMAGE": tiny_image,
                       "SERVE_IMAGE": tiny_image, "IMAGE_TAG": "refused"}, tmp_path / "docker")
    assert proc.returncode == 1, proc.stderr  # die()
    assert f"docker push {readonly_registry.host}/dogbreed-train:refused failed" in proc.stderr, proc.stderr
    assert "SERVE_IMAGE_URI" not in proc.stdout
    for repository in ("dogbreed-train", "dogbreed-serve"):
        for tag in ("refused", "latest"):
            docker("rmi", f"{readonly_registry.host}/{repository}:{tag}", check=False)
