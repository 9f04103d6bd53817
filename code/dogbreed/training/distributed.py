"""Data-parallel training across processes: one per GPU (torchrun), on every host of the job.

The image's ``train`` (:mod:`.toolkit`) starts torchrun through sagemaker-training's
runner when the job has more than one host or GPU; torchrun sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` and :func:`init_distributed` joins the process group
(NCCL on GPUs, gloo on CPUs; the first host is the master). Each rank trains on its
slice of every global batch (:class:`~.data.EpochBatches`), gradients are averaged by
DDP, sums are reduced before a metric line is printed, and only rank 0 writes.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the model, checkpoints, feature caches, trial, profile and reports."""
        return self.rank == 0


SINGLE = Distributed()


def init_distributed(use_cuda: bool, timeout_seconds: float) -> Distributed:
    """Join the process group torchrun describes (``RANK``/``WORLD_SIZE``); a single process otherwise.

    ``timeout_seconds`` bounds the wait for peers and every collective, so a host that
    never arrives or dies fails the job instead of hanging it.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return SINGLE
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size == 1:
        return SINGLE
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
    return Distributed(rank, world_size, local_rank)


def all_reduce_sum(tensor: torch.Tensor, distributed: Distributed) -> torch.Tensor:
    """``tensor`` summed over every rank (a copy; itself when single)."""
    if not distributed.enabled:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def close(distributed: Distributed) -> None:
    if distributed.enabled and dist.is_initialized():
        dist.destroy_process_group()
