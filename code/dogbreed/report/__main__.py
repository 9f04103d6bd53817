"""``python -m dogbreed.report DIR``: rebuild a training job's report from its output.

``DIR`` is a local ``/opt/ml`` tree (``DIR/output/data/metrics.json``) or an unpacked
``output.tar.gz`` (``DIR/metrics.json``). The smdebug trial and the profile are looked
for where the job writes them (``debug-output/`` and ``profile/`` beside
``metrics.json``) unless ``--trial`` / ``--profile`` say otherwise, e.g. a trial
downloaded from SageMaker Debugger's S3 output. The report goes beside ``metrics.json``
unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from dogbreed.job_outputs import EXPLANATIONS_DIR, METRICS_FILE, PROFILE_DIR, TRIAL_DIR
from dogbreed.report.page import build_report


def find_output_dir(directory: Path) -> Path:
    """The folder holding ``metrics.json``: ``DIR/output/data`` or ``DIR`` itself."""
    for candidate in (directory / "output" / "data", directory):
        if (candidate / METRICS_FILE).is_file():
            return candidate
    raise SystemExit(f"{directory} holds no {METRICS_FILE} (looked in {directory / 'output' / 'data'} and {directory})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dogbreed.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="an /opt/ml tree or an unpacked output.tar.gz")
    parser.add_argument("--trial", type=Path, help=f"the smdebug trial [default: {TRIAL_DIR}/ beside {METRICS_FILE}]")
    parser.add_argument("--profile", type=Path, help=f"the profile [default: {PROFILE_DIR}/ beside {METRICS_FILE}]")
    parser.add_argument("--out", type=Path, help="where report.html goes [default: beside metrics.json]")
    parser.add_argument(
        "--sagemaker-defaults",
        action="store_true",
        help="run the Debugger rules exactly as SageMaker does by default (the report otherwise "
        "compares losses per epoch, needs an absolute gap for Overfit, and does not apply "
        "PoorWeightInitialization to pretrained weights)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    output_dir = find_output_dir(args.dir)
    trial = args.trial or output_dir / TRIAL_DIR
    profile = args.profile or output_dir / PROFILE_DIR
    target = output_dir
    if args.out is not None and args.out.resolve() != output_dir.resolve():
        # The report reads the results beside metrics.json; copy what it reads.
        target = args.out
        target.mkdir(parents=True, exist_ok=True)
        for name in (METRICS_FILE, "valid", "test", EXPLANATIONS_DIR):
            source = output_dir / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, target / name)
    path = build_report(target, trial, profile, sagemaker_defaults=args.sagemaker_defaults)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
