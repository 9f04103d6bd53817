"""The MMS entry point with the default functions, driven with a stand-in for MMS's ``Context``."""

import logging

import pytest
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer as ToolkitTransformer

from dogbreed.serving import handler_service
from dogbreed.serving.environment import ServingEnvironment
from dogbreed.serving.handler_service import HandlerService
from dogbreed.serving.predictor import Predictor
from dogbreed.serving.request import requested_top_k

from .fake_mms import Context, call
from .images import encode, half_and_half

JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def service(model_dir):
    service = HandlerService()
    service.initialize(Context(model_dir))
    assert isinstance(service.transformer.model, Predictor)
    return service


def test_it_is_the_toolkits_handler_service(service):
    assert isinstance(service, DefaultHandlerService)
    assert isinstance(service.transformer, ToolkitTransformer)
    assert isinstance(service.transformer._default_inference_handler, DefaultInferenceHandler)


def test_mixed_batch_answers_each_request(service, model_dir, real_photos):
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model_dir, [
        (JPEG, photo),
        ({"Content-Type": "text/plain"}, b"hello"),
        ({"content-type": "image/jpeg"}, b""),
        ({"Content-Type": "image/jpeg", "X-Top-K": "1"}, photo),
        ({"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}, photo),
        ({"Content-Type": "image/png"}, photo[:1000]),
        ({"Content-Type": "image/jpeg", "X-Top-K": "zero"}, photo),
        ({"Content-Type": "application/json"}, b'{"url": "x"}'),
        ({"Content-Type": "text/csv"}, photo),  # not UTF-8: still the type's 415
    ])
    assert [s for s, _, _ in answers] == [200, 415, 400, 200, 200, 400, 400, 415, 415]
    assert all(content_type == "application/json" for _, content_type, _ in answers)
    # Each request's own X-Top-K, not the first request's.
    assert [len(answers[i][2]["top_k"]) for i in (0, 3, 4)] == [3, 1, 2]
    for status, _, body in answers:
        if status != 200:
            assert set(body) == {"error"} and len(body["error"]) > 20


def test_status_line_has_the_standard_phrase(service, model_dir):
    context = Context(model_dir, [{"Content-Type": "text/csv"}])
    service.handle([{"body": b"a,b"}], context)
    assert context.get_response_status(0) == (415, "Unsupported Media Type")


def test_payload_limit_and_pixels(model_dir):
    from PIL import Image

    settings = ServingEnvironment.from_env(
        {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1", "DOGBREED_MAX_IMAGE_PIXELS": "1000000"}, cpus=1
    )
    service = HandlerService(settings)
    service.initialize(Context(model_dir))
    big = encode(half_and_half()) + b"\0" * 1024 * 1024
    many_pixels = encode(Image.new("L", (50_000, 1_000)), "PNG")
    answers = call(service.handle, model_dir, [(JPEG, big), ({"Content-Type": "image/png"}, many_pixels)])
    assert [s for s, _, _ in answers] == [413, 413]
    assert "bytes" in answers[0][2]["error"] and "pixels" in answers[1][2]["error"]


def test_missing_body_part_is_empty(service, model_dir):
    context = Context(model_dir, [JPEG])
    [body] = service.handle([{}], context)
    assert context.get_response_status(0)[0] == 400 and "empty" in body


@pytest.mark.parametrize("accept, status", [(None, 200), ("*/*", 200), ("application/json", 200), ("text/csv", 406)])
def test_accept(service, model_dir, real_photos, accept, status):
    headers = dict(JPEG, **({"Accept": accept} if accept else {}))
    [(answer_status, content_type, body)] = call(service.handle, model_dir, [(headers, real_photos[0].read_bytes())])
    assert (answer_status, content_type) == (status, "application/json")
    assert ("predicted_label" in body) == (status == 200)


def test_default_accept_is_the_toolkits_setting(model_dir, real_photos, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
    service = HandlerService()
    service.initialize(Context(model_dir))
    [(status, _, body)] = call(service.handle, model_dir, [(JPEG, real_photos[0].read_bytes())])
    assert status == 406 and "text/csv" in body["error"]


def test_unexpected_bug_is_a_json_500_and_the_service_survives(service, model_dir, monkeypatch, real_photos):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.transformer.model, "run", boom)
    [(status, _, body)] = call(service.handle, model_dir, [(JPEG, real_photos[0].read_bytes())])
    assert status == 500 and "logs" in body["error"] and "secret" not in body["error"]
    monkeypatch.undo()
    [(status, _, _)] = call(service.handle, model_dir, [(JPEG, real_photos[0].read_bytes())])
    assert status == 200


def test_a_model_that_cannot_load_is_503_per_request(tmp_path):
    # Not initialised at worker start: the toolkit loads on the first request, and fails.
    answers = call(HandlerService().handle, tmp_path / "missing", [(JPEG, b"x"), (JPEG, b"y")])
    assert [s for s, _, _ in answers] == [503, 503]
    assert "does not exist" in answers[0][2]["error"]


def test_initialise_reads_the_environment(model_dir, monkeypatch):
    monkeypatch.setenv("DOGBREED_TOP_K", "2")
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1")
    monkeypatch.setenv("DOGBREED_MAX_IMAGE_PIXELS", "1234")
    service = HandlerService()
    service.initialize(Context(model_dir))
    p = service.transformer.model
    assert (p.default_top_k, p.max_payload_bytes, p.max_image_pixels) == (2, 1024 * 1024, 1234)


def test_initialise_with_a_bad_model_raises(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        HandlerService().initialize(Context(tmp_path / "missing"))


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"x-top-k": " 3 "}, "3"),
        ({"x-amzn-sagemaker-custom-attributes": "top_k=4"}, "4"),
        ({"x-amzn-sagemaker-custom-attributes": "trace=1;top_k=2, other=x"}, "2"),
        ({"x-amzn-sagemaker-custom-attributes": "not_top_k=2"}, None),
        ({"x-top-k": "1", "x-amzn-sagemaker-custom-attributes": "top_k=4"}, "1"),
    ],
)
def test_requested_top_k(headers, expected):
    assert requested_top_k(headers) == expected


@pytest.fixture
def root_level():
    """Put the root logger's level back after a test that loads through the entry point (it sets it)."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_module_entry_point_loads_then_answers(model_dir, real_photos, root_level):
    assert handler_service.handle(None, Context(model_dir)) is None  # MMS's load call
    [(status, _, body)] = call(handler_service.handle, model_dir, [(JPEG, real_photos[0].read_bytes())])
    assert status == 200 and body["predicted_label"] in {"Beagle", "Siberian husky", "Toy poodle"}


def test_the_entry_point_sets_the_workers_log_level_before_loading(model_dir, monkeypatch, root_level):
    # MMS's worker logs from INFO up; SAGEMAKER_CONTAINER_LOG_LEVEL=warning quiets the worker's own lines.
    settings = ServingEnvironment.from_env({"SAGEMAKER_CONTAINER_LOG_LEVEL": "warning"}, cpus=1)
    monkeypatch.setattr(handler_service, "_service", HandlerService(settings))
    logging.getLogger().setLevel(logging.INFO)
    assert handler_service.handle(None, Context(model_dir)) is None
    assert logging.getLogger().level == logging.WARNING


def test_the_entry_point_stops_mms_per_request_metrics_lines(model_dir, root_level):
    # MMS's frontend drops the worker's "[METRICS]" lines (MODEL_METRICS off): the worker need not write them.
    metrics_logger = logging.getLogger(handler_service.MMS_SERVICE_LOGGER)
    metrics_logger.setLevel(logging.NOTSET)
    assert handler_service.handle(None, Context(model_dir)) is None
    assert not metrics_logger.isEnabledFor(logging.INFO) and metrics_logger.isEnabledFor(logging.WARNING)
