"""Fuzzing the request path: whatever the body and Content-Type, the answer is a
prediction or a client error (4xx) with a message, never an unexpected exception.

Bodies are built from real encodings of a picture in every format Pillow reads here,
then truncated, bit-flipped, spliced or replaced by random bytes. Derandomized, so a
failure reproduces.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sagemaker_inference.errors import BaseInferenceToolkitError

ACCEPTED = ["image/jpeg", "image/png", "application/x-image", "image/jpeg; charset=binary", "IMAGE/PNG"]
REFUSED = ["text/plain", "application/json", "", None, "image/", "multipart/form-data; boundary=x"]
# Mostly accepted types, so most examples reach the decoder.
CONTENT_TYPES = ACCEPTED * 4 + REFUSED


def _encodings() -> list[bytes]:
    picture = Image.radial_gradient("L").convert("RGB").resize((96, 72))
    out = []
    for fmt, mode, kwargs in [
        ("JPEG", "RGB", {"quality": 80}), ("JPEG", "CMYK", {}), ("PNG", "RGBA", {}), ("PNG", "P", {}),
        ("PNG", "I;16", {}), ("GIF", "P", {}), ("BMP", "RGB", {}), ("TIFF", "RGB", {}), ("WEBP", "RGB", {}),
        ("ICO", "RGBA", {}), ("PPM", "RGB", {}),
    ]:
        buf = io.BytesIO()
        picture.convert(mode).save(buf, format=fmt, **kwargs)
        out.append(buf.getvalue())
    return out


ENCODINGS = _encodings()


@st.composite
def bodies(draw) -> bytes:
    base = draw(st.sampled_from(ENCODINGS))
    how = draw(st.sampled_from(["intact", "truncated", "flipped", "spliced", "random", "header+random"]))
    if how == "intact":
        return base
    if how == "truncated":
        return base[: draw(st.integers(0, len(base) - 1))]
    if how == "flipped":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "spliced":
        other = draw(st.sampled_from(ENCODINGS))
        cut = draw(st.integers(0, len(base)))
        return base[:cut] + other[draw(st.integers(0, len(other))):]
    if how == "random":
        return draw(st.binary(max_size=4096))
    return base[:16] + draw(st.binary(max_size=2048))


@pytest.fixture(scope="module")
def classes(predictor) -> list[str]:
    return predictor.classes


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), content_type=st.sampled_from(CONTENT_TYPES), top_k=st.sampled_from([None, "1", "3", "0", "x"]),
       explain=st.sampled_from([None, "cam"]))
def test_any_request_is_a_prediction_or_a_client_error(predictor, classes, body, content_type, top_k, explain):
    try:
        answer = predictor.predict(body, content_type, top_k, explain)
    except BaseInferenceToolkitError as exc:
        assert 400 <= exc.status_code < 500, (exc.status_code, exc.message)
        assert exc.message.strip()
    else:
        assert answer["predicted_label"] in classes
        assert abs(sum(e["probability"] for e in answer["top_k"]) - 1) < 1e-3 or len(answer["top_k"]) < len(classes)
        assert ("explanation" in answer) == (explain == "cam")


def test_every_seed_encoding_is_served(predictor):
    # The fuzzer's starting points are themselves valid requests.
    for body in ENCODINGS:
        assert predictor.predict(body, "application/x-image")["predicted_label"] in predictor.classes
