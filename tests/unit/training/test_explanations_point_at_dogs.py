"""Proof that the class activation maps of the pretrained EfficientNet-Lite0 point at the dog.

Each test photo of the shared set, scaled down, is pasted into one quadrant of a larger
canvas (plain grey or noise, alternately); the map of the network's top ImageNet class
must peak in that quadrant for at least 90% of them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from dogbreed.architectures import architecture
from dogbreed.explain import Head, explain
from dogbreed.images import open_image
from dogbreed.preprocessing import Preprocessing
from dogbreed.training.model import forward_with_feature_map, head_of, imagenet_model

LITE0 = architecture("efficientnet_lite0")
CANVAS = 448  # each quadrant is 224 x 224


def _canvas(photo: Image.Image, quadrant: int, noisy: bool, rng: np.random.Generator) -> Image.Image:
    """``photo`` fitted into ``quadrant`` (0 top left, 1 top right, 2 bottom left, 3 bottom right)."""
    if noisy:
        background = Image.fromarray(rng.integers(0, 256, (CANVAS, CANVAS, 3), dtype=np.uint8))
    else:
        background = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
    half = CANVAS // 2
    scaled = photo.copy()
    scaled.thumbnail((half, half), Image.BILINEAR)
    left = (quadrant % 2) * half + (half - scaled.width) // 2
    top = (quadrant // 2) * half + (half - scaled.height) // 2
    background.paste(scaled, (left, top))
    return background


def _in_quadrant(point: tuple[float, float], quadrant: int) -> bool:
    half = CANVAS / 2
    x, y = point
    return (x >= half) == bool(quadrant % 2) and (y >= half) == bool(quadrant // 2)


def test_the_hottest_point_falls_on_the_dog(dogs3):
    photos = sorted((dogs3 / "test").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    preprocessing = Preprocessing(mean=LITE0.mean, std=LITE0.std)
    canvases = [_canvas(open_image(p), i % 4, (i // 4) % 2 == 1, rng) for i, p in enumerate(photos)]
    model = imagenet_model("efficientnet_lite0")
    inputs = torch.from_numpy(np.stack([preprocessing(c) for c in canvases]))
    with torch.inference_mode():
        logits, feature_maps = forward_with_feature_map(model, LITE0, inputs)
    linear = head_of(model, LITE0)
    head = Head(linear.weight.detach().numpy(), linear.bias.detach().numpy())
    hits = []
    for i, (row, feature_map) in enumerate(zip(logits.numpy(), feature_maps.numpy())):
        top = int(row.argmax())
        explanation = explain(feature_map, head, top, str(top), preprocessing, (CANVAS, CANVAS))
        assert abs(explanation.logit - row[top]) <= 1e-3 * max(1.0, abs(row[top]))
        hits.append(_in_quadrant(explanation.peak, i % 4))
    print(f"peak in the photo's quadrant for {sum(hits)}/{len(hits)} canvases")
    assert np.mean(hits) >= 0.9
