"""Incremental training: a job that starts from an earlier job's model, the ``model`` channel.

As with the ``model`` channel of SageMaker's built-in image classification algorithm, the
channel holds what an earlier job wrote to ``/opt/ml/model``: its ``model.tar.gz`` (what
SageMaker puts in the channel when it points at the archive's S3 key) or the unpacked
directory. The job reads ``model.json`` and ``model.pt`` (the whole network's state_dict,
see :mod:`dogbreed.artifacts`) and starts from those weights instead of ImageNet's.

The architecture and image size must be the earlier model's. The head keeps the rows of
the classes both have, matched by name; a class the earlier model lacks gets a new row
(initialised as any new head is), and a class the data no longer has loses its row.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dogbreed.architectures import architecture
from dogbreed.artifacts import METADATA_FILE, TORCH_FILE, ModelLoadError, ModelMetadata
from dogbreed.input_channels import MODEL_CHANNEL
from dogbreed.training.failure import ConfigError, TrainingError
from dogbreed.training.model import apply_freeze, build_network, head_of, load_state, load_weights_file, replace_head

log = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".tar.gz"
_NEEDED = (METADATA_FILE, TORCH_FILE)  # what the job reads of a model directory


@dataclass(frozen=True)
class PreviousModel:
    """The earlier model: where it came from, its ``model.json`` and its weights."""

    source: str  # the channel's directory or archive, for messages
    metadata: ModelMetadata
    state: dict[str, torch.Tensor]


def find_previous_model(channel: Path | None) -> PreviousModel | None:
    """The model in the ``model`` channel (None: no channel); :class:`TrainingError` says what is wrong with one."""
    if channel is None or not channel.is_dir():
        return None
    if (channel / METADATA_FILE).is_file():
        return _read(channel, str(channel))
    archives = sorted(p for p in channel.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_SUFFIX))
    if len(archives) != 1:
        found = ", ".join(sorted(p.name for p in channel.iterdir())) or "nothing"
        raise TrainingError(
            f"the {MODEL_CHANNEL} channel {channel} holds neither {METADATA_FILE} nor one {ARCHIVE_SUFFIX} archive "
            f"(a training job's model.tar.gz), but {found}"
        )
    with tempfile.TemporaryDirectory(prefix="dogbreed-model-") as unpacked:
        _unpack(archives[0], Path(unpacked))
        return _read(Path(unpacked), str(archives[0]))


def _unpack(archive: Path, into: Path) -> None:
    """Extract ``model.json`` and ``model.pt`` from the archive's top level (the ONNX models are not needed).

    By hand rather than ``extractall(filter=...)``, which the image's Python (3.11 before 3.11.4) lacks.
    """
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = os.path.normpath(member.name)
                source = tar.extractfile(member) if member.isfile() and name in _NEEDED else None
                if source is not None:  # regular files under fixed names: nothing lands outside ``into``
                    with source, open(into / name, "wb") as target:
                        shutil.copyfileobj(source, target)
    except (tarfile.TarError, OSError) as exc:
        raise TrainingError(f"the {MODEL_CHANNEL} channel's archive {archive} cannot be unpacked: {exc}") from exc


def _read(model_dir: Path, source: str) -> PreviousModel:
    try:
        metadata = ModelMetadata.load(model_dir)
    except ModelLoadError as exc:
        raise TrainingError(f"the {MODEL_CHANNEL} channel {source}: {exc}") from exc
    if not (model_dir / TORCH_FILE).is_file():
        raise TrainingError(f"the {MODEL_CHANNEL} channel {source} has no {TORCH_FILE}, the network's weights")
    return PreviousModel(source, metadata, load_weights_file(model_dir / TORCH_FILE))


def check_fits(previous: PreviousModel, arch: str, image_size: int) -> None:
    """The job must train the earlier model's architecture at its image size: :class:`ConfigError` naming
    both values of what differs."""
    old = previous.metadata
    differ = [
        f"{name}={theirs} (this job: {name}={ours})"
        for name, theirs, ours in (("arch", old.arch, arch), ("image_size", old.preprocessing.crop_size, image_size))
        if theirs != ours
    ]
    if differ:
        raise ConfigError(
            f"the {MODEL_CHANNEL} channel's model {previous.source} has {' and '.join(differ)}: incremental training "
            "continues the same network at the same size; set those hyperparameters to the model's"
        )


def continue_from(previous: PreviousModel, classes: list[str], freeze: str) -> nn.Module:
    """The earlier network with a head for ``classes``: the rows of the classes it knew (by name) kept,
    new rows for new classes; ``freeze`` applied."""
    spec = architecture(previous.metadata.arch)
    old_classes = previous.metadata.classes
    model = build_network(spec, len(old_classes))
    load_state(model, spec, previous.state, previous.source, with_head=True)
    old_head = head_of(model, spec)
    head = nn.Linear(old_head.in_features, len(classes))  # PyTorch's usual initialisation, from the job's seed
    old_row = {name: row for row, name in enumerate(old_classes)}
    with torch.no_grad():
        for row, name in enumerate(classes):
            if name in old_row:
                head.weight[row] = old_head.weight[old_row[name]]
                head.bias[row] = old_head.bias[old_row[name]]
    replace_head(model, spec, head)
    apply_freeze(model, spec, freeze)
    kept = [c for c in classes if c in old_row]
    added = [c for c in classes if c not in old_row]
    dropped = [c for c in old_classes if c not in set(classes)]
    log.info(
        "incremental training from %s: kept %d classes%s, added %d%s, dropped %d%s",
        previous.source,
        len(kept),
        _listed(kept),
        len(added),
        _listed(added),
        len(dropped),
        _listed(dropped),
    )
    return model


def _listed(names: list[str], most: int = 10) -> str:
    """`` (a, b, c)``, cut after ``most`` names; empty for none."""
    if not names:
        return ""
    more = f", and {len(names) - most} more" if len(names) > most else ""
    return f" ({', '.join(names[:most])}{more})"
