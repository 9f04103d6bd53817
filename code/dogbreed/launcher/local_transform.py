"""``transform --local``: the transform job's request run by the SDK's ``LocalSession`` on this machine.

The SDK's local transform job serves the model with the serving image (Docker), POSTs each
file of its input directory to ``/invocations`` and writes the answers as ``<name>.out``.
Where it falls short of the service, :func:`run_local` makes up for it:

* it reads only the files directly in its input directory: the inputs (at any depth) are
  handed to it as a flat folder of links, and each answer is written back as
  ``<output>/<key>.out``, where batch transform would write it;
* one file over ``MaxPayloadInMB`` ends the whole job (RuntimeError): such files are not
  handed to it and are reported as failed, as the service fails them alone;
* on any error it leaves the serving container running: :func:`run_local` stops it;
* it stops the container (``docker compose up``, terminated) but never removes it:
  :func:`run_local` does;
* it writes an error answer (4xx) to the ``.out`` as if it were a prediction:
  :func:`dogbreed.launcher.predictions.parse` tells them apart;
* it copies ``BatchStrategy`` from ``GET /execution-parameters`` as the container writes it
  (``SINGLE_RECORD``, AWS's spelling there) and then rejects it (ValueError): the request
  always names ``SingleRecord`` itself (:func:`~dogbreed.launcher.transform.transform_job_request`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from dogbreed.launcher import hosting, predictions
from dogbreed.launcher.transform import Outcome, TransformSpec, transform_job_request
from dogbreed.launcher.validation import LauncherError

# The SDK sizes a record with sys.getsizeof, not len: 33 bytes more for bytes, 49 for a
# text-looking file it decodes to str. A margin above both.
SDK_SIZE_OVERHEAD = 64


def _stage(spec: TransformSpec, keys: list[str], staged: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Link each input that fits into ``staged`` as ``NNNNNN``; returns ({name: key}, {key: why not})."""
    limit = spec.max_payload_mb * 1024 * 1024
    names, too_large = {}, {}
    for index, key in enumerate(keys):
        source = Path(spec.input) / key
        size = source.stat().st_size
        if size + SDK_SIZE_OVERHEAD >= limit:
            too_large[key] = f"{size} bytes: over --max-payload-mb {spec.max_payload_mb}, not sent"
            continue
        name = f"{index:06d}"
        os.symlink(source, staged / name)
        names[name] = key
    return names, too_large


def _ping_answer(port: int) -> str:
    """What the container answers on ``/ping`` (the serving image says why it is unhealthy)."""
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/ping", timeout=5) as response:
            return f"/ping answers {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read()[:500].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object: the text itself
            body = json.loads(body).get("error", body)
        return f"/ping answers {exc.code}: {body}"
    except OSError as exc:
        return f"/ping does not answer ({exc})"


def _stop_container(client, job_name: str) -> None:
    """Stop the job's serving container, which the SDK leaves running when the job raises."""
    job = type(client)._transform_jobs.get(job_name)  # the SDK keeps its local jobs in a class dict
    container = getattr(job, "container", None)
    if container is None or getattr(container, "container", None) is None:
        return  # it never started
    try:
        container.stop_serving()
    except Exception as exc:  # noqa: BLE001 - said, not raised: the job's own failure matters more
        print(f"warning: could not stop the local serving container ({exc!r}); see `docker ps`", file=sys.stderr)


def _remove_container(client, job_name: str) -> None:
    """``docker rm`` the job's stopped container (named ``<random>-<host>`` by the SDK)."""
    job = type(client)._transform_jobs.get(job_name)
    for host in getattr(getattr(job, "container", None), "hosts", []):
        found = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=-{host}$"], capture_output=True, text=True)
        ids = found.stdout.split()
        removed = subprocess.run(["docker", "rm", *ids], capture_output=True, text=True) if ids else found
        if removed.returncode != 0:
            print(
                f"warning: could not remove the local serving container {host}: {removed.stderr.strip()}",
                file=sys.stderr,
            )


def _run_sdk(spec: TransformSpec, port: int, staged_in: Path, staged_out: Path) -> tuple[str, str | None]:
    """The local transform job over ``staged_in``; returns its status and failure reason."""
    session = hosting.local_session(port)
    client = session.sagemaker_client
    client.create_model(
        ModelName=spec.job_name,
        PrimaryContainer={"Image": spec.image, "ModelDataUrl": spec.model_data, "Environment": {}},
    )
    request = transform_job_request(spec, f"file://{staged_in}", f"file://{staged_out}")
    try:
        client.create_transform_job(**request)  # runs the job to its end, then stops the container
        return client.describe_transform_job(spec.job_name)["TransformJobStatus"], None
    except Exception as exc:  # noqa: BLE001 - whatever ends the SDK's job is the job's failure reason
        reason = f"{type(exc).__name__}: {exc}"
        if "didn't launch" in str(exc):  # the SDK gave up waiting for /ping
            reason += f" ({_ping_answer(port)})"
        _stop_container(client, spec.job_name)
        return "Failed", reason
    except BaseException:  # Ctrl-C: the container must not outlive the command
        _stop_container(client, spec.job_name)
        raise
    finally:
        _remove_container(client, spec.job_name)
        client.delete_model(ModelName=spec.job_name)


def run_local(spec: TransformSpec, port: int = 8080) -> Outcome:
    """Run the job on this machine and gather ``<output>/predictions.jsonl``; needs Docker."""
    output = Path(spec.output)
    if output.is_dir() and any(output.iterdir()):
        raise LauncherError(f"--output {output} is not empty (an earlier run's?): pick an empty or new directory")
    store = predictions.LocalStore(Path(spec.input), output)
    keys = sorted(store.input_keys())
    if not keys:
        raise LauncherError(f"--input {spec.input} holds no files")
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dogbreed-transform-") as tmp:
        staged_in, staged_out = Path(tmp) / "input", Path(tmp) / "output"
        staged_in.mkdir()
        names, reasons = _stage(spec, keys, staged_in)
        status, failure = _run_sdk(spec, port, staged_in, staged_out) if names else ("Completed", None)
        for name, key in names.items():
            answer = staged_out / f"{name}{predictions.SUFFIX}"
            if answer.is_file():
                destination = output / f"{key}{predictions.SUFFIX}"
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(answer, destination)
    missing = "no output: the local transform job failed before this image" if failure else "no output"
    return Outcome(spec.job_name, status, failure, predictions.gather(store, missing, reasons, explain=spec.explain))
