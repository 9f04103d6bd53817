"""Test images generated with Pillow: every mode and orientation a client may send."""

from __future__ import annotations

import io

from PIL import Image


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def half_and_half(size=(320, 240)) -> Image.Image:
    """Left half red, right half blue: orientation is visible after decoding."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image
