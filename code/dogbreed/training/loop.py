"""One pass over a split: an epoch of training, or an evaluation.

SIGTERM (a stopped job, a spot interruption) only sets a flag; the passes check it at
every batch boundary and raise :class:`StopRequested`. A training pass keeps its running
sums in a :class:`PassTotals` that the caller owns, so what a stopped pass had done is
exactly what the checkpoint saves and what a resumed pass continues from.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dogbreed.architectures import Architecture
from dogbreed.job_outputs import STEP_ACCURACY_SCALAR
from dogbreed.profile_format import StepTiming
from dogbreed.training.data import Batch, BatchLoader, EpochBatches, Split
from dogbreed.training.debugger import DebugHook
from dogbreed.training.distributed import SINGLE, Distributed, all_reduce_sum
from dogbreed.training.failure import TrainingError
from dogbreed.training.metrics import confusion_matrix
from dogbreed.training.model import set_train_mode
from dogbreed.training.profiler import JobProfiler, PhaseClock

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised at a batch boundary after SIGTERM."""


class GracefulStop:
    """Installs a SIGTERM handler that only sets a flag; the passes poll :meth:`check`."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self.distributed: Distributed = SINGLE
        self.device = torch.device("cpu")  # where the flag is reduced (NCCL needs a GPU tensor)

    def _handle(self, signum, frame):
        self.requested = True

    def install(self) -> GracefulStop:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def check(self) -> None:
        """Raise :class:`StopRequested` if SIGTERM has arrived (on any process: they all stop at the
        same batch boundary, so none waits for another that has left)."""
        requested = self.requested
        if self.distributed.enabled:
            flag = torch.tensor(int(requested), device=self.device)
            requested = bool(all_reduce_sum(flag, self.distributed).item())
        if requested:
            raise StopRequested()


@dataclass(frozen=True)
class Learner:
    """The network and everything that trains it, as the passes use them (a stage that changes one
    of them builds a new Learner; the modules' weights and the optimizer's state change in place)."""

    trained: nn.Module  # what the passes run and train: full_network, or its head alone on cached features
    full_network: nn.Module  # the whole bare network, which is exported (trained itself without features)
    normalize: Callable[[torch.Tensor], torch.Tensor]  # a batch's images -> the model's input (Normalize)
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool  # float16 autocast (CUDA only)
    arch: Architecture  # the network's stages (what freeze keeps fixed) and head
    freeze: str
    hook: DebugHook  # the smdebug trial, or NoHook
    profiler: JobProfiler  # step timings and top operators (records nothing with profile=off)
    distributed: Distributed = SINGLE
    ddp: nn.Module | None = None  # trained wrapped in DistributedDataParallel, with several processes


@dataclass
class PassTotals:
    """Running sums of a training pass. Loss and hits stay on the device (no sync per batch)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    images: int = 0
    positions: int = 0  # samples of the epoch's order consumed, readable or not
    seconds: float = 0.0

    @classmethod
    def zero(cls, device: torch.device) -> PassTotals:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long))

    @property
    def loss(self) -> float:
        return self.loss_sum.item() / self.images

    @property
    def accuracy(self) -> float:
        return self.correct.item() / self.images

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "images": self.images,
            "positions": self.positions,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: torch.device) -> PassTotals:
        return cls(d["loss_sum"].to(device), d["correct"].to(device), d["images"], d["positions"], d["seconds"])

    def reduced(self, distributed: Distributed) -> PassTotals:
        """The sums over every process (this process's own when single)."""
        if not distributed.enabled:
            return self
        images = all_reduce_sum(torch.tensor(self.images, device=self.loss_sum.device), distributed)
        return PassTotals(
            all_reduce_sum(self.loss_sum, distributed),
            all_reduce_sum(self.correct, distributed),
            int(images.item()),
            self.positions,
            self.seconds,
        )


@dataclass(frozen=True)
class Predictions:
    """Each evaluated image's sample index in its split, true class, predicted class and the softmax
    probability of that prediction (CPU tensors of equal length)."""

    indices: torch.Tensor
    labels: torch.Tensor
    predicted: torch.Tensor
    probability: torch.Tensor


@dataclass(frozen=True)
class Evaluation:
    """Loss, accuracy and confusion matrix of the model on one split."""

    loss: float
    accuracy: float
    matrix: list[list[int]]
    # keep_predictions only; with several processes, this process's slice of the split.
    predictions: Predictions | None = None


def note_unreadable(split: Split, bad: list[tuple[int, str]]) -> None:
    """Count images that failed to decode in the loader; each is logged once."""
    for index, reason in bad:
        path = str(split.samples[index][0])
        if split.add_unreadable(path, reason):
            log.warning("%s: skipping unreadable image %s: %s", split.name, path, reason)


def batches(loader: BatchLoader, split: Split, stop: GracefulStop, desc: str) -> Iterator[Batch]:
    """The loader's batches, SIGTERM checked before each and unreadable images recorded."""
    # A bar for people at a terminal; CloudWatch gets the epoch lines only.
    for batch in tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        stop.check()
        note_unreadable(split, batch.unreadable)
        yield batch


def forward(learner: Learner, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(labels, logits, loss)`` of one batch, under float16 autocast when ``amp``."""
    images = learner.normalize(batch.images.to(learner.device, non_blocking=True))
    labels = batch.labels.to(learner.device, non_blocking=True)
    with torch.autocast(learner.device.type, dtype=torch.float16, enabled=learner.amp):
        logits = (learner.ddp or learner.trained)(images)
        loss = learner.criterion(logits, labels)
    return labels, logits, loss


def train_pass(
    learner: Learner, loader: BatchLoader, split: Split, stop: GracefulStop, totals: PassTotals, epoch: int
) -> None:
    """Train on the rest of an epoch, adding to ``totals`` batch by batch.

    The loader's sampler must start at ``totals.positions``; on SIGTERM, ``totals``
    holds exactly the batches whose updates the weights have. Each step's time is split
    into waiting for data, forward/backward and optimizer for the profile, and its loss
    and batch accuracy go to the smdebug trial.
    """
    set_train_mode(learner.trained, learner.arch, learner.freeze)
    learner.hook.set_mode("train")
    sampler = loader.batch_sampler
    clock, step, start = PhaseClock(learner.device), 0, time.perf_counter()
    try:
        for batch in batches(loader, split, stop, "train"):
            data_seconds = clock.lap()
            if len(batch):
                labels, logits, loss = forward(learner, batch)
                learner.optimizer.zero_grad(set_to_none=True)
                learner.scaler.scale(loss * share_of_step(learner, batch, sampler, totals.positions)).backward()
                forward_backward_seconds = clock.lap()
                learner.scaler.step(learner.optimizer)
                learner.scaler.update()
                optimizer_seconds = clock.lap()
                correct = (logits.argmax(1) == labels).sum()
                totals.loss_sum += loss.detach() * len(labels)
                totals.correct += correct
                totals.images += len(labels)
                if learner.hook.recording:  # one sync per step, only when the trial is on
                    learner.hook.save_scalar(STEP_ACCURACY_SCALAR, correct.item() / len(labels))
                learner.profiler.recorder.record(
                    StepTiming(
                        epoch,
                        step,
                        "train",
                        len(labels),
                        data_seconds,
                        forward_backward_seconds,
                        optimizer_seconds,
                    )
                )
                learner.profiler.operators.step()
            totals.positions = min(totals.positions + sampler.step_size, sampler.num_samples)
            step += 1
            clock.reset()  # bookkeeping and the profiler's own work are not waiting for data
        stop.check()
    finally:
        totals.seconds += time.perf_counter() - start
        learner.profiler.recorder.flush()
    if not totals.images:
        raise TrainingError("the train split has no readable images")


def share_of_step(learner: Learner, batch: Batch, sampler: EpochBatches, position: int) -> float:
    """What this process's mean loss weighs in the step: DDP averages the processes'
    gradients, so a process with a smaller slice (the short final step) counts for less.
    Exactly 1 with one process."""
    world = learner.distributed.world_size
    if world == 1:
        return 1.0
    step = min(sampler.step_size, sampler.num_samples - position)
    return (len(batch) + len(batch.unreadable)) * world / step


@torch.no_grad()
def evaluate(
    learner: Learner,
    loader: BatchLoader,
    split: Split,
    stop: GracefulStop,
    num_classes: int,
    epoch: int,
    keep_predictions: bool = False,
) -> Evaluation:
    """Evaluate the model on a whole split (deterministic: a stopped evaluation is simply redone).

    ``keep_predictions``: also return each image's prediction (the report's explanations pick from them).
    """
    learner.trained.eval()
    learner.hook.set_mode("eval")
    loss_sum = torch.zeros((), device=learner.device)
    all_labels: list[torch.Tensor] = []
    all_preds: list[torch.Tensor] = []
    all_indices: list[torch.Tensor] = []
    all_probabilities: list[torch.Tensor] = []
    clock = PhaseClock(learner.device)
    for step, batch in enumerate(batches(loader, split, stop, split.name)):
        data_seconds = clock.lap()
        if len(batch):
            labels, logits, loss = forward(learner, batch)
            loss_sum += loss.float() * len(labels)
            all_labels.append(labels)
            all_preds.append(logits.argmax(1))
            if keep_predictions:
                if batch.indices is None:
                    raise ValueError("keep_predictions needs the batches' sample indices")
                all_indices.append(batch.indices)
                all_probabilities.append(logits.detach().float().softmax(1).amax(1))
            learner.profiler.recorder.record(StepTiming(epoch, step, "eval", len(labels), data_seconds, clock.lap()))
        clock.reset()
    stop.check()
    predictions = None
    if keep_predictions and all_labels:
        predictions = Predictions(
            torch.cat(all_indices).cpu(),
            torch.cat(all_labels).cpu(),
            torch.cat(all_preds).cpu(),
            torch.cat(all_probabilities).cpu(),
        )
    if learner.distributed.enabled:
        evaluation = reduced_evaluation(learner, split, loss_sum, all_labels, all_preds, num_classes)
        return dataclasses.replace(evaluation, predictions=predictions)
    if not all_labels:
        raise TrainingError(f"the {split.name} split has no readable images")
    labels, preds = torch.cat(all_labels).cpu(), torch.cat(all_preds).cpu()
    return Evaluation(
        loss=loss_sum.item() / len(labels),
        accuracy=(labels == preds).float().mean().item(),
        matrix=confusion_matrix(labels.tolist(), preds.tolist(), num_classes),
        predictions=predictions,
    )


def reduced_evaluation(
    learner: Learner,
    split: Split,
    loss_sum: torch.Tensor,
    all_labels: list[torch.Tensor],
    all_preds: list[torch.Tensor],
    num_classes: int,
) -> Evaluation:
    """Every process evaluated its slice of the split: the confusion matrix and loss of the whole."""
    matrix = torch.zeros(num_classes * num_classes, dtype=torch.long, device=learner.device)
    if all_labels:
        pairs = torch.cat(all_labels) * num_classes + torch.cat(all_preds)
        matrix += torch.bincount(pairs, minlength=num_classes * num_classes)
    matrix = all_reduce_sum(matrix, learner.distributed).view(num_classes, num_classes).cpu()
    total = int(matrix.sum())
    if not total:
        raise TrainingError(f"the {split.name} split has no readable images")
    return Evaluation(
        loss=all_reduce_sum(loss_sum, learner.distributed).item() / total,
        accuracy=float(matrix.trace()) / total,
        matrix=matrix.tolist(),
    )
