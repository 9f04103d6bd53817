"""The evaluation transform: the one definition of how a picture becomes model input.

Training evaluates with it, exports its parameters into ``model.json``, and the serving
image (which has no torch) rebuilds it from there. It uses only Pillow and NumPy and
reproduces torchvision's ``Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
from PIL import Image

from dogbreed.architectures import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop a square, scale to [0, 1] and normalise."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if not 0 < self.crop_size <= self.resize_size:
            raise ValueError(f"need 0 < crop_size <= resize_size, got {self.crop_size}, {self.resize_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std positive")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``model.json`` under ``preprocessing``."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output."""
        # Any length reaches __post_init__, which refuses all but three values.
        return cls(
            resize_size=int(d["resize_size"]),
            crop_size=int(d["crop_size"]),
            mean=cast(tuple[float, float, float], tuple(float(v) for v in d["mean"])),
            std=cast(tuple[float, float, float], tuple(float(v) for v in d["std"])),
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) the shorter side's resize to ``resize_size`` gives."""
        if width <= height:
            return self.resize_size, int(self.resize_size * height / width)
        return int(self.resize_size * width / height), self.resize_size

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The centre crop ``(left, top, right, bottom)`` in the resized image's pixels."""
        new_w, new_h = self.resized_size(width, height)
        c = self.crop_size
        top, left = round((new_h - c) / 2.0), round((new_w - c) / 2.0)
        return left, top, left + c, top + c

    def crop_region(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The area of a ``width`` x ``height`` image the model sees, ``(x0, y0, x1, y1)`` in its pixels.

        The inverse of the resize applied to :meth:`crop_box`: what the model's input (and
        so its feature map) covers, in the uploaded picture's coordinates.
        """
        new_w, new_h = self.resized_size(width, height)
        left, top, right, bottom = self.crop_box(width, height)
        sx, sy = width / new_w, height / new_h
        return left * sx, top * sy, right * sx, bottom * sy

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """Bilinear resize of the shorter side to ``resize_size``, then centre crop."""
        original = image.size
        size = self.resized_size(*original)
        if size != original:
            image = image.resize(size, Image.Resampling.BILINEAR)
        return image.crop(self.crop_box(*original))

    def pixels(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> uint8 array of shape (3, crop_size, crop_size), resized and cropped."""
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {image.mode}")
        return np.ascontiguousarray(np.asarray(self.resize_and_crop(image), dtype=np.uint8).transpose(2, 0, 1))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``(..., 3, H, W)`` -> float32: scaled to [0, 1], minus ``mean``, over ``std``.

        The same float32 operations as torchvision's ``ToTensor`` + ``Normalize`` (and as
        the training job's ``Normalize`` on a batch), so the results are bit-identical.
        """
        mean = np.asarray(self.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(3, 1, 1)
        return (pixels.astype(np.float32) / np.float32(255) - mean) / std

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> the float32 model input of shape (3, crop_size, crop_size)."""
        return self.normalize(self.pixels(image))
