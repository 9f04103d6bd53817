"""Class activation maps (CAM): where in the picture the network found a class.

Every network here ends in global average pooling and one linear layer, so a class's
logit is the mean over the last feature map's cells of ``weight[class] . feature[cell]``,
plus ``bias[class]``. That per-cell term is the class activation map: exact, not an
approximation, and it costs one dot product per cell. The model directory carries what
it needs (see :mod:`dogbreed.artifacts`): the ONNX models also output the feature map, and
``head.npz`` holds the head's weight and bias.

This module is torch-free (numpy and Pillow): the serving image, the launcher's overlay
and the training report all use it. Coordinates are always the uploaded picture's pixels
(upright, as :func:`dogbreed.images.open_image` turns it), ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dogbreed.preprocessing import Preprocessing

# The explanation methods, as requests (X-Explain, explain=), DOGBREED_EXPLAIN, model.json and
# answers name them; NO_MAP asks for none. CHOICES: what a request or DOGBREED_EXPLAIN may say.
CAM = "cam"
METHODS = (CAM,)
NO_MAP = "none"
CHOICES = (*METHODS, NO_MAP)
# The hottest region: the connected area around the peak where the map is at least this
# fraction of the way from its minimum to its maximum.
HOT_FRACTION = 0.5
# The map is upsampled this many times per cell (bilinear) to find the region and the peak.
UPSAMPLE = 8
# Overlays are drawn on the picture scaled down to at most this many pixels on its longer side.
OVERLAY_MAX_SIDE = 1024
OVERLAY_ALPHA = 0.5
GRID_DECIMALS = 4

Box = tuple[float, float, float, float]
# What Explanation.from_dict needs of an answer's explanation ("method" and "logit" are derived).
ANSWER_FIELDS = ("class", "label", "bias", "grid", "grid_region", "box", "peak")


class ExplainError(ValueError):
    """What was asked cannot be explained (a class out of range, a model without a head file)."""


@dataclass(frozen=True)
class Head:
    """The network's final linear layer: ``weight`` (classes, channels) and ``bias`` (classes,), float32."""

    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self):
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ExplainError(
                f"a head needs weight (classes, channels) and bias (classes,), got "
                f"{self.weight.shape} and {self.bias.shape}"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write ``weight`` and ``bias`` as an uncompressed ``.npz``."""
        with open(path, "wb") as f:
            np.savez(f, weight=self.weight.astype(np.float32), bias=self.bias.astype(np.float32))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Head:
        """Read :meth:`save`'s file; raises :class:`ExplainError` saying what is wrong."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                return cls(np.asarray(data["weight"], np.float32), np.asarray(data["bias"], np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise ExplainError(f"{path} is not a readable head file: {exc}") from exc


def class_map(feature_map: np.ndarray, head: Head, class_index: int) -> np.ndarray:
    """The (h, w) map of ``class_index`` on one (channels, h, w) feature map, in logit units.

    ``class_map(...).mean() + head.bias[class_index]`` is the class's logit.
    """
    if not 0 <= class_index < len(head.bias):
        raise ExplainError(f"class {class_index} is not one of the model's {len(head.bias)} classes")
    if feature_map.ndim != 3 or feature_map.shape[0] != head.weight.shape[1]:
        raise ExplainError(
            f"a feature map of shape {feature_map.shape} does not fit a head of {head.weight.shape[1]} channels"
        )
    return np.einsum("c,chw->hw", head.weight[class_index].astype(np.float64), feature_map.astype(np.float64))


@dataclass(frozen=True)
class Explanation:
    """One class's map on one picture, placed in the picture's coordinates.

    ``grid`` (h, w) covers ``region``, the part of the picture the model saw (the centre
    crop), in equal cells, row 0 at the top. ``box`` bounds the hottest region and
    ``peak`` is the map's maximum (bilinear between cell centres).
    """

    class_index: int
    label: str
    grid: np.ndarray
    bias: float
    region: Box
    box: Box
    peak: tuple[float, float]

    @property
    def logit(self) -> float:
        """The class's logit: the grid's mean plus the bias."""
        return float(self.grid.mean() + self.bias)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"method", "class", "label", "logit", "bias", "grid", "grid_region", "box", "peak"}``."""
        return {
            "method": CAM,
            "class": self.class_index,
            "label": self.label,
            "logit": round(self.logit, GRID_DECIMALS),
            "bias": round(self.bias, GRID_DECIMALS),
            "grid": np.round(np.asarray(self.grid, np.float64), GRID_DECIMALS).tolist(),
            "grid_region": [round(v, 1) for v in self.region],
            "box": [round(v, 1) for v in self.box],
            "peak": [round(v, 1) for v in self.peak],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Explanation:
        """Rebuild from :meth:`to_dict`'s form (an endpoint's answer); :class:`ExplainError` says what is
        wrong, as a phrase that follows "the explanation": "lacks grid, peak", "is malformed: ..."."""
        if not isinstance(d, dict):
            raise ExplainError(f"is a {type(d).__name__}, not an object")
        missing = [key for key in ANSWER_FIELDS if key not in d]
        if missing:
            raise ExplainError(f"lacks {', '.join(missing)}")
        try:
            grid = np.asarray(d["grid"], np.float64)
            explanation = cls(
                class_index=int(d["class"]),
                label=str(d["label"]),
                grid=grid,
                bias=float(d["bias"]),
                region=_box(d["grid_region"]),
                box=_box(d["box"]),
                peak=(float(d["peak"][0]), float(d["peak"][1])),
            )
        except (IndexError, TypeError, ValueError) as exc:
            raise ExplainError(f"is malformed: {type(exc).__name__}: {exc}") from exc
        if grid.ndim != 2 or 0 in grid.shape:
            raise ExplainError(f"is malformed: its grid has shape {grid.shape}, not rows of numbers")
        return explanation


def _box(values: Any) -> Box:
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def explain(
    feature_map: np.ndarray,
    head: Head,
    class_index: int,
    label: str,
    preprocessing: Preprocessing,
    image_size: tuple[int, int],
) -> Explanation:
    """The :class:`Explanation` of ``class_index`` for a picture of ``image_size`` (width, height)."""
    grid = class_map(feature_map, head, class_index)
    region = preprocessing.crop_region(*image_size)
    box, peak = hottest_region(grid, region)
    return Explanation(class_index, label, grid, float(head.bias[class_index]), region, box, peak)


def upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map to (height, width), float32."""
    image = Image.fromarray(np.ascontiguousarray(grid, np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def normalised(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] between their minimum and maximum (all zero when flat)."""
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros_like(values, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _component(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected part of ``mask`` that holds ``seed``."""
    component = np.zeros_like(mask)
    component[seed] = True
    while True:
        grown = component.copy()
        grown[1:] |= component[:-1]
        grown[:-1] |= component[1:]
        grown[:, 1:] |= component[:, :-1]
        grown[:, :-1] |= component[:, 1:]
        grown &= mask
        if np.array_equal(grown, component):
            return component
        component = grown


def hottest_region(grid: np.ndarray, region: Box) -> tuple[Box, tuple[float, float]]:
    """``(box, peak)`` of a map covering ``region``: the box bounds the connected area around the
    peak within :data:`HOT_FRACTION` of the maximum, both in ``region``'s coordinates."""
    h, w = grid.shape
    fine = normalised(upsample(grid, w * UPSAMPLE, h * UPSAMPLE))
    peak_row, peak_col = np.unravel_index(int(np.argmax(fine)), fine.shape)
    hot = _component(fine >= HOT_FRACTION, (int(peak_row), int(peak_col)))
    rows, cols = np.nonzero(hot)
    x0, y0, x1, y1 = region
    cell_w, cell_h = (x1 - x0) / fine.shape[1], (y1 - y0) / fine.shape[0]
    box = (
        x0 + cols.min() * cell_w,
        y0 + rows.min() * cell_h,
        x0 + (cols.max() + 1) * cell_w,
        y0 + (rows.max() + 1) * cell_h,
    )
    peak = (x0 + (peak_col + 0.5) * cell_w, y0 + (peak_row + 0.5) * cell_h)
    return box, peak


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] values -> (..., 3) uint8 colours, blue (cold) through green and yellow to red (hot)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    anchors = np.array([[0, 0, 160], [0, 160, 255], [0, 200, 80], [255, 220, 0], [230, 0, 0]], np.float32)
    position = v * (len(anchors) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(anchors) - 2)
    t = position - low
    return (anchors[low[..., 0]] * (1 - t) + anchors[low[..., 0] + 1] * t).astype(np.uint8)


def overlay(
    image: Image.Image, explanation: Explanation, max_side: int = OVERLAY_MAX_SIDE, alpha: float = OVERLAY_ALPHA
) -> Image.Image:
    """The picture with the map blended over the area the model saw, its hottest region boxed and
    the rest (cropped away before the model) dimmed; scaled to at most ``max_side`` pixels."""
    scale = min(1.0, max_side / max(image.size))
    picture = image.convert("RGB")
    if scale < 1.0:
        picture = picture.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
        )
    pixels = np.asarray(picture, np.float32)
    x0, y0, x1, y1 = (round(v * scale) for v in explanation.region)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(picture.width, max(x1, x0 + 1)), min(picture.height, max(y1, y0 + 1))
    out = pixels * 0.35  # outside the model's view
    heat = heat_colours(normalised(upsample(explanation.grid, x1 - x0, y1 - y0))).astype(np.float32)
    out[y0:y1, x0:x1] = pixels[y0:y1, x0:x1] * (1 - alpha) + heat * alpha
    result = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(result)
    bx0, by0, bx1, by1 = (v * scale for v in explanation.box)
    width = max(2, round(max(result.size) / 200))
    draw.rectangle((bx0, by0, bx1 - 1, by1 - 1), outline=(255, 255, 255), width=width)
    return result


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (fast compression: this answers a request)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
