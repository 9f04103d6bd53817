"""dogbreed.explain: exact maps, the hottest region and the overlay, in the uploaded picture's pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dogbreed.explain import (
    OVERLAY_MAX_SIDE, ExplainError, Head, class_map, explain, hottest_region, overlay, png_bytes,
)
from dogbreed.preprocessing import Preprocessing


@pytest.fixture
def head() -> Head:
    rng = np.random.default_rng(0)
    return Head(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=3).astype(np.float32))


def test_the_map_mean_plus_the_bias_is_the_logit(head):
    feature_map = np.random.default_rng(1).random((8, 7, 7)).astype(np.float32)
    logits = head.weight @ feature_map.mean(axis=(1, 2)) + head.bias
    for c in range(3):
        assert class_map(feature_map, head, c).mean() + head.bias[c] == pytest.approx(logits[c], abs=1e-5)


def test_bad_classes_and_shapes_are_explain_errors(head, tmp_path):
    feature_map = np.zeros((8, 7, 7), np.float32)
    with pytest.raises(ExplainError, match="class 3"):
        class_map(feature_map, head, 3)
    with pytest.raises(ExplainError, match="channels"):
        class_map(np.zeros((4, 7, 7), np.float32), head, 0)
    with pytest.raises(ExplainError, match="bias"):
        Head(np.zeros((3, 8), np.float32), np.zeros(2, np.float32))
    (tmp_path / "head.npz").write_bytes(b"not numpy")
    with pytest.raises(ExplainError, match="not a readable head file"):
        Head.load(tmp_path / "head.npz")


def test_a_head_round_trips(head, tmp_path):
    head.save(tmp_path / "head.npz")
    again = Head.load(tmp_path / "head.npz")
    assert np.array_equal(again.weight, head.weight) and np.array_equal(again.bias, head.bias)


def test_the_region_is_the_centre_crop_in_the_pictures_pixels():
    """Cropping the picture at the region and resizing it gives the model's input (up to resampling)."""
    rng = np.random.default_rng(2)
    smooth = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)).resize((500, 333), Image.BILINEAR)
    pre = Preprocessing(256, 224)
    x0, y0, x1, y1 = pre.crop_region(500, 333)
    # Each side scales by its own resize ratio (the resized width is rounded down).
    assert (x1 - x0) == pytest.approx(224 * 500 / 384) and (y1 - y0) == pytest.approx(224 * 333 / 256)
    assert (x0 + x1) / 2 == pytest.approx(250, abs=1) and (y0 + y1) / 2 == pytest.approx(166.5, abs=1)
    by_region = np.asarray(smooth.crop((x0, y0, x1, y1)).resize((224, 224), Image.BILINEAR), np.float32)
    model_view = np.asarray(pre.resize_and_crop(smooth), np.float32)
    assert np.abs(by_region - model_view).mean() < 3.0


def test_the_hottest_region_is_around_the_hot_cell():
    grid = np.zeros((7, 7))
    grid[1, 5] = 10.0
    region = (0.0, 0.0, 700.0, 700.0)
    box, peak = hottest_region(grid, region)
    assert 500 <= peak[0] <= 600 and 100 <= peak[1] <= 200
    assert box[0] <= peak[0] <= box[2] and box[1] <= peak[1] <= box[3]
    assert 400 <= box[0] and box[2] <= 700 and 0 <= box[1] and box[3] <= 300


def test_an_explanation_of_a_wide_picture():
    head = Head(np.ones((2, 8), np.float32), np.array([0.0, -1.0], np.float32))
    feature_map = np.zeros((8, 7, 7), np.float32)
    feature_map[:, 3, 0] = 1.0  # the left edge of the crop, middle row: the hottest cell
    pre = Preprocessing(256, 224)
    explanation = explain(feature_map, head, 1, "b", pre, (1000, 500))
    answer = explanation.to_dict()
    assert answer["class"] == 1 and answer["label"] == "b" and answer["method"] == "cam"
    assert np.array(answer["grid"]).shape == (7, 7)
    assert answer["grid_region"] == pytest.approx([round(v, 1) for v in pre.crop_region(1000, 500)])
    x0, y0, x1, y1 = answer["grid_region"]
    cell = (x1 - x0) / 7
    assert x0 <= answer["peak"][0] <= x0 + cell and 180 < answer["peak"][1] < 320
    assert answer["box"][0] >= x0 and answer["box"][2] <= x0 + 2 * cell
    assert answer["logit"] == pytest.approx(class_map(feature_map, head, 1).mean() + head.bias[1], abs=1e-4)


def test_the_overlay_is_the_picture_scaled_with_the_outside_dimmed(head):
    feature_map = np.random.default_rng(3).random((8, 7, 7)).astype(np.float32)
    picture = Image.new("RGB", (3000, 1500), (200, 200, 200))
    explanation = explain(feature_map, head, 0, "a", Preprocessing(), picture.size)
    drawn = overlay(picture, explanation)
    assert drawn.size == (OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE // 2)
    pixels = np.asarray(drawn)
    assert pixels[5, 5].max() < 100  # the left margin was cropped away before the model: dimmed
    centre = pixels[drawn.height // 2, drawn.width // 2]
    assert not np.array_equal(centre, [200, 200, 200])  # coloured by the map
    decoded = Image.open(io.BytesIO(png_bytes(drawn)))
    assert decoded.format == "PNG" and decoded.size == drawn.size


def test_an_explanation_round_trips_through_its_json_form_and_bad_ones_say_why(head):
    from dogbreed.explain import Explanation

    feature_map = np.random.default_rng(4).random((8, 7, 7)).astype(np.float32)
    answer = explain(feature_map, head, 2, "c", Preprocessing(), (640, 480)).to_dict()
    again = Explanation.from_dict(answer)
    assert again.to_dict() == answer
    with pytest.raises(ExplainError, match="^lacks grid, peak$"):
        Explanation.from_dict({k: v for k, v in answer.items() if k not in ("grid", "peak")})
    with pytest.raises(ExplainError, match="is malformed"):
        Explanation.from_dict({**answer, "box": [1, 2]})
    with pytest.raises(ExplainError, match="is malformed: its grid"):
        Explanation.from_dict({**answer, "grid": [1.0, 2.0]})
    with pytest.raises(ExplainError, match="not an object"):
        Explanation.from_dict([answer])
