
import logging

import numpy as np
import pytest
from PIL import Image

from dogbreed.artifacts import ModelLoadError
from dogbreed.serving.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from dogbreed.serving.predictor import Predictor, make_session_options

from .images import encode, half_and_half

BREEDS = {"Beagle", "Siberian husky", "Toy poodle"}


def check_answer(answer, k):
    assert answer["predicted_label"] in BREEDS
    assert [e["class"] for e in answer["top_k"]][0] == answer["predicted_class"]
    assert answer["top_k"][0]["label"] == answer["predicted_label"]
    assert len(answer["top_k"]) == k
    probs = [e["probability"] for e in answer["top_k"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)


def test_real_photo(predictor, real_photos):
    answer = predictor.predict(real_photos[0].read_bytes(), "image/jpeg")
    check_answer(answer, 3)  # default 5, capped at the 3 classes
    assert sum(e["probability"] for e in answer["top_k"]) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("top_k, expected", [(1, 1), ("2", 2), (None, 3), ("", 3), (99, 3)])
def test_top_k(predictor, top_k, expected):
    check_answer(predictor.predict(encode(half_and_half()), "image/jpeg", top_k), expected)


@pytest.mark.parametrize("top_k", ["0", "-1", "three", "1.5"])
def test_bad_top_k(predictor, top_k):
    with pytest.raises(BadRequestError, match="top_k"):
        predictor.predict(encode(half_and_half()), "image/jpeg", top_k)


@pytest.mark.parametrize(
    "make, fmt",
    [
        (lambda: half_and_half().convert("L"), "JPEG"),
        (lambda: half_and_half().convert("P", palette=Image.ADAPTIVE), "PNG"),
        (lambda: half_and_half().convert("CMYK"), "JPEG"),
        (lambda: half_and_half().convert("RGBA"), "PNG"),
        (lambda: half_and_half().convert("LA"), "PNG"),
        (lambda: half_and_half(), "PNG"),
    ],
    ids=["grey-jpeg", "palette-png", "cmyk-jpeg", "rgba-png", "grey-alpha-png", "rgb-png"],
)
def test_every_mode_becomes_rgb(predictor, make, fmt):
    data = encode(make(), fmt)
    image = predictor.decode(data, "image/png" if fmt == "PNG" else "image/jpeg")
    assert image.mode == "RGB" and image.size == (320, 240)
    assert predictor.preprocess(data).shape == (3, 224, 224)
    check_answer(predictor.predict(data, "application/x-image", 3), 3)


def test_transparent_pixels_become_white(predictor):
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    decoded = predictor.decode(encode(image, "PNG"), "image/png")
    assert decoded.getpixel((10, 10)) == (255, 255, 255)


def test_exif_orientation_is_applied(predictor):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(half_and_half(), "JPEG", exif=exif, quality=95)
    image = predictor.decode(data, "image/jpeg")
    assert image.size == (240, 320)
    # The red left half of the stored picture is the top once upright.
    top, bottom = image.getpixel((120, 40)), image.getpixel((120, 280))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60
    # And it changes what the model sees.
    plain = encode(half_and_half(), "JPEG", quality=95)
    assert not np.allclose(predictor.preprocess(data), predictor.preprocess(plain), atol=0.1)


def test_unsupported_content_type(predictor):
    with pytest.raises(UnsupportedMediaTypeError) as info:
        predictor.predict(encode(half_and_half()), "text/csv")
    assert info.value.status_code == 415 and "image/jpeg" in info.value.message


@pytest.mark.parametrize(
    "body, match",
    [
        (b"", "empty"),
        (b'{"image": "abc"}', "looks like text"),
        (b"\x00\x01\x02garbage" * 10, "not a recognised image"),
    ],
    ids=["empty", "text", "garbage"],
)
def test_bad_bodies(predictor, body, match):
    with pytest.raises(BadRequestError, match=match) as info:
        predictor.predict(body, "image/jpeg")
    assert info.value.status_code == 400


def test_truncated_jpeg(predictor, real_photos):
    data = real_photos[0].read_bytes()
    with pytest.raises(BadRequestError, match="truncated or corrupt") as info:
        predictor.predict(data[: len(data) // 2], "image/jpeg")
    assert info.value.status_code == 400


def test_corrupt_png(predictor):
    data = bytearray(encode(half_and_half(), "PNG"))
    data[60:200] = b"\x00" * 140
    with pytest.raises(BadRequestError):
        predictor.predict(bytes(data), "image/png")


def test_payload_over_the_limit(predictor):
    body = encode(half_and_half()) + b"\x00" * (predictor.max_payload_bytes)
    with pytest.raises(PayloadTooLargeError, match="over the limit") as info:
        predictor.predict(body, "image/jpeg")
    assert info.value.status_code == 413


def test_too_many_pixels_checked_before_decoding(predictor):
    # A 3000x3000 PNG of one colour is small on the wire but over the 4 MP limit.
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    assert len(data) < predictor.max_payload_bytes
    with pytest.raises(PayloadTooLargeError, match="pixels") as info:
        predictor.predict(data, "image/png")
    assert info.value.status_code == 413


def test_batch_run_matches_single(predictor, real_photos):
    tensors = np.stack([predictor.preprocess(p.read_bytes()) for p in real_photos[:3]])
    batch = predictor.run(tensors)
    singles = np.concatenate([predictor.run(t[None]) for t in tensors])
    np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-4)


def test_missing_model_dir(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Predictor(tmp_path / "nope")


def test_missing_onnx(tmp_path, model_dir):
    (tmp_path / "model.json").write_text((model_dir / "model.json").read_text())
    with pytest.raises(ModelLoadError, match="model.onnx is missing"):
        Predictor(tmp_path)


def test_corrupt_onnx(tmp_path, model_dir):
    (tmp_path / "model.json").write_text((model_dir / "model.json").read_text())
    (tmp_path / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        Predictor(tmp_path)


def test_class_count_mismatch(tmp_path, model_dir):
    import json

    meta = json.loads((model_dir / "model.json").read_text())
    meta["classes"] = meta["classes"] + ["Extra"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    (tmp_path / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    with pytest.raises(ModelLoadError, match="4 classes"):
        Predictor(tmp_path)


def test_classify_takes_an_image_or_its_preprocessed_array(predictor, real_photos):
    data = real_photos[0].read_bytes()
    expected = predictor.predict(data, "image/jpeg", 2)
    assert predictor.classify(predictor.decode(data), 2) == expected
    assert predictor.classify(predictor.preprocess(data), 2) == expected


@pytest.mark.parametrize("level, severity", [(logging.DEBUG, 1), (logging.INFO, 3), (logging.WARNING, 3), (logging.ERROR, 3)])
def test_onnx_runtime_logs_its_info_only_at_debug(level, severity):
    # SAGEMAKER_CONTAINER_LOG_LEVEL's level; ORT's severities run 0 (verbose) to 4 (fatal).
    assert make_session_options(1, level).log_severity_level == severity
