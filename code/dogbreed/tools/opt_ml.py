"""Lay out a local ``/opt/ml`` tree, as SageMaker does, to run the training image anywhere.

    python -m dogbreed.tools.opt_ml DATA OUT [--hp lr=0.01 --hp epochs=3] [--pretrained FILE] [--resume]

``DATA`` is a dogImages-style folder (``train/``, ``valid/``, optional ``test/``, each with
one folder per class). The splits become the channels under ``OUT/input/data``: hard links
where the file system allows (no copy of a large data set), copies otherwise. The model,
output and (unless ``--resume``) checkpoint folders start empty, as on SageMaker.
Standard library only: it runs on the host before any image exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from dogbreed.input_channels import PRETRAINED_CHANNEL

SPLITS = ("train", "valid", "test")


def _link_tree(src: Path, dst: Path) -> int:
    """Mirror ``src`` into ``dst`` with hard links (copies across file systems)."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            if name.startswith("."):
                continue
            target = dst / rel / name
            try:
                os.link(Path(dirpath) / name, target)
            except OSError:
                shutil.copy2(Path(dirpath) / name, target)
            count += 1
    return count


def parse_hyperparameter(text: str) -> tuple[str, str]:
    """``key=value`` -> (key, value), values kept as strings as SageMaker sends them."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def build_tree(
    data: Path,
    out: Path,
    hyperparameters: dict[str, str] | None = None,
    pretrained: Path | None = None,
    resume: bool = False,
) -> Path:
    """Create ``out`` as a SageMaker ``/opt/ml`` tree for a training run on ``data``."""
    data, out = Path(data), Path(out)
    missing = [s for s in ("train", "valid") if not (data / s).is_dir()]
    if missing:
        raise SystemExit(f"{data} has no {' or '.join(missing)} folder; expected a dogImages-style data set")

    # Everything SageMaker would recreate per job starts empty.
    for sub in ("input", "model", "output"):
        shutil.rmtree(out / sub, ignore_errors=True)
    if not resume:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for sub in ("input/config", "model", "output/data", "checkpoints"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    channels = {}
    for split in SPLITS:
        if (data / split).is_dir():
            n = _link_tree(data / split, out / "input" / "data" / split)
            channels[split] = {"ContentType": "application/x-image", "TrainingInputMode": "File"}
            print(f"channel {split}: {n} files")
    if pretrained is not None:
        pretrained = Path(pretrained)
        if not pretrained.is_file():
            raise SystemExit(f"pretrained weights file {pretrained} does not exist")
        dest = out / "input" / "data" / PRETRAINED_CHANNEL
        dest.mkdir(parents=True)
        shutil.copy2(pretrained, dest / pretrained.name)
        channels[PRETRAINED_CHANNEL] = {"TrainingInputMode": "File"}
        print(f"channel pretrained: {pretrained.name}")

    config = out / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters or {}, indent=2) + "\n")
    (config / "inputdataconfig.json").write_text(json.dumps(channels, indent=2) + "\n")
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}) + "\n"
    )
    # The container may run as another user (docker compose run --user): let it write.
    for sub in ("model", "output", "output/data", "checkpoints"):
        os.chmod(out / sub, 0o777)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dogbreed.tools.opt_ml", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="dogImages-style folder with train/ valid/ [test/]")
    parser.add_argument("out", type=Path, help="the /opt/ml tree to create, e.g. build/opt_ml")
    parser.add_argument(
        "--hp",
        action="append",
        type=parse_hyperparameter,
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter for hyperparameters.json (repeatable)",
    )
    parser.add_argument("--pretrained", type=Path, help="a weights file to provide as the `pretrained` channel")
    parser.add_argument("--resume", action="store_true", help="keep checkpoints/ from an earlier run to resume it")
    args = parser.parse_args(argv)
    build_tree(args.data, args.out, dict(args.hp), args.pretrained, args.resume)
    print(f"SageMaker tree ready at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
