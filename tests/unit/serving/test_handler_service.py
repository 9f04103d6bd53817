"""The MMS entry point, driven with a stand-in for MMS's ``Context``."""

import json

import pytest

from dogbreed.serving import handler_service
from dogbreed.serving.handler_service import HandlerService, requested_top_k

from .images import encode, half_and_half


class FakeContext:
    """What mms.context.Context offers the handler, recording the responses."""

    def __init__(self, model_dir, headers_per_request=()):
        self.system_properties = {"model_dir": str(model_dir)}
        self.headers = list(headers_per_request)
        self.status = {}
        self.content_type = {}

    def get_all_request_header(self, idx):
        return self.headers[idx]

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = (code, phrase)


@pytest.fixture(scope="module")
def service(model_dir):
    service = HandlerService()
    assert service.handle(None, FakeContext(model_dir)) is None  # MMS's load call
    assert service.predictor is not None
    return service


def call(service, model_dir, requests):
    """requests: [(headers, body)] -> [(status, parsed JSON)]; checks the content type."""
    # MMS keeps the body part's metadata beside the request headers.
    headers = [dict(h, body={"content-type": h.get("Content-Type", "")}) for h, _ in requests]
    context = FakeContext(model_dir, headers)
    bodies = service.handle([{"body": body} for _, body in requests], context)
    assert len(bodies) == len(requests)
    for idx in range(len(requests)):
        assert context.content_type[idx] == "application/json"
    return [(context.status[i][0], json.loads(b)) for i, b in enumerate(bodies)]


def test_mixed_batch_answers_each_request(service, model_dir, real_photos):
    photo = real_photos[0].read_bytes()
    answers = call(service, model_dir, [
        ({"Content-Type": "image/jpeg"}, photo),
        ({"Content-Type": "text/plain"}, b"hello"),
        ({"content-type": "image/jpeg"}, b""),
        ({"Content-Type": "image/jpeg", "X-Top-K": "1"}, photo),
        ({"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}, photo),
        ({"Content-Type": "image/png"}, photo[:1000]),
        ({"Content-Type": "image/jpeg", "X-Top-K": "zero"}, photo),
    ])
    statuses = [s for s, _ in answers]
    assert statuses == [200, 415, 400, 200, 200, 400, 400]
    assert len(answers[0][1]["top_k"]) == 3
    assert len(answers[3][1]["top_k"]) == 1
    assert len(answers[4][1]["top_k"]) == 2
    for status, body in answers:
        if status != 200:
            assert set(body) == {"error"} and len(body["error"]) > 20


def test_payload_limit_and_pixels(service, model_dir, monkeypatch):
    from PIL import Image

    big = encode(half_and_half()) + b"\0" * service.predictor.max_payload_bytes
    many_pixels = encode(Image.new("L", (50_000, 1_000)), "PNG")
    monkeypatch.setattr(service.predictor, "max_image_pixels", 1_000_000)
    answers = call(service, model_dir, [({"Content-Type": "image/jpeg"}, big), ({"Content-Type": "image/png"}, many_pixels)])
    assert [s for s, _ in answers] == [413, 413]
    assert "bytes" in answers[0][1]["error"] and "pixels" in answers[1][1]["error"]


def test_missing_body_part_is_empty(service, model_dir):
    context = FakeContext(model_dir, [{"Content-Type": "image/jpeg"}])
    [body] = service.handle([{}], context)
    assert context.status[0][0] == 400 and "empty" in json.loads(body)["error"]


def test_unexpected_bug_is_a_json_500_and_the_service_survives(service, model_dir, monkeypatch, real_photos):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(service.predictor, "run", boom)
    [(status, body)] = call(service, model_dir, [({"Content-Type": "image/jpeg"}, real_photos[0].read_bytes())])
    assert status == 500 and "error" in body
    monkeypatch.undo()
    [(status, _)] = call(service, model_dir, [({"Content-Type": "image/jpeg"}, real_photos[0].read_bytes())])
    assert status == 200


def test_not_initialised_is_503(model_dir):
    [(status, body)] = call(HandlerService(), model_dir, [({"Content-Type": "image/jpeg"}, b"x")])
    assert status == 503 and "not loaded" in body["error"]


def test_initialise_reads_the_environment(model_dir, monkeypatch):
    monkeypatch.setenv("DOGBREED_TOP_K", "2")
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1")
    monkeypatch.setenv("DOGBREED_MAX_IMAGE_PIXELS", "1234")
    service = HandlerService()
    service.handle(None, FakeContext(model_dir))
    p = service.predictor
    assert (p.default_top_k, p.max_payload_bytes, p.max_image_pixels) == (2, 1024 * 1024, 1234)


def test_initialise_with_a_bad_model_raises(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        HandlerService().handle(None, FakeContext(tmp_path / "missing"))


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


def test_module_entry_point_is_the_service():
    assert callable(handler_service.handle)
