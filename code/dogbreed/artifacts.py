"""The model directory contract between the training and serving images.

A training job writes, into ``/opt/ml/model`` (SageMaker tars it as ``model.tar.gz``):

- ``model.pt``: the PyTorch ``state_dict`` of the fine-tuned network (the serving image ignores
  it; a later job given this model as its ``model`` channel starts from it);
- ``model.onnx``: the same network for ONNX Runtime, input ``input`` (N, 3, H, W)
  float32, output ``logits`` (N, classes);
- ``model.int8.onnx`` (optional): the same network statically quantized to int8, same
  input and output; ``model.json``'s ``int8`` (:class:`Int8Export`) says how and what it
  costs in validation accuracy. Models without it (``int8=false``, or older jobs) have
  ``int8`` null or absent;
- ``head.npz``: the head's weight and bias as numpy arrays; with the ONNX models' second
  output ``feature_map`` (N, channels, h, w), the last feature map before pooling, they
  give class activation maps (:mod:`dogbreed.explain`). ``model.json``'s ``explain``
  (:class:`CamExport`) says so; older models have it null or absent and cannot explain;
- ``model.json``: :class:`ModelMetadata`, everything needed to use the files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.explain import CAM
from dogbreed.preprocessing import Preprocessing

METADATA_FILE = "model.json"
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
TORCH_FILE = "model.pt"
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
ONNX_FEATURE_MAP = "feature_map"
HEAD_FILE = "head.npz"
FORMAT_VERSION = 1


class ModelLoadError(RuntimeError):
    """The model directory is missing files or holds something unreadable."""


@dataclass
class Int8Export:
    """The int8 model beside ``model.onnx``: how it was quantized, and both models' top-1
    accuracy on the same preprocessed validation images (ONNX Runtime, CPU)."""

    file: str
    format: str  # e.g. "QDQ u8s8 per-channel"
    calibration: str  # ONNX Runtime's calibration method, e.g. "MinMax"
    calibration_images: int  # training images, evaluation view
    reduce_range: bool  # 7-bit weights
    valid_images: int
    fp32_valid_top1: float
    int8_valid_top1: float

    @property
    def loss_points(self) -> float:
        """Validation top-1 the int8 model loses against fp32, in percentage points (negative: gains)."""
        return 100.0 * (self.fp32_valid_top1 - self.int8_valid_top1)

    @property
    def change_points(self) -> float:
        """Validation top-1 of int8 minus fp32, in percentage points: ``-loss_points`` (never -0.0)."""
        return 100.0 * (self.int8_valid_top1 - self.fp32_valid_top1)

    def summary(self) -> str:
        """``valid top-1 91.2% vs fp32 91.5% (-0.3 points) on 835 images``."""
        return (
            f"valid top-1 {100 * self.int8_valid_top1:.1f}% vs fp32 {100 * self.fp32_valid_top1:.1f}% "
            f"({self.change_points:+.1f} points) on {self.valid_images} images"
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Int8Export:
        """Rebuild from the ``int8`` entry of ``model.json``; raises KeyError/TypeError/ValueError."""
        file = str(d["file"])
        if Path(file).name != file or file in ("", ".", ".."):  # a file of the model directory, nothing else
            raise ValueError(f"int8.file={file!r} is not a file name")
        return cls(
            file=file,
            format=str(d["format"]),
            calibration=str(d["calibration"]),
            calibration_images=int(d["calibration_images"]),
            reduce_range=bool(d["reduce_range"]),
            valid_images=int(d["valid_images"]),
            fp32_valid_top1=float(d["fp32_valid_top1"]),
            int8_valid_top1=float(d["int8_valid_top1"]),
        )


@dataclass(frozen=True)
class CamExport:
    """How the model gives class activation maps: which ONNX output is the feature map, which
    file holds the head, and the map's (height, width) at the exported input size."""

    feature_map: str
    head_file: str
    grid: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"method": CAM, "feature_map": self.feature_map, "head_file": self.head_file, "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CamExport:
        """Rebuild from the ``explain`` entry of ``model.json``; raises KeyError/TypeError/ValueError."""
        head_file = str(d["head_file"])
        if Path(head_file).name != head_file or head_file in ("", ".", ".."):
            raise ValueError(f"explain.head_file={head_file!r} is not a file name")
        height, width = (int(v) for v in d["grid"])
        return cls(feature_map=str(d["feature_map"]), head_file=head_file, grid=(height, width))


@dataclass
class ModelMetadata:
    """What ``model.json`` holds: classes in index order and how inputs are prepared."""

    arch: str
    classes: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_dirs: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    # Optional, so format_version stays 1: readers that predate it ignore the key and serve fp32.
    int8: Int8Export | None = None
    # Optional too: models exported before class activation maps have none.
    explain: CamExport | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        size = self.preprocessing.crop_size
        d["num_classes"] = len(self.classes)
        d["input"] = {"name": ONNX_INPUT, "shape": [None, 3, size, size], "dtype": "float32", "layout": "NCHW"}
        d["output"] = {"name": ONNX_OUTPUT, "meaning": "unnormalised class scores (apply softmax)"}
        d["files"] = {"onnx": ONNX_FILE, "pytorch": TORCH_FILE}
        if self.int8 is not None:
            d["files"]["onnx_int8"] = self.int8.file
        if self.explain is not None:
            d["explain"] = self.explain.to_dict()
            d["files"]["head"] = self.explain.head_file
        return d

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write ``model.json`` into ``model_dir``."""
        path = Path(model_dir) / METADATA_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> ModelMetadata:
        """Read ``model.json`` from ``model_dir``; :class:`ModelLoadError` says what is wrong."""
        path = Path(model_dir) / METADATA_FILE
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{path} is missing; is this a dogbreed training job's model?") from exc
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc
        try:
            version = int(d.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise ModelLoadError(f"{path} has format_version {version}; this code reads up to {FORMAT_VERSION}")
            classes = [str(c) for c in d["classes"]]
            if not classes:
                raise ModelLoadError(f"{path} lists no classes")
            return cls(
                arch=str(d["arch"]),
                classes=classes,
                preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                class_dirs=[str(c) for c in d.get("class_dirs", [])],
                metrics=dict(d.get("metrics", {})),
                hyperparameters=dict(d.get("hyperparameters", {})),
                int8=Int8Export.from_dict(d["int8"]) if d.get("int8") is not None else None,
                explain=CamExport.from_dict(d["explain"]) if d.get("explain") is not None else None,
                format_version=version,
            )
        except ModelLoadError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not a valid model description: {exc!r}") from exc
