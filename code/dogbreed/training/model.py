"""The network: a torchvision ResNet with ImageNet weights and a new ``fc`` for our classes.

A job asked for pretrained weights either gets them or fails; it never quietly trains
from random weights. Weights are looked for, in order, in the ``pretrained`` input
channel, at an explicit ``pretrained=<path>``, in torchvision's cache under
``TORCH_HOME``, and finally downloaded by torchvision.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torchvision import models

from dogbreed.training.failure import TrainingError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt")
STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")  # a ResNet's trunk, in order
DOWNLOAD_TIMEOUT_S = 60


def weight_file_names(arch: str) -> list[str]:
    """torchvision's cache file names for ``arch``'s ImageNet weights, preferred (DEFAULT) first."""
    enum = models.get_model_weights(arch)
    names = [w.url.rsplit("/", 1)[-1] for w in (enum.DEFAULT, *enum)]
    return list(dict.fromkeys(names))


def _torch_home(torch_home: Path | None) -> Path:
    return Path(torch_home) if torch_home else Path(torch.hub.get_dir()).parent


def _find_in_channel(channel: Path, arch: str) -> Path | None:
    """One weights file in the channel: the torchvision-named one for ``arch``, else the only one."""
    if not channel.is_dir():
        return None
    files = sorted(p for p in channel.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    wanted = weight_file_names(arch)
    for name in wanted:
        for path in files:
            if path.name == name:
                return path
    if len(files) == 1:
        return files[0]
    raise TrainingError(
        f"the pretrained channel {channel} holds several weights files and none is named like "
        f"torchvision's {arch} weights ({', '.join(wanted)}): {', '.join(str(f) for f in files)}"
    )


def _download_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's own download of the DEFAULT ImageNet weights, into TORCH_HOME's cache."""
    weights = models.get_model_weights(arch).DEFAULT
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # network-isolated jobs must fail, not hang
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    finally:
        socket.setdefaulttimeout(previous)


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .pth/.pt file (also one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot read the weights file {path}: {type(exc).__name__}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise TrainingError(f"the weights file {path} does not hold a state_dict")
    return data


def find_pretrained_weights(
    arch: str, pretrained: str, channel: Path | None, torch_home: Path | None
) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet (or user-given) state_dict for ``arch`` and where it came from."""
    if pretrained not in ("imagenet", "none"):
        if channel is not None and _find_in_channel(channel, arch):
            log.warning("pretrained=%s given: the weights in the pretrained channel %s are not used", pretrained, channel)
        return load_weights_file(Path(pretrained)), pretrained
    looked = []
    if channel is not None:
        found = _find_in_channel(channel, arch)
        if found:
            return load_weights_file(found), str(found)
        looked.append(f"the pretrained channel {channel}")
    cache = _torch_home(torch_home) / "hub" / "checkpoints"
    for name in weight_file_names(arch):
        if (cache / name).is_file():
            return load_weights_file(cache / name), str(cache / name)
    looked.append(f"torchvision's cache {cache} ({' or '.join(weight_file_names(arch))})")
    try:
        state = _download_state_dict(arch)
        return state, f"download of {models.get_model_weights(arch).DEFAULT}"
    except Exception as exc:  # noqa: BLE001 - any download failure ends the same way
        looked.append(f"a download by torchvision ({type(exc).__name__}: {exc})")
    raise TrainingError(
        f"no ImageNet weights for {arch}: looked in " + "; ".join(looked)
        + ". Provide them as a 'pretrained' input channel holding the .pth file, as "
        "pretrained=<path to a .pth state_dict>, or in $TORCH_HOME/hub/checkpoints; or set "
        "pretrained=none to train from scratch"
    )


def build_model(
    arch: str,
    num_classes: int,
    pretrained: str = "imagenet",
    freeze: str = "all",
    channel: Path | None = None,
    torch_home: Path | None = None,
) -> nn.Module:
    """``arch`` with pretrained weights (per :func:`find_pretrained_weights`), a new ``fc`` and ``freeze`` applied."""
    model = models.get_model(arch, weights=None)
    if pretrained == "none":
        log.warning("pretrained=none: training %s from random weights", arch)
    else:
        state, source = find_pretrained_weights(arch, pretrained, channel, torch_home)
        # The old fc (1000 ImageNet classes, or another task's) is replaced anyway.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            raise TrainingError(
                f"the weights from {source} do not fit {arch}: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        log.info("loaded %s weights from %s", arch, source)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    apply_freeze(model, freeze)
    return model


def frozen_modules(model: nn.Module, freeze: str) -> list[nn.Module]:
    """The trunk modules ``freeze`` keeps fixed: all of them, none, or the stem up to ``layerN``."""
    if freeze == "none":
        return []
    last = len(STAGES) if freeze == "all" else STAGES.index(freeze) + 1
    return [getattr(model, name) for name in STAGES[:last]]


def apply_freeze(model: nn.Module, freeze: str) -> None:
    """Turn off gradients of the frozen modules; ``fc`` always trains."""
    for module in frozen_modules(model, freeze):
        for param in module.parameters():
            param.requires_grad_(False)


def set_train_mode(model: nn.Module, freeze: str) -> None:
    """``model.train()``, but frozen modules stay in eval mode.

    A frozen BatchNorm in train mode would still overwrite its ImageNet running
    statistics with this dataset's, changing the "frozen" features under the new fc.
    """
    model.train()
    for module in frozen_modules(model, freeze):
        module.eval()


def trainable_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
