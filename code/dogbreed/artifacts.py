"""The model directory contract between the training and serving images.

A training job writes, into ``/opt/ml/model`` (SageMaker tars it as ``model.tar.gz``):

- ``model.pt``: the PyTorch ``state_dict`` of the fine-tuned network;
- ``model.onnx``: the same network for ONNX Runtime, input ``input`` (N, 3, H, W)
  float32, output ``logits`` (N, classes);
- ``model.json``: :class:`ModelMetadata`, everything needed to use the two files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.preprocessing import Preprocessing

METADATA_FILE = "model.json"
ONNX_FILE = "model.onnx"
TORCH_FILE = "model.pt"
ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
FORMAT_VERSION = 1


class ModelLoadError(RuntimeError):
    """The model directory is missing files or holds something unreadable."""


@dataclass
class ModelMetadata:
    """What ``model.json`` holds: classes in index order and how inputs are prepared."""

    arch: str
    classes: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_dirs: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        size = self.preprocessing.crop_size
        d["num_classes"] = len(self.classes)
        d["input"] = {"name": ONNX_INPUT, "shape": [None, 3, size, size], "dtype": "float32", "layout": "NCHW"}
        d["output"] = {"name": ONNX_OUTPUT, "meaning": "unnormalised class scores (apply softmax)"}
        d["files"] = {"onnx": ONNX_FILE, "pytorch": TORCH_FILE}
        return d

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write ``model.json`` into ``model_dir``."""
        path = Path(model_dir) / METADATA_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "ModelMetadata":
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
                format_version=version,
            )
        except ModelLoadError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not a valid model description: {exc!r}") from exc
