"""dogbreed.images: every kind of picture becomes upright RGB; bad data is a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dogbreed.images import ImageDecodeError, ImageTooLargeError, open_image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_real_photo_decodes_to_rgb(real_photos):
    image = open_image(real_photos[0])
    assert image.mode == "RGB" and min(image.size) > 100
    assert open_image(real_photos[0].read_bytes()).tobytes() == image.tobytes()


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    image = Image.new("RGB", (40, 30), (200, 30, 60)).convert(mode)
    decoded = open_image(encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (40, 30)


def test_transparent_pixels_flatten_onto_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert open_image(encode(image)).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_flattens_onto_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [0] * 765)
    decoded = open_image(encode(image, transparency=0))
    assert decoded.getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    # A landscape picture whose EXIF says "rotate 90°" is shown as portrait.
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to view
    decoded = open_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.size == (20, 60)
    r, g, b = decoded.getpixel((10, 3))  # the red band is now at the top
    assert r > 200 and b < 60


def test_sixteen_bit_grey_keeps_its_contrast():
    grey = Image.fromarray(np.linspace(0, 65535, 256, dtype=np.uint16).reshape(16, 16))
    decoded = np.asarray(open_image(encode(grey, "TIFF")))
    assert decoded.min() == 0 and decoded.max() == 255


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "empty"),
        (b"hello, I am text", "not a recognised image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "image"),
    ],
)
def test_bad_bytes_are_a_clear_error(payload, message):
    with pytest.raises(ImageDecodeError, match=message):
        open_image(payload)


def test_truncated_jpeg_is_a_clear_error(real_photos):
    data = real_photos[0].read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        open_image(data[: len(data) // 2])


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # 20000 x 20000 PNG header on a tiny body: refused without decoding 400 MP.
    data = encode(Image.new("L", (20000, 20000)), "PNG", optimize=False)
    with pytest.raises(ImageTooLargeError) as info:
        open_image(data, max_pixels=1_000_000)
    assert info.value.width == 20000 and "over the limit" in str(info.value)
    assert open_image(encode(Image.new("RGB", (100, 100))), max_pixels=10_000).size == (100, 100)
