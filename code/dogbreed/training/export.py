"""The model directory: ``model.pt``, ``model.onnx`` and ``model.json`` (see :mod:`dogbreed.artifacts`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from dogbreed.architectures import Architecture, architecture
from dogbreed.artifacts import (
    HEAD_FILE,
    ONNX_FEATURE_MAP,
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_OUTPUT,
    TORCH_FILE,
    CamExport,
    ModelMetadata,
)
from dogbreed.training.failure import TrainingError
from dogbreed.training.model import WithFeatureMap, build_network, head_of, head_weights

log = logging.getLogger(__name__)

ONNX_OPSET = 17
# Max abs difference of logits between ONNX Runtime and PyTorch, per unit of the largest
# logit (at least 1): float32 rounding grows with the logits' size.
ONNX_TOLERANCE = 1e-4


def export_onnx(model: nn.Module, arch: Architecture, path: Path, crop_size: int) -> tuple[int, int]:
    """TorchScript-based export (``dynamo=False``; the dynamo exporter needs onnxscript), dynamic batch.

    The graph has two outputs, the logits and the last feature map (for class activation
    maps); a caller asking ONNX Runtime for the logits alone pays nothing for the second,
    which the logits are computed from anyway. Returns the feature map's (height, width).
    """
    network = WithFeatureMap(model.eval(), arch).eval()
    dummy = torch.zeros(1, 3, crop_size, crop_size)
    with torch.no_grad():
        grid = tuple(network(dummy)[1].shape[2:])
    torch.onnx.export(
        network,
        (dummy,),
        str(path),
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT, ONNX_FEATURE_MAP],
        dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}, ONNX_FEATURE_MAP: {0: "batch"}},
        opset_version=ONNX_OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    return int(grid[0]), int(grid[1])


def onnx_max_abs_diff(model: nn.Module, onnx_path: Path, batch: torch.Tensor) -> tuple[float, float]:
    """Max abs difference of the logits of ONNX Runtime (CPU) and PyTorch (CPU, float32) on ``batch``,
    and the largest abs logit."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model.eval()(batch.float().cpu()).numpy()
    got = session.run([ONNX_OUTPUT], {ONNX_INPUT: batch.float().cpu().numpy()})[0]
    return float(np.max(np.abs(got - expected))), float(np.max(np.abs(expected)))


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_model_dir` wrote: ``model.json``'s metadata, and the ONNX parity figure."""

    metadata: ModelMetadata  # the caller's, with the class activation maps' export (``explain``)
    onnx_max_abs_diff: float | None  # None where no sample batch was checked


def export_model_dir(
    model: nn.Module,
    metadata: ModelMetadata,
    model_dir: str | os.PathLike,
    sample_batch: torch.Tensor | None = None,
) -> ExportedModel:
    """Write ``model.pt``, ``model.onnx``, ``head.npz`` and ``model.json`` into ``model_dir``.

    ``model`` is exported from a CPU copy; ``model.json`` holds ``metadata`` with the class
    activation maps the export gives. With ``sample_batch`` (N, 3, H, W), the ONNX model is
    checked against PyTorch on it and :class:`TrainingError` raised when the logits differ by
    more than ``ONNX_TOLERANCE``.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    # A plain copy on the CPU: the training model may carry smdebug hooks and live on a GPU.
    arch = architecture(metadata.arch)
    clean = _cpu_copy(model, arch)
    torch.save(clean.state_dict(), model_dir / TORCH_FILE)
    grid = export_onnx(clean, arch, model_dir / ONNX_FILE, metadata.preprocessing.crop_size)
    head_weights(clean, arch).save(model_dir / HEAD_FILE)
    written = dataclasses.replace(
        metadata, explain=CamExport(feature_map=ONNX_FEATURE_MAP, head_file=HEAD_FILE, grid=grid)
    )
    written.save(model_dir)
    if sample_batch is None:
        return ExportedModel(written, None)
    diff, largest = onnx_max_abs_diff(clean, model_dir / ONNX_FILE, sample_batch)
    tolerance = ONNX_TOLERANCE * max(1.0, largest)
    log.info("onnx_max_abs_diff=%.3g on %d images (tolerance %.3g)", diff, len(sample_batch), tolerance)
    if not diff <= tolerance:
        raise TrainingError(
            f"the exported ONNX model disagrees with PyTorch: max abs logit difference {diff:.3g} > {tolerance:.3g}"
        )
    return ExportedModel(written, diff)


def _cpu_copy(model: nn.Module, arch: Architecture) -> nn.Module:
    """A fresh ``arch`` on the CPU holding ``model``'s weights, without its hooks."""
    copy = build_network(arch, head_of(model, arch).out_features)
    copy.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return copy.eval()
