"""The training image under the SageMaker training contract, on real photos."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dogbreed.job_outputs import TRIAL_DIR
from dogbreed.tools.opt_ml import build_tree
from tests.docker.conftest import QUICK_HYPERPARAMETERS, docker, run_training

BREEDS = ["Beagle", "Siberian husky", "Toy poodle"]


def test_trains_on_real_photos_and_writes_the_model(trained_run):
    model_dir = trained_run.model_dir
    assert trained_run.failure is None
    for name in ("model.pt", "model.onnx", "model.int8.onnx", "model.json"):
        assert (model_dir / name).stat().st_size > 0, name
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["classes"] == BREEDS
    # The int8 export, measured on all 86 validation photos; the fp32 figure is the job's own.
    int8 = meta["int8"]
    assert int8["file"] == "model.int8.onnx" and int8["valid_images"] == 86 and int8["calibration_images"] == 128
    assert int8["fp32_valid_top1"] == pytest.approx(meta["metrics"]["valid_accuracy"], abs=1e-6)
    assert (model_dir / "model.int8.onnx").stat().st_size < (model_dir / "model.onnx").stat().st_size / 3
    assert meta["arch"] == "efficientnet_lite0"
    assert meta["preprocessing"]["crop_size"] == 224
    assert meta["preprocessing"]["mean"] == pytest.approx([127 / 255] * 3)
    assert "loaded efficientnet_lite0 weights from /opt/venv/" in trained_run.log  # the installed package's
    # Real transfer learning: two epochs of the head on cached features tell the breeds apart.
    assert meta["metrics"]["test_accuracy"] >= 0.93 and meta["metrics"]["valid_accuracy"] >= 0.93
    # int8 classifies the validation photos within a photo or two of fp32.
    assert int8["int8_valid_top1"] >= int8["fp32_valid_top1"] - 2.5 / 86
    out = trained_run.opt_ml / "output" / "data"
    # The reported accuracy is the test confusion matrix's: hits on the diagonal over all.
    rows = [line.split(",")[1:] for line in (out / "test" / "confusion_matrix.csv").read_text().splitlines()[1:]]
    counts = [[int(v) for v in row] for row in rows]
    total = sum(map(sum, counts))
    assert total == sum(1 for _ in (trained_run.opt_ml / "input" / "data" / "test").rglob("*.jpg"))
    assert meta["metrics"]["test_accuracy"] == pytest.approx(sum(counts[i][i] for i in range(3)) / total, abs=1e-6)  # float32
    for split in ("valid", "test"):
        matrix = (out / split / "confusion_matrix.csv").read_text().splitlines()
        assert all(b in matrix[0] for b in BREEDS)
        assert len(matrix) == 1 + len(BREEDS)
        assert len((out / split / "per_class_accuracy.csv").read_text().splitlines()) == 1 + len(BREEDS)
    assert json.loads((out / "metrics.json").read_text())["history"]


def test_log_lines_match_the_documented_metric_regexes(trained_run):
    from dogbreed.metric_lines import METRIC_DEFINITIONS

    found = {}
    for definition in METRIC_DEFINITIONS:
        matches = re.findall(definition["Regex"], trained_run.log)
        found[definition["Name"]] = matches
    for name in ("train_loss", "valid_loss", "valid_accuracy"):
        assert len(found[name]) == 2, (name, found[name])  # one per epoch
    assert len(found["test_accuracy"]) == 1
    meta = json.loads((trained_run.model_dir / "model.json").read_text())
    assert float(found["test_accuracy"][0]) == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-3)


# What reads as a fault in a log. A healthy job on this data logs none: no allow-list, since each
# library's noise that once matched (kineto's "USDT: profiler_start" and "ERROR: gpuGetDeviceCount
# failed", sagemaker-training's "Failed to parse hyperparameter ... to Json") is silenced at its source.
FAULT_WORDS = re.compile(r"error|warn|fail|usdt", re.IGNORECASE)


def test_a_healthy_jobs_log_has_no_error_warning_or_failure_lines(trained_run):
    """The only warnings are the data check's, one per kind of finding on these photos (the shared set
    holds small photos, identical ones and files in two splits: data_check.json lists them)."""
    lines = trained_run.log.splitlines()
    # The hyperparameters line echoes values such as on_leakage=warn.
    expected = re.compile(r" (data check|hyperparameters): ")
    faults = [line for line in lines if FAULT_WORDS.search(line) and not expected.search(line)]
    assert not faults, "lines that read as faults in a healthy job's log:\n" + "\n".join(faults)
    check = json.loads((trained_run.opt_ml / "output" / "data" / "data_check.json").read_text())
    kinds = sum(bool(check[kind]) for kind in ("small", "grey", "cmyk", "duplicates", "leaks"))
    assert kinds and sum("WARNING" in line and "data check: " in line for line in lines) == kinds


def test_onnx_model_matches_pytorch_on_real_photos(trained_run, real_photos):
    import onnxruntime as ort
    import torch

    from dogbreed.architectures import architecture
    from dogbreed.artifacts import ModelMetadata
    from dogbreed.images import open_image
    from dogbreed.training.model import build_network

    meta = ModelMetadata.load(trained_run.model_dir)
    net = build_network(architecture(meta.arch), len(meta.classes))
    net.load_state_dict(torch.load(trained_run.model_dir / "model.pt", map_location="cpu"))
    net.eval()
    batch = np.stack([meta.preprocessing(open_image(p)) for p in real_photos])
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(trained_run.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": batch})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_the_least_a_tree_can_give_trains_as_one_host(train_image, dogs3, fake_resnet18_weights, tmp_path):
    """One job for three ways a tree arrives with less than the console's: started with no arguments (SDK v3
    local mode), hyperparameters JSON-encoded (newer SDKs, SageMaker's own keys among them), and no
    resourceconfig.json (a tree made by hand)."""
    hps = {k: json.dumps(v) for k, v in dict(QUICK_HYPERPARAMETERS, epochs="1").items()}
    hps["batch_size"] = "16"  # a bare JSON number
    hps["sagemaker_job_name"] = json.dumps("job-1")  # SageMaker's own keys are accepted
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", hps, fake_resnet18_weights)
    (opt_ml / "input" / "config" / "resourceconfig.json").unlink()
    run = run_training(train_image, opt_ml, command=[])
    assert run.returncode == 0, run.log[-3000:]
    assert run.log.count("one host, algo-1: /opt/ml/input/config/resourceconfig.json is missing") == 1, run.log[-3000:]
    assert (opt_ml / "model" / "model.onnx").exists()


@pytest.mark.parametrize(
    "case, change, reason",
    [
        ("missing valid channel", "no_valid", r"valid"),
        ("unknown hyperparameter", "bad_hp", r"learning_rate"),
        ("bad hyperparameter value", "bad_value", r"lr"),
        ("empty class folder", "empty_class", r"002\.Siberian_husky|Siberian"),
        ("no pretrained weights", "no_weights", r"weights"),
        ("malformed hyperparameters.json", "bad_hp_file", r"hyperparameters\.json is not valid JSON"),
    ],
)
def test_failures_write_a_one_line_reason_and_exit_non_zero(
    train_image, dogs3, fake_resnet18_weights, tmp_path, case, change, reason
):
    hps = dict(QUICK_HYPERPARAMETERS, epochs="1")
    weights = fake_resnet18_weights
    if change == "bad_hp":
        hps["learning_rate"] = "0.1"
    if change == "bad_value":
        hps["lr"] = "-1"
    if change == "no_weights":
        hps["pretrained"] = "imagenet"
        weights = None
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", hps, weights)
    data = opt_ml / "input" / "data"
    if change == "bad_hp_file":
        (opt_ml / "input" / "config" / "hyperparameters.json").write_text("{not json")
    if change == "no_valid":
        subprocess.run(["rm", "-rf", str(data / "valid")], check=True)
    if change == "empty_class":
        for split in ("train", "valid", "test"):
            for f in (data / split / "002.Siberian_husky").iterdir():
                f.unlink()
    # --network none: the weights download must fail here even where a network exists.
    run = run_training(train_image, opt_ml, extra_args=["--network", "none"], timeout=300)
    assert run.returncode != 0, f"{case}: exited 0\n{run.log[-2000:]}"
    failure = run.failure
    assert failure is not None, f"{case}: no failure file\n{run.log[-2000:]}"
    assert len(failure.strip().splitlines()) == 1, failure
    assert re.search(reason, failure), (case, failure)
    assert "Traceback" not in failure
    assert not (opt_ml / "model" / "model.onnx").exists()


def start_training(image: str, opt_ml) -> str:
    """``docker run -d`` the training image over ``opt_ml`` with Docker's defaults; its name."""
    name = f"dogbreed-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-v", f"{opt_ml}:/opt/ml", image, "train")
    return name


def wait_until(name: str, happened: Callable[[], bool], what: str, timeout: float = 300) -> None:
    """Poll ``happened()`` until it is true; fail, with the container's log, if ``name`` exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not happened():
        if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
            pytest.fail(f"the container exited before {what}:\n{docker('logs', name, check=False).stdout[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s:\n"
                        f"{docker('logs', name, check=False).stdout[-3000:]}")
        time.sleep(0.2)


def wait_for_log(name: str, text: str, timeout: float = 300) -> None:
    wait_until(name, lambda: text in docker("logs", name, check=False).stdout, f"the log line {text!r}", timeout)


def trained_steps(opt_ml: Path, epoch: int) -> int:
    """The training steps of ``epoch`` that the job's smdebug trial shows finished.

    With ``debug`` on (the default) the job's hook records the loss at every step, training
    and validation, and smdebug writes a step's index file (``index/*/<step>_<worker>.json``,
    moved into place whole) when the next step starts. An epoch is a run of training steps
    followed by its validation steps. Only the trial of the first host has them.
    """
    index = opt_ml / "output" / "data" / TRIAL_DIR / "index"
    modes = [json.loads(path.read_text())["meta"]["mode"] for path in sorted(index.glob("*/*.json"))]
    epochs = [len(list(run)) for mode, run in itertools.groupby(modes) if mode == "TRAIN"]
    return epochs[epoch - 1] if len(epochs) >= epoch else 0


def wait_for_training_in_epoch(name: str, opt_ml: Path, epoch: int, timeout: float = 600) -> None:
    """Wait until ``epoch`` has trained its first batch (the trial shows it once the second starts): the job
    is then inside the epoch's training pass, with most of it to go (408 photos: 13 batches of 32, or more).
    The wait allows ten minutes: two hosts sharing two busy cores have taken over five for epoch 1."""
    wait_until(name, lambda: trained_steps(opt_ml, epoch) >= 1, f"a trained batch of epoch {epoch}", timeout)


def test_sigterm_saves_a_checkpoint_and_a_restart_resumes(train_image, dogs3, fake_resnet18_weights, tmp_path):
    # features off: every epoch decodes the photos, so epoch 2 lasts long enough to be stopped in.
    hps = dict(QUICK_HYPERPARAMETERS, epochs="3", features="off")
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", hps, fake_resnet18_weights)
    name = start_training(train_image, opt_ml)
    try:
        wait_for_training_in_epoch(name, opt_ml, 2)  # a batch of epoch 2 trained, more to come
        started = time.monotonic()
        docker("stop", "-t", "25", name)  # SIGTERM, then SIGKILL after 25 s
        assert time.monotonic() - started < 25, "the job did not stop on SIGTERM"
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout)
        logs = docker("logs", name, check=False)
        assert code == 143, (code, logs.stdout[-2000:], logs.stderr[-2000:])
        assert "SIGTERM: stopped during epoch 2" in logs.stdout
        assert "Traceback" not in logs.stdout + logs.stderr
    finally:
        docker("rm", "-f", name, check=False)
    assert (opt_ml / "checkpoints" / "checkpoint.pt").exists()
    assert not (opt_ml / "output" / "failure").exists()

    resumed = run_training(train_image, opt_ml)
    assert resumed.returncode == 0, resumed.log[-3000:]
    resumed_at = re.search(r"resuming from \S+ in epoch 2, after (\d+) of its (\d+) training images", resumed.log)
    assert resumed_at, resumed.log[-3000:]
    assert 0 < int(resumed_at[1]) < int(resumed_at[2]), resumed_at[0]  # from the middle of epoch 2
    assert "epoch=1 " not in resumed.log, "the restarted job trained epoch 1 again"
    assert "epoch=2 " in resumed.log and "epoch=3 " in resumed.log
    assert (opt_ml / "model" / "model.onnx").exists()


def test_sigterm_while_computing_features_exits_143_and_a_restart_finishes(
        train_image, dogs3, fake_resnet18_weights, tmp_path):
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", dict(QUICK_HYPERPARAMETERS, epochs="1"), fake_resnet18_weights)
    name = start_training(train_image, opt_ml)
    try:
        # Stopped at once: no step of the pass shows outside the container, and 2 x 408 photos take seconds.
        wait_for_log(name, "features: train: computing 2 view(s) of 408 images")
        docker("stop", "-t", "25", name)
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout)
        logs = docker("logs", name, check=False)
    finally:
        docker("rm", "-f", name, check=False)
    assert code == 143, (code, logs.stdout[-2000:], logs.stderr[-2000:])
    assert "SIGTERM: stopped while computing features" in logs.stdout
    assert "Traceback" not in logs.stdout + logs.stderr
    assert not (opt_ml / "output" / "failure").exists()
    assert not list((opt_ml / "output" / "data" / "features").glob("train-*.pt"))

    resumed = run_training(train_image, opt_ml)
    assert resumed.returncode == 0, resumed.log[-3000:]
    assert "features: train: computing" in resumed.log and (opt_ml / "model" / "model.onnx").exists()


def test_a_killed_loader_worker_fails_the_job_at_once(train_image, dogs3, fake_resnet18_weights, tmp_path):
    """SIGKILL one DataLoader worker in the container (the OOM killer's way): exit 1, one line, no hang."""
    # features off: the image loader's workers then run in every epoch.
    hps = dict(QUICK_HYPERPARAMETERS, epochs="3", features="off")
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", hps, fake_resnet18_weights)
    name = start_training(train_image, opt_ml)
    try:
        wait_for_training_in_epoch(name, opt_ml, 1)  # the loader's workers are at work
        kill = ("import os, signal, psutil; worker = psutil.Process(1).children()[0]; "
                "os.kill(worker.pid, signal.SIGKILL); print(worker.pid)")
        pid = docker("exec", name, "python", "-c", kill).stdout.strip()
        code = int(docker("wait", name, timeout=120).stdout)
        logs = docker("logs", name, check=False).stdout
    finally:
        docker("rm", "-f", name, check=False)
    assert code == 1, logs[-3000:]
    failure = (opt_ml / "output" / "failure").read_text()
    assert failure.count("\n") == 1 and "data loading failed" in failure and pid in failure, failure
    assert not (opt_ml / "model" / "model.onnx").exists()


def test_ca_bundle_secret_never_lands_in_the_image(train_image):
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", train_image).stdout
    assert "ca-certificates.crt" not in history and "ca_bundle" not in history.replace("id=ca_bundle", "")
    probe = docker("run", "--rm", "--entrypoint", "sh", train_image, "-c",
                   "ls /run/secrets 2>/dev/null; which gcc || true")
    assert probe.stdout.strip() == "", probe.stdout


def test_help_lists_the_hyperparameters(train_image):
    out = docker("run", "--rm", train_image, "python", "-m", "dogbreed.training", "--help").stdout
    for flag in ("--lr", "--batch_size", "--epochs", "--patience", "--arch", "--pretrained", "--freeze",
                 "--num_workers", "--loader_timeout", "--seed"):
        assert flag in out, flag


USER_SCRIPT = '''
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--fail", type=int, default=0)
args = parser.parse_args()
if args.fail:
    print("the user's script fails on purpose", file=sys.stderr)
    sys.exit(args.fail)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w") as f:
    json.dump({"epochs": args.epochs, "train": os.environ["SM_CHANNEL_TRAIN"], "hosts": json.loads(os.environ["SM_HOSTS"])}, f)
print("user script done")
'''


@pytest.mark.parametrize("fail", [0, 3])
def test_script_mode_runs_the_users_own_script_unchanged(train_image, dogs3, tmp_path, fail):
    """sagemaker_program + sagemaker_submit_directory: the toolkit runs the user's script, not our job."""
    hps = {"sagemaker_program": "user_train.py", "sagemaker_submit_directory": "/opt/ml/code", "epochs": "7",
           "fail": str(fail)}
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", hps)
    (opt_ml / "code").mkdir()
    (opt_ml / "code" / "user_train.py").write_text(USER_SCRIPT)
    run = run_training(train_image, opt_ml, timeout=300)
    if not fail:
        assert run.returncode == 0, run.log[-3000:]
        assert "user script done" in run.log and "dogbreed.training: hyperparameters" not in run.log
        seen = json.loads((opt_ml / "model" / "seen.json").read_text())
        assert seen == {"epochs": 7, "train": "/opt/ml/input/data/train", "hosts": ["algo-1"]}
    else:
        assert run.returncode == 1
        # The toolkit's own failure file, as on SageMaker: the script's exit code and command.
        assert "ExitCode 3" in (run.failure or "") and "user_train.py" in run.failure, run.failure
        assert "the user's script fails on purpose" in run.log


def test_a_bad_hyperparameter_still_exits_2_through_the_toolkit(train_image, dogs3, fake_resnet18_weights, tmp_path):
    opt_ml = build_tree(dogs3, tmp_path / "opt_ml", dict(QUICK_HYPERPARAMETERS, lr="-1"), fake_resnet18_weights)
    run = run_training(train_image, opt_ml, timeout=300)
    assert run.returncode == 2, run.log[-2000:]
    assert run.failure.startswith("hyperparameter lr=") and run.failure.count("\n") == 1, run.failure
    assert not (opt_ml / "output" / "success").exists()


def run_two_hosts(train_image, trees: dict, stop_in_epoch: int | None = None) -> tuple[list[int], list[str]]:
    """Run one training container per tree as algo-1, algo-2 on a fresh Docker network; exit codes and logs.

    ``stop_in_epoch``: once algo-1 has trained a batch of that epoch, stop both containers as SageMaker
    stops a job (SIGTERM).
    """
    network = f"dogbreed-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", network)
    names = []
    try:
        for host, opt_ml in trees.items():
            (opt_ml / "input" / "config" / "resourceconfig.json").write_text(json.dumps(
                {"current_host": host, "hosts": sorted(trees), "network_interface_name": "eth0"}))
            names.append(f"{network}-{host}")
            docker("run", "-d", "--name", names[-1], "--network", network, "--network-alias", host,
                   "--hostname", host, "-v", f"{opt_ml}:/opt/ml", train_image, "train")
        if stop_in_epoch:
            wait_for_training_in_epoch(names[0], trees["algo-1"], stop_in_epoch)
            stoppers = [subprocess.Popen(["docker", "stop", "-t", "60", name]) for name in names]
            for stopper in stoppers:
                stopper.wait(timeout=120)
        codes = [int(docker("wait", name, timeout=900).stdout) for name in names]
        logs = [docker("logs", name, check=False) for name in names]
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)
        docker("network", "rm", network, check=False)
    return codes, [log.stdout + log.stderr for log in logs]


def test_sigterm_stops_both_hosts_at_the_same_batch_with_a_checkpoint(
        train_image, dogs3, fake_resnet18_weights, tmp_path):
    hps = dict(QUICK_HYPERPARAMETERS, epochs="3", features="off", batch_size="4")
    trees = {host: build_tree(dogs3, tmp_path / host, hps, fake_resnet18_weights) for host in ("algo-1", "algo-2")}
    codes, out = run_two_hosts(train_image, trees, stop_in_epoch=2)
    assert codes == [143, 143], (codes, out[0][-2500:], out[1][-2500:])
    assert "SIGTERM: stopped during epoch 2" in out[0]
    for host in trees:
        assert not (trees[host] / "output" / "failure").exists(), (trees[host] / "output" / "failure").read_text()
    assert (trees["algo-1"] / "checkpoints" / "checkpoint.pt").is_file()
    assert not (trees["algo-2"] / "checkpoints" / "checkpoint.pt").exists()


def test_a_failure_on_one_host_ends_both_with_a_failure_file(train_image, dogs3, fake_resnet18_weights, tmp_path):
    hps = dict(QUICK_HYPERPARAMETERS, epochs="1", features="off", image_size="64", resize_size="72",
               distributed_timeout="60")
    trees = {host: build_tree(dogs3, tmp_path / host, hps, fake_resnet18_weights) for host in ("algo-1", "algo-2")}
    subprocess.run(["rm", "-rf", str(trees["algo-2"] / "input" / "data" / "valid")], check=True)
    started = time.monotonic()
    codes, out = run_two_hosts(train_image, trees)
    assert codes[0] != 0 and codes[1] != 0, (codes, out[0][-2000:], out[1][-2000:])
    assert time.monotonic() - started < 300
    assert "valid channel is missing" in (trees["algo-2"] / "output" / "failure").read_text()
    assert (trees["algo-1"] / "output" / "failure").read_text().strip(), out[0][-2000:]
    assert not (trees["algo-1"] / "model" / "model.pt").exists()


def test_two_hosts_train_as_one_host_with_their_summed_batch(train_image, dogs3, fake_resnet18_weights, tmp_path):
    """algo-1 and algo-2 on a Docker network, SageMaker's resourceconfig.json on each: one gloo process
    group (torchrun through sagemaker-training), and the model of one host whose batch is both of theirs."""
    hps = dict(QUICK_HYPERPARAMETERS, epochs="2", features="off", batch_size="8", image_size="64",
               resize_size="72")
    trees = {host: build_tree(dogs3, tmp_path / host, hps, fake_resnet18_weights) for host in ("algo-1", "algo-2")}
    codes, out = run_two_hosts(train_image, trees)
    assert codes == [0, 0], (codes, out[0][-3000:], out[1][-3000:])
    assert "world_size=2" in out[0]
    assert len(re.findall(r"^.*\bepoch=\d+ train_loss=", out[1], re.M)) == 0  # one copy of the metric lines
    assert (trees["algo-1"] / "model" / "model.pt").is_file()
    assert not (trees["algo-2"] / "model" / "model.pt").exists()  # only rank 0 writes

    single = build_tree(dogs3, tmp_path / "single", dict(hps, batch_size="16"), fake_resnet18_weights)
    run = run_training(train_image, single)
    assert run.returncode == 0, run.log[-3000:]
    import torch

    two = torch.load(trees["algo-1"] / "model" / "model.pt", weights_only=True)
    one = torch.load(single / "model" / "model.pt", weights_only=True)
    assert two.keys() == one.keys()
    for name in two:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(one["fc.weight"], torch.load(fake_resnet18_weights, weights_only=True)["fc.weight"][:3])
    h_two = json.loads((trees["algo-1"] / "output" / "data" / "metrics.json").read_text())["history"]
    h_one = json.loads((single / "output" / "data" / "metrics.json").read_text())["history"]
    for a, b in zip(h_two, h_one, strict=True):
        # The same hits: one host computes the accuracy in float32, the reduced one from the counts.
        assert abs(a["valid_accuracy"] - b["valid_accuracy"]) < 1e-6
        assert abs(a["train_accuracy"] - b["train_accuracy"]) < 1e-6
        assert abs(a["valid_loss"] - b["valid_loss"]) < 1e-4 and abs(a["train_loss"] - b["train_loss"]) < 1e-4
