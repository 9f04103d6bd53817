"""Generate a small labelled image set in the dogImages layout, for demos with no downloads.

    python -m dogbreed.tools.sample OUT [--per-class 60] [--seed 0]

Three synthetic "breeds" that a small network can tell apart from scratch in a minute:
close-ups of a striped, a spotted and a checked coat, each with its own colouring, and
random shades, scale, rotation, blur and noise, so the task is not pixel matching.
"""

from __future__ import annotations

import argparse
import colorsys
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("001.Striped_coat", "002.Spotted_coat", "003.Checked_coat")
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}


# Like real breeds, each coat has its typical colouring (a hue range), besides its pattern.
_HUES = {"Striped_coat": (0.0, 0.12), "Spotted_coat": (0.55, 0.70), "Checked_coat": (0.25, 0.40)}


def _colour(rng: random.Random, hues: tuple[float, float], light: bool) -> tuple[int, int, int]:
    value = rng.uniform(0.75, 1.0) if light else rng.uniform(0.15, 0.45)
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(*hues), rng.uniform(0.4, 1.0), value)
    return int(r * 255), int(g * 255), int(b * 255)


def _coat(kind: str, rng: random.Random, size: int) -> Image.Image:
    light = rng.random() < 0.5
    fg, bg = _colour(rng, _HUES[kind], light), _colour(rng, _HUES[kind], not light)
    tile = Image.new("RGB", (size * 2, size * 2), bg)
    draw = ImageDraw.Draw(tile)
    step = rng.randint(size // 14, size // 6)
    if kind == "Striped_coat":
        for x in range(0, size * 2, step * 2):
            draw.rectangle([x, 0, x + step - 1, size * 2], fill=fg)
    elif kind == "Spotted_coat":
        for _ in range(rng.randint(25, 60)):
            x, y, r = rng.randint(0, size * 2), rng.randint(0, size * 2), rng.randint(step // 2, step)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fg)
    else:
        for x in range(0, size * 2, step):
            for y in range(0, size * 2, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=fg)
    tile = tile.rotate(rng.uniform(0, 180), resample=Image.Resampling.BILINEAR)
    return tile.crop((size // 2, size // 2, size // 2 + size, size // 2 + size))


def make_image(kind: str, rng: random.Random) -> Image.Image:
    """One close-up picture of a coat pattern, with a little blur and noise."""
    w, h = rng.randint(260, 420), rng.randint(220, 380)
    side = max(w, h)
    patch = _coat(kind, rng, side)
    canvas = patch.crop((0, 0, w, h))
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    noise = Image.effect_noise((w, h), rng.uniform(5, 25)).convert("RGB")
    return Image.blend(canvas, noise, 0.12)


def generate(out: Path, per_class: int = 60, seed: int = 0) -> Path:
    """Write ``per_class`` JPEGs per class into ``out/{train,valid,test}/NNN.Name/``."""
    rng = random.Random(seed)
    out = Path(out)
    for class_dir in CLASSES:
        kind = class_dir.split(".", 1)[1]
        n_train = round(per_class * SPLIT_FRACTIONS["train"])
        n_valid = round(per_class * SPLIT_FRACTIONS["valid"])
        counts = {"train": n_train, "valid": n_valid, "test": per_class - n_train - n_valid}
        index = 0
        for split, n in counts.items():
            folder = out / split / class_dir
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                make_image(kind, rng).save(folder / f"{kind.lower()}_{index:04d}.jpg", quality=90)
                index += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dogbreed.tools.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.out, args.per_class, args.seed)
    print(f"generated {args.per_class * len(CLASSES)} images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
