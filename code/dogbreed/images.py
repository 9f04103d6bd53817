"""Decoding image files and payloads into RGB pictures, shared by training and serving.

Both images decode with this module, so a photo looks the same to the model during
training and behind the endpoint: EXIF orientation applied, every mode converted to RGB.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import BinaryIO, cast

from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO

# Anything above this is refused unless the caller asks for another limit (serving reads
# it from the environment). 40 megapixels covers any camera photo; it decodes to ~120 MB.
DEFAULT_MAX_PIXELS = 40_000_000

# open_image enforces its own, configurable limit from the header, before Pillow's
# (which raises on open for huge images and only warns below twice its limit).
Image.MAX_IMAGE_PIXELS = None

# Background used when flattening transparent images, as a browser shows them.
_BACKGROUND = (255, 255, 255)


class ImageDecodeError(ValueError):
    """The data is not an image this project can read (empty, text, truncated, corrupt)."""


class ImageTooLargeError(ImageDecodeError):
    """The image header claims more pixels than the configured limit."""

    def __init__(self, width: int, height: int, max_pixels: int):
        self.width, self.height, self.max_pixels = width, height, max_pixels
        super().__init__(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels; send a smaller image"
        )


def open_image(source: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (bytes, a path or a binary file) into an upright RGB image.

    The pixel count is checked from the header before any pixel is decoded. Raises
    :class:`ImageDecodeError` for anything that is not a complete, readable image and
    :class:`ImageTooLargeError` for images over ``max_pixels`` (``None``: no limit).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError("the image is empty (0 bytes)")
        source = io.BytesIO(source)
    try:
        image = Image.open(source)
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLargeError(width, height, max_pixels)
        image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("the data is not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated JPEGs and broken PNG chunks land here.
        raise ImageDecodeError(f"the image is truncated or corrupt: {exc}") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any mode (grey, palette, CMYK, alpha) to RGB."""
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose the photo
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greys: scale into 8 bits before the RGB conversion.
        image = image.convert("F")
        lo, hi = cast(tuple[float, float], image.getextrema())  # one band: one (min, max) pair
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = image.point(lambda v: (v - lo) * scale).convert("L")
    return image.convert("RGB")
