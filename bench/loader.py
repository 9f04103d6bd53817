#!/usr/bin/env python3
"""What it costs to send batches from DataLoader workers through a pipe instead of /dev/shm.

    bench/loader [--data DIR] [--epochs 3] [--batch-size 32] [--num-workers N] [--arch resnet18]

The training job's loader (``dogbreed.training.data.make_loader``) sends each batch's
uint8 pixels as plain bytes through the worker's pipe, and the job normalises them: no
``/dev/shm`` is needed (Docker gives a container 64 MB). The baseline is torch's usual
way, as this job did before: float32 batches normalised in the workers, moved through
``/dev/shm``. Both run alternating over the same photos, augmentation, batch size and
workers on this machine (which must have the ``/dev/shm`` room the baseline needs); it
prints the images/s of each and their ratio (ours / baseline), once for the loader alone
(the transport's worst case: nothing else to do) and once with a training step of
``--arch`` (frozen backbone, the job's default) per batch. Its last line is a JSON
object. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "code"))
DEFAULT_DATA = Path(os.environ.get("DOGBREED_TEST_DATA", REPO.parent / "shared" / "data" / "dogs-3breeds")) / "train"

import preflight  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dogbreed.architectures import architecture  # noqa: E402
from dogbreed.preprocessing import Preprocessing  # noqa: E402
from dogbreed.training.config import TrainConfig  # noqa: E402
from dogbreed.training.data import Batch, Normalize, collate, make_loader, scan_split, train_transform  # noqa: E402
from dogbreed.training.model import build_model, set_train_mode, trainable_parameters  # noqa: E402


class SharedMemoryBatch(Batch):
    """A batch that pickles its tensors as torch does by default: into /dev/shm."""

    def __getstate__(self) -> dict:
        return dict(vars(self))

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)


class FloatInWorkers:
    """The baseline's collate: normalise in the worker, float32 batches through /dev/shm."""

    def __init__(self, preprocessing: Preprocessing):
        self.normalize = Normalize.of(preprocessing)

    def __call__(self, samples) -> SharedMemoryBatch:
        batch = collate(samples)
        return SharedMemoryBatch(self.normalize(batch.images), batch.labels, batch.unreadable)


def loaders(data: Path, batch_size: int, num_workers: int) -> dict[str, DataLoader]:
    assert num_workers > 0, "the transport only matters with worker processes"
    split = scan_split("train", data)
    preprocessing = Preprocessing()
    transform = train_transform(preprocessing)
    ours = make_loader(split, transform, batch_size, True, num_workers, False, seed=0, timeout=120)
    baseline = make_loader(split, transform, batch_size, True, num_workers, False, seed=0, timeout=120)
    baseline.collate_fn = FloatInWorkers(preprocessing)
    return {"ours": ours, "baseline": baseline}


def model_input(batch: Batch, normalize: Normalize) -> torch.Tensor:
    """The float input the network sees: ours normalises here, the baseline's came normalised."""
    if isinstance(batch, SharedMemoryBatch):
        assert batch.images.is_shared() and batch.images.dtype == torch.float32
        return batch.images
    assert not batch.images.is_shared() and batch.images.dtype == torch.uint8
    return normalize(batch.images)


NORMALIZE = Normalize.of(Preprocessing())


def epoch_rate(loader: DataLoader, epoch: int, step) -> float:
    """Images/s over one epoch of ``loader``, calling ``step(batch)`` on each batch."""
    loader.batch_sampler.set_epoch(epoch)
    images, start = 0, time.perf_counter()
    for batch in loader:
        step(model_input(batch, NORMALIZE), batch.labels)
        images += len(batch)
    return images / (time.perf_counter() - start)


def measure(named: dict[str, DataLoader], epochs: int, step) -> dict[str, float]:
    """Median images/s of each loader, epochs alternating between them (after one warm-up epoch each)."""
    rates: dict[str, list[float]] = {name: [] for name in named}
    for name, loader in named.items():
        epoch_rate(loader, 0, step)  # starts the persistent workers, warms the file cache
    for epoch in range(1, epochs + 1):
        for name, loader in named.items():
            rates[name].append(epoch_rate(loader, epoch, step))
    return {name: statistics.median(values) for name, values in rates.items()}


def training_step(arch: str):
    """A frozen-backbone training step (the job's default freeze=all) on the CPU."""
    model = build_model(arch, 3, "none", "all")
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    set_train_mode(model, architecture(arch), "all")

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a train split (default: dogs-3breeds)")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per loader and mode")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--num-workers", type=int, default=TrainConfig().num_workers)
    parser.add_argument("--arch", default="resnet18", help="network of the training-step mode")
    args = parser.parse_args(argv)

    print(f"bench/loader: DataLoader batches as uint8 through a pipe (ours) against float32 through /dev/shm "
          f"(torch's way), the loader alone and with a {args.arch} training step; {os.cpu_count()} CPUs, "
          f"batch_size={args.batch_size}, num_workers={args.num_workers}, {args.data}; {preflight.cpu_description()}",
          flush=True)
    preflight.require_photos("bench/loader", args.data, splits=())
    named = loaders(args.data, args.batch_size, args.num_workers)
    result = {}
    for mode, step in (("loader", lambda images, labels: None), (f"train_{args.arch}", training_step(args.arch))):
        rates = measure(named, args.epochs, step)
        ratio = rates["ours"] / rates["baseline"]
        print(f"{mode:>16}: uint8 through a pipe {rates['ours']:7.1f} images/s   float32 through /dev/shm "
              f"{rates['baseline']:7.1f} images/s   ratio {ratio:.3f}")
        result[mode] = {"ours_images_per_sec": rates["ours"], "baseline_images_per_sec": rates["baseline"],
                        "ratio": ratio}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
