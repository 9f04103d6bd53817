"""Class activation maps from the endpoint: ``X-Explain: cam``, ``explain=cam``, ``Accept: image/png``.

The JSON answer adds the top class's map (grid, box, peak) in the uploaded picture's
pixels; the PNG answer is the picture with the map overlaid. Models that cannot give
maps (an export from before them, a ``code/inference.py`` that makes its own
prediction) answer a 422 that says why, never a 500.
"""

from __future__ import annotations

import io
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.artifacts import HEAD_FILE, ModelLoadError
from dogbreed.explain import OVERLAY_MAX_SIDE, Head
from dogbreed.serving.environment import ConfigurationError, ServingEnvironment
from dogbreed.serving.errors import BadRequestError, NotExplainableError
from dogbreed.serving.handler_service import HandlerService
from dogbreed.serving.inference_handler import InferenceHandler
from dogbreed.serving.predictor import ExplainedPrediction, Predictor
from dogbreed.serving.request import explain_method, requested_explain

from .fake_mms import Context, call
from .images import encode, half_and_half
from .model_code import model_with_code

JPEG = {"Content-Type": "image/jpeg"}
CAM = dict(JPEG, **{"X-Explain": "cam"})
PNG_ANSWER = dict(JPEG, Accept="image/png")


# --- the request: X-Explain, custom attributes, Accept, DOGBREED_EXPLAIN ---------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"x-explain": "cam"}, "cam"),
        ({"x-explain": " CAM "}, "cam"),
        ({"x-explain": "None"}, "none"),
        ({"x-explain": " "}, None),
        ({"x-amzn-sagemaker-custom-attributes": "explain=cam"}, "cam"),
        ({"x-amzn-sagemaker-custom-attributes": "top_k=2;Explain=Cam, trace=1"}, "cam"),
        ({"x-amzn-sagemaker-custom-attributes": "explain="}, None),
        ({"x-amzn-sagemaker-custom-attributes": "no_explain=cam"}, None),
        ({"x-explain": "none", "x-amzn-sagemaker-custom-attributes": "explain=cam"}, "none"),
    ],
)
def test_requested_explain(headers, expected):
    assert requested_explain(headers) == expected


@pytest.mark.parametrize(
    "headers, named",
    [
        ({"x-explain": "gradcam"}, "X-Explain: 'gradcam'"),
        ({"x-explain": "true"}, "X-Explain: 'true'"),
        ({"x-amzn-sagemaker-custom-attributes": "explain=yes"}, "explain='yes'"),
    ],
)
def test_bad_explain_values_are_400_naming_the_choices(headers, named):
    with pytest.raises(BadRequestError) as info:
        requested_explain(headers)
    assert info.value.status_code == 400
    assert named in info.value.message and "cam, none" in info.value.message


@pytest.mark.parametrize(
    "requested, answer, default, expected",
    [
        (None, "application/json", "none", None),
        ("cam", "application/json", "none", "cam"),
        (None, "application/json", "cam", "cam"),
        ("none", "application/json", "cam", None),
        (None, "image/png", "none", "cam"),
        ("cam", "image/png", "none", "cam"),
        (None, None, "none", None),  # an Accept only a user's output_fn understands
    ],
)
def test_explain_method(requested, answer, default, expected):
    assert explain_method(requested, answer, default) == expected


def test_a_png_answer_without_a_map_is_a_contradiction():
    with pytest.raises(BadRequestError, match="image/png.*X-Explain: none"):
        explain_method("none", "image/png", "none")


def test_explain_variable():
    assert ServingEnvironment.from_env({}, cpus=1).explain == "none"
    assert ServingEnvironment.from_env({"DOGBREED_EXPLAIN": "cam"}, cpus=1).explain == "cam"
    assert ServingEnvironment.from_env({"DOGBREED_EXPLAIN": "none"}, cpus=1).explain == "none"
    with pytest.raises(ConfigurationError, match="DOGBREED_EXPLAIN"):
        ServingEnvironment.from_env({"DOGBREED_EXPLAIN": "gradcam"}, cpus=1)


def test_default_accept_variable():
    assert ServingEnvironment.from_env({}, cpus=1).default_accept == "application/json"
    env = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "image/png"}
    assert ServingEnvironment.from_env(env, cpus=1).default_accept == "image/png"


# --- the predictor's answer ---------------------------------------------------------------------------------------


def check_explanation(predictor: Predictor, answer: dict, size: tuple[int, int], image: Image.Image | None = None):
    """The explanation of ``answer`` for a picture of ``size``: shape, placement and sums."""
    e = answer["explanation"]
    width, height = size
    assert e["method"] == "cam"
    assert (e["class"], e["label"]) == (answer["predicted_class"], answer["predicted_label"])
    grid = np.asarray(e["grid"])
    assert grid.shape == predictor.metadata.explain.grid
    region = predictor.preprocessing.crop_region(width, height)
    assert e["grid_region"] == pytest.approx(region, abs=0.051)
    x0, y0, x1, y1 = e["box"]
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert region[0] - 0.05 <= x0 and x1 <= region[2] + 0.05 and region[1] - 0.05 <= y0 and y1 <= region[3] + 0.05
    assert x0 <= e["peak"][0] <= x1 and y0 <= e["peak"][1] <= y1
    # The map is exact: its mean plus the bias is the class's logit, the one the model outputs.
    assert e["logit"] == pytest.approx(grid.mean() + e["bias"], abs=1e-3)
    if image is not None:
        logits = predictor.run(predictor.preprocessing(image)[None])[0]
        assert e["logit"] == pytest.approx(float(logits[answer["predicted_class"]]), abs=1e-3)
        assert answer["predicted_class"] == int(np.argmax(logits))


def test_the_answer_adds_the_top_class_map(predictor, real_photos):
    assert predictor.can_explain
    for photo in real_photos[::4]:
        image = predictor.decode(photo.read_bytes())
        answer = predictor.classify(image, 2, explain="cam")
        check_explanation(predictor, answer, image.size, image)
        assert isinstance(answer, ExplainedPrediction) and answer.image is image
        plain = predictor.classify(image, 2)
        assert "explanation" not in plain
        assert {k: v for k, v in answer.items() if k != "explanation"} == plain
        assert json.loads(json.dumps(answer)) == dict(answer)  # the extra attributes stay out of the JSON


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (1000, 12), (9, 7)])
def test_the_map_is_placed_on_any_shape_of_picture(predictor, size):
    image = half_and_half(size)
    answer = predictor.classify(image, explain="cam")
    check_explanation(predictor, answer, size, image)


def test_predict_takes_explain_too(predictor):
    answer = predictor.predict(encode(half_and_half()), "image/jpeg", 1, "cam")
    assert len(answer["top_k"]) == 1 and answer["explanation"]["class"] == answer["predicted_class"]
    assert "explanation" not in predictor.predict(encode(half_and_half()), "image/jpeg", 1, "none")


def test_a_map_needs_the_picture_not_its_array(predictor):
    tensor = predictor.preprocessing(half_and_half())
    with pytest.raises(NotExplainableError, match="input_fn gave a ndarray") as info:
        predictor.classify(tensor, explain="cam")
    assert info.value.status_code == 422


def test_an_unknown_method_is_400(predictor):
    with pytest.raises(BadRequestError, match="gradcam"):
        predictor.classify(half_and_half(), explain="gradcam")


# --- through the handler service, as MMS calls it -----------------------------------------------------------------


@pytest.fixture(scope="module")
def service(model_dir):
    service = HandlerService(ServingEnvironment.from_env({}, cpus=1))
    service.initialize(Context(model_dir))
    return service


def test_json_answers_with_and_without_the_map(service, model_dir, real_photos):
    photo = real_photos[0].read_bytes()
    size = Image.open(io.BytesIO(photo)).size
    answers = call(service.handle, model_dir, [
        (JPEG, photo),
        (CAM, photo),
        (dict(JPEG, **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=1,explain=cam"}), photo),
        (dict(CAM, Accept="application/json"), photo),
        (dict(JPEG, **{"X-Explain": "none"}), photo),
    ])
    assert [(s, t) for s, t, _ in answers] == [(200, "application/json")] * 5
    plain, header, attribute, accept_json, none = (body for _, _, body in answers)
    assert "explanation" not in plain and "explanation" not in none
    assert none == plain
    check_explanation(service.transformer.model, header, size)
    assert len(attribute["top_k"]) == 1 and attribute["explanation"] == header["explanation"]
    assert accept_json == header
    assert {k: v for k, v in header.items() if k != "explanation"} == plain


def test_png_answer_is_the_picture_with_the_map(service, model_dir):
    picture = half_and_half((320, 240))
    answers = call(service.handle, model_dir, [
        (PNG_ANSWER, encode(picture)),
        (dict(JPEG, Accept="image/*"), encode(picture)),
        (dict(PNG_ANSWER, **{"X-Explain": "cam"}), encode(picture)),
    ])
    for status, content_type, body in answers:
        assert (status, content_type) == (200, "image/png")
        overlay = Image.open(io.BytesIO(body))
        assert overlay.format == "PNG" and overlay.size == (320, 240) and overlay.mode == "RGB"
    pixels = np.asarray(Image.open(io.BytesIO(answers[0][2])), np.float32)
    original = np.asarray(picture, np.float32)
    # Left of the centre crop the model never saw: the picture, dimmed.
    np.testing.assert_allclose(pixels[120, 5], original[120, 5] * 0.35, atol=3)
    # Inside it the map is blended over the picture.
    assert np.abs(pixels[120, 100] - original[120, 100]).max() > 20


def test_a_large_picture_comes_back_scaled(service, model_dir):
    large = encode(half_and_half((1600, 1200)))
    [(status, content_type, body)] = call(service.handle, model_dir, [(PNG_ANSWER, large)])
    assert (status, content_type) == (200, "image/png")
    assert Image.open(io.BytesIO(body)).size == (OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE * 3 // 4)


def test_bad_requests_are_json_4xx(service, model_dir, real_photos):
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model_dir, [
        (dict(JPEG, **{"X-Explain": "heatmap"}), photo),
        (dict(PNG_ANSWER, **{"X-Explain": "none"}), photo),
        (dict(JPEG, **{"Accept": "image/jpeg"}), photo),
        (dict(JPEG, **{"X-Amzn-SageMaker-Custom-Attributes": "explain=1"}), photo),
        ({"Content-Type": "text/plain", "Accept": "image/png"}, b"hello"),
    ])
    assert [s for s, _, _ in answers] == [400, 400, 406, 400, 415]
    assert all(t == "application/json" for _, t, _ in answers)
    assert "heatmap" in answers[0][2]["error"] and "X-Explain: none" in answers[1][2]["error"]
    assert "image/png" in answers[2][2]["error"] and "application/json" in answers[2][2]["error"]


def test_dogbreed_explain_is_the_default(model_dir, real_photos):
    service = HandlerService(ServingEnvironment.from_env({"DOGBREED_EXPLAIN": "cam"}, cpus=1))
    service.initialize(Context(model_dir))
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model_dir, [(JPEG, photo), (dict(JPEG, **{"X-Explain": "none"}), photo)])
    assert [s for s, _, _ in answers] == [200, 200]
    assert "explanation" in answers[0][2] and "explanation" not in answers[1][2]


def test_the_default_accept_can_ask_for_the_png(model_dir):
    settings = ServingEnvironment.from_env({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "image/png"}, cpus=1)
    service = HandlerService(settings)
    service.initialize(Context(model_dir))
    picture = encode(half_and_half())
    answers = call(service.handle, model_dir, [(JPEG, picture), (dict(JPEG, Accept="*/*"), picture)])
    assert [(s, t) for s, t, _ in answers] == [(200, "image/png")] * 2


def test_our_output_fn_refuses_a_png_without_a_map():
    with pytest.raises(NotExplainableError, match="without one") as info:
        InferenceHandler().default_output_fn({"predicted_class": 0}, "image/png")
    assert info.value.status_code == 422


# --- models that cannot give maps ---------------------------------------------------------------------------------


def old_export(model_dir: Path, dest: Path) -> Path:
    """The model as exported before class activation maps: one ONNX output, no head.npz, no explain in model.json."""
    import onnx

    dest.mkdir(parents=True)
    model = onnx.load(str(model_dir / "model.onnx"))
    logits = [o for o in model.graph.output if o.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(logits)
    onnx.save(model, str(dest / "model.onnx"))
    raw = json.loads((model_dir / "model.json").read_text())
    del raw["explain"], raw["files"]["head"]
    (dest / "model.json").write_text(json.dumps(raw))
    return dest


@pytest.fixture(scope="module")
def old_model(model_dir, tmp_path_factory) -> Path:
    return old_export(model_dir, tmp_path_factory.mktemp("old") / "model")


def test_an_old_export_answers_422_when_asked_for_a_map(old_model, real_photos):
    service = HandlerService(ServingEnvironment.from_env({}, cpus=1))
    service.initialize(Context(old_model))
    assert not service.transformer.model.can_explain
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, old_model, [(JPEG, photo), (CAM, photo), (PNG_ANSWER, photo)])
    assert [(s, t) for s, t, _ in answers] == [(200, "application/json"), (422, "application/json"),
                                               (422, "application/json")]
    assert "explanation" not in answers[0][2]
    for _, _, body in answers[1:]:
        assert "exported before" in body["error"] and "model.json has no explain" in body["error"]


def test_an_old_export_with_dogbreed_explain_cam_does_not_start(old_model):
    service = HandlerService(ServingEnvironment.from_env({"DOGBREED_EXPLAIN": "cam"}, cpus=1))
    with pytest.raises(ModelLoadError, match="DOGBREED_EXPLAIN=cam, but this model was exported before"):
        service.initialize(Context(old_model))


def copy_model(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


def test_a_promised_map_that_is_not_there_stops_the_start(model_dir, old_model, tmp_path):
    no_head = copy_model(model_dir, tmp_path / "no-head")
    (no_head / HEAD_FILE).unlink()
    with pytest.raises(ModelLoadError, match="head.npz is not a readable head file"):
        Predictor(no_head)

    one_output = copy_model(model_dir, tmp_path / "one-output")
    shutil.copy(old_model / "model.onnx", one_output / "model.onnx")
    with pytest.raises(ModelLoadError, match="promises class activation maps from the output 'feature_map'"):
        Predictor(one_output)


def test_a_head_that_does_not_fit_stops_the_start(model_dir, tmp_path):
    head = Head.load(model_dir / HEAD_FILE)
    wrong_classes = copy_model(model_dir, tmp_path / "classes")
    Head(head.weight[:2], head.bias[:2]).save(wrong_classes / HEAD_FILE)
    with pytest.raises(ModelLoadError, match="head for 2 classes but model.json lists 3"):
        Predictor(wrong_classes)

    wrong_channels = copy_model(model_dir, tmp_path / "channels")
    Head(head.weight[:, :100], head.bias).save(wrong_channels / HEAD_FILE)
    with pytest.raises(ModelLoadError, match="expect \\(1, 100, 7, 7\\)"):
        Predictor(wrong_channels)

    another_model = copy_model(model_dir, tmp_path / "another")
    rng = np.random.default_rng(0)
    Head(rng.normal(size=head.weight.shape).astype(np.float32), head.bias).save(another_model / HEAD_FILE)
    with pytest.raises(ModelLoadError, match="does not fit the ONNX model"):
        Predictor(another_model)


# --- the model's own code/inference.py ----------------------------------------------------------------------------


def start(model_dir, tmp_path, inference_py: str, env: dict | None = None) -> tuple[HandlerService, Path]:
    """A handler service on a model whose code/inference.py is ``inference_py``."""
    model = model_with_code(model_dir, tmp_path / "model", {"inference.py": textwrap.dedent(inference_py)})
    service = HandlerService(ServingEnvironment.from_env(env or {}, cpus=1))
    service.initialize(Context(model))
    return service, model


USER_PREDICT_FN = """
    def predict_fn(image, model):
        return {"size": list(image.size)}
"""


def test_a_user_predict_fn_gives_no_maps(model_dir, tmp_path, real_photos):
    service, model = start(model_dir, tmp_path, USER_PREDICT_FN)
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model, [(JPEG, photo), (CAM, photo), (PNG_ANSWER, photo),
                                           (dict(JPEG, **{"X-Explain": "what"}), photo)])
    assert [(s, t) for s, t, _ in answers] == [(200, "application/json"), (422, "application/json"),
                                               (422, "application/json"), (400, "application/json")]
    assert set(answers[0][2]) == {"size"}
    assert "code/inference.py replaces predict_fn" in answers[1][2]["error"]
    assert "code/inference.py replaces predict_fn" in answers[2][2]["error"]


def test_a_user_transform_fn_gives_no_maps_but_owns_accept(model_dir, tmp_path):
    service, model = start(model_dir, tmp_path, """
        def transform_fn(model, body, content_type, accept):
            return f"{len(body)} bytes for {accept}", "text/plain"
    """)
    answers = call(service.handle, model, [(CAM, b"12345"), (PNG_ANSWER, b"12345")])
    assert answers[0][0] == 422 and "replaces transform_fn" in answers[0][2]["error"]
    assert answers[1] == (200, "text/plain", "5 bytes for image/png")


def test_dogbreed_explain_cam_with_a_user_predict_fn_does_not_start(model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="DOGBREED_EXPLAIN=cam, but the model's code/inference.py replaces predict"):
        start(model_dir, tmp_path, USER_PREDICT_FN, {"DOGBREED_EXPLAIN": "cam"})


def test_a_user_output_fn_gets_the_explanation(model_dir, tmp_path, real_photos):
    service, model = start(model_dir, tmp_path, """
        import json

        def output_fn(prediction, accept):
            return json.dumps({"keys": sorted(prediction), "accept": accept}), "application/json"
    """)
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model, [(JPEG, photo), (CAM, photo), (PNG_ANSWER, photo)])
    assert [s for s, _, _ in answers] == [200, 200, 200]
    assert "explanation" not in answers[0][2]["keys"]
    assert "explanation" in answers[1][2]["keys"]
    # Accept: image/png asks for the map, which the user's output_fn renders as it likes.
    assert answers[2][2] == {"keys": answers[1][2]["keys"], "accept": "image/png"}


def test_a_user_input_fn_giving_the_picture_keeps_maps(model_dir, tmp_path, real_photos):
    service, model = start(model_dir, tmp_path, """
        import io
        from PIL import Image

        def input_fn(body, content_type):
            return Image.open(io.BytesIO(body)).convert("RGB")
    """)
    [(status, content_type, body)] = call(service.handle, model, [(PNG_ANSWER, real_photos[0].read_bytes())])
    assert (status, content_type) == (200, "image/png")
    assert Image.open(io.BytesIO(body)).size == Image.open(real_photos[0]).size


def test_a_user_input_fn_giving_an_array_is_422(model_dir, tmp_path, real_photos):
    # The model's preprocessing, done by the user's input_fn: the model is fed, the picture is gone.
    service, model = start(model_dir, tmp_path, """
        import io
        from PIL import Image
        from dogbreed.preprocessing import Preprocessing

        def input_fn(body, content_type):
            return Preprocessing()(Image.open(io.BytesIO(body)).convert("RGB"))
    """)
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model, [(JPEG, photo), (CAM, photo)])
    assert answers[0][0] == 200 and "explanation" not in answers[0][2]
    assert answers[1][0] == 422 and "not a PIL image" in answers[1][2]["error"]
