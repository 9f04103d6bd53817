"""The serving image's contents: its size, its code, and the dependencies it leaves out on purpose.

That the linked Java runtime holds every module MMS's frontend needs is proven by
test_serve_container.py, which starts MMS in this image and serves through it.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from tests.docker.conftest import docker

pytestmark = pytest.mark.docker

MAX_IMAGE_BYTES = 600 * 1000 * 1000  # 600 MB, as `docker images` counts
OMIT_FILE = REPO / "docker" / "serve" / "requirements.omit"
# pip check's line for a dependency that is declared but absent.
NOT_INSTALLED = re.compile(r"^(\S+) \S+ requires (\S+), which is not installed\.$")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def omitted_packages() -> set[str]:
    """The names in docker/serve/requirements.omit (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in OMIT_FILE.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def run_in_image(image: str, *command: str) -> str:
    """Run ``command`` in a throwaway container of ``image``; its stdout."""
    return docker("run", "--rm", "--entrypoint", command[0], image, *command[1:], timeout=120).stdout


def test_image_is_at_most_600_mb(serve_image):
    size = int(docker("image", "inspect", "--format", "{{.Size}}", serve_image, timeout=60).stdout)
    if size > MAX_IMAGE_BYTES:
        history = docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", serve_image, timeout=60).stdout
        pytest.fail(f"{serve_image} is {size / 1e6:.0f} MB, over {MAX_IMAGE_BYTES / 1e6:.0f} MB; layers:\n{history}")


def test_only_the_omitted_dependencies_are_missing(serve_image):
    """The lock is installed without dependency resolution: a dependency missing from it
    (say, one a new pin declares) would go unnoticed but for this check."""
    omitted = omitted_packages()
    proc = docker("run", "--rm", "--entrypoint", "pip", serve_image, "check", timeout=120, check=False)
    report = f"pip check in {serve_image} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    if proc.returncode == 0:
        return
    broken = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 1 and broken, report
    unexpected = [line for line in broken
                  if not ((match := NOT_INSTALLED.match(line)) and canonical(match.group(2)) in omitted)]
    assert not unexpected, report


def test_no_omitted_package_is_installed(serve_image):
    listing = "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
    installed = run_in_image(serve_image, "python", "-c", listing)
    present = {canonical(name) for name in installed.split()} & omitted_packages()
    assert not present, f"installed in {serve_image} although requirements.omit leaves them out: {sorted(present)}"


def test_model_server_runs_the_linked_java_runtime(serve_image):
    """MMS starts $JAVA_HOME/bin/java; the image holds no other Java runtime."""
    found = run_in_image(serve_image, "sh", "-c", 'echo "$JAVA_HOME"; command -v java; ls /usr/lib/jvm 2>/dev/null; :')
    assert found.split() == ["/opt/java", "/opt/java/bin/java"], found
    version = docker("run", "--rm", "--entrypoint", "java", serve_image, "-version", timeout=120)
    assert 'version "17.' in version.stderr, version.stderr


def test_holds_only_the_serving_code(serve_image):
    """serving/ and the bottom modules beside artifacts.py; tests/unit/test_serve_dockerfile.py says which."""
    listing = run_in_image(serve_image, "find", "/opt/dogbreed/dogbreed", "-name", "*.py")
    files = {line.removeprefix("/opt/dogbreed/dogbreed/") for line in listing.split()}
    assert {"__init__.py", "artifacts.py", "serving/serve.py", "serving/handler_service.py"} <= files, sorted(files)
    elsewhere = sorted(f for f in files if "/" in f and not f.startswith("serving/"))
    assert not elsewhere, f"{serve_image} holds code serving never runs: {elsewhere}"
