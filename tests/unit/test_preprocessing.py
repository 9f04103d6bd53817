"""dogbreed.preprocessing reproduces torchvision's evaluation transform exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dogbreed.images import open_image
from dogbreed.preprocessing import Preprocessing


def torchvision_eval(p: Preprocessing):
    from torchvision import transforms as T

    return T.Compose([T.Resize(p.resize_size), T.CenterCrop(p.crop_size), T.ToTensor(), T.Normalize(p.mean, p.std)])


@pytest.mark.parametrize("p", [Preprocessing(), Preprocessing(resize_size=160, crop_size=128)])
def test_matches_torchvision_on_real_photos(real_photos, p):
    reference = torchvision_eval(p)
    for path in real_photos:
        image = open_image(path)
        ours = p(image)
        assert ours.shape == (3, p.crop_size, p.crop_size) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference(image).numpy(), atol=1e-6)


@pytest.mark.parametrize("size", [(224, 224), (300, 100), (100, 300), (257, 256), (50, 40), (1999, 3)])
def test_matches_torchvision_on_odd_sizes(size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    p = Preprocessing()
    np.testing.assert_allclose(p(image), torchvision_eval(p)(image).numpy(), atol=1e-6)


def test_round_trips_through_its_json_form():
    p = Preprocessing(resize_size=300, crop_size=256, mean=(0.5, 0.5, 0.5), std=(0.2, 0.3, 0.4))
    assert Preprocessing.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("kwargs", [{"crop_size": 300}, {"crop_size": 0}, {"std": (0.1, 0.0, 0.2)}, {"mean": (0.1,)}])
def test_rejects_impossible_parameters(kwargs):
    with pytest.raises(ValueError):
        Preprocessing(**kwargs)


def test_refuses_non_rgb_input():
    with pytest.raises(ValueError, match="RGB"):
        Preprocessing()(Image.new("L", (300, 300)))
