"""seed_everything: the job and the tuner's trials draw the same numbers from one seed."""

from __future__ import annotations

import random

import numpy as np
import torch

from dogbreed.training.stages import seed_everything


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_one_seed_repeats_python_numpy_and_torch():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
    seed_everything(8)
    assert all(a != b for a, b in zip(draws(), first))
