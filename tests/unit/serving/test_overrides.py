"""``code/inference.py`` in the model directory replaces the default functions, as on SageMaker.

Each test writes a model directory with its own ``code/inference.py`` and starts the
handler service on it as an MMS worker does.
"""

import textwrap

import pytest

from dogbreed.serving.handler_service import HandlerService

from .fake_mms import Context, call
from .model_code import model_with_code

JPEG = {"Content-Type": "image/jpeg"}
BREEDS = {"Beagle", "Siberian husky", "Toy poodle"}


def start(model_dir, tmp_path, inference_py: str) -> tuple[HandlerService, object]:
    """A handler service on a model whose code/inference.py is ``inference_py``."""
    model = model_with_code(model_dir, tmp_path / "model", {"inference.py": textwrap.dedent(inference_py)})
    service = HandlerService()
    service.initialize(Context(model))
    return service, model


def test_output_fn_changes_the_answer(model_dir, tmp_path, real_photos):
    service, model = start(model_dir, tmp_path, """
        import json

        def output_fn(prediction, accept):
            return json.dumps({"breed": prediction["predicted_label"].upper()}), "application/json"
    """)
    [(status, content_type, body)] = call(service.handle, model, [(JPEG, real_photos[0].read_bytes())])
    assert (status, content_type) == (200, "application/json")
    assert set(body) == {"breed"} and body["breed"] in {b.upper() for b in BREEDS}


def test_predict_fn_with_context_gets_its_own_request(model_dir, tmp_path, real_photos):
    # The optional trailing context argument; in a batch, index 0 is the request itself.
    service, model = start(model_dir, tmp_path, """
        def predict_fn(image, model, context):
            asked = context.get_request_header(0, "X-Label")
            return {"asked": asked, "size": list(image.size), "classes": len(model.classes)}
    """)
    photo = real_photos[0].read_bytes()
    answers = call(service.handle, model, [(dict(JPEG, **{"X-Label": "a"}), photo), (dict(JPEG, **{"X-Label": "b"}), photo)])
    assert [body["asked"] for _, _, body in answers] == ["a", "b"]
    assert answers[0][2]["classes"] == 3 and answers[0][2]["size"][0] > 0


def test_model_fn_and_input_fn(model_dir, tmp_path):
    service, model = start(model_dir, tmp_path, """
        def model_fn(model_dir):
            return {"dir": model_dir}

        def input_fn(body, content_type):
            return body.decode()

        def predict_fn(text, model):
            return {"echo": text, "model_dir": model["dir"]}
    """)
    [(status, _, body)] = call(service.handle, model, [({"Content-Type": "text/plain"}, b"woof")])
    assert status == 200 and body == {"echo": "woof", "model_dir": str(model)}


def test_transform_fn_replaces_the_request_path(model_dir, tmp_path):
    service, model = start(model_dir, tmp_path, """
        def transform_fn(model, body, content_type, accept):
            return f"{len(body)} bytes of {content_type}", "text/plain"
    """)
    [(status, content_type, body)] = call(service.handle, model, [(JPEG, b"12345")])
    assert (status, content_type, body) == (200, "text/plain", "5 bytes of image/jpeg")


def test_the_toolkits_unsupported_format_error_is_a_415(model_dir, tmp_path):
    # The toolkit's own transformer turns it into a 500 with a traceback as the body.
    service, model = start(model_dir, tmp_path, """
        from sagemaker_inference import errors

        def input_fn(body, content_type):
            raise errors.UnsupportedFormatError(content_type)
    """)
    [(status, content_type, body)] = call(service.handle, model, [({"Content-Type": "text/csv"}, b"a,b")])
    assert (status, content_type) == (415, "application/json")
    assert "text/csv" in body["error"] and "Traceback" not in body["error"]


@pytest.mark.parametrize(
    "raise_line, status, phrase",
    [
        ('errors.BaseInferenceToolkitError(418, "no coffee here", "I\'m a teapot")', 418, "I'm a teapot"),
        ('errors.GenericInferenceToolkitError(422, "bad crop")', 422, "bad crop"),
        ('errors.BaseInferenceToolkitError(400, "split", "Bad\\r\\nRequest")', 400, "Bad  Request"),
    ],
)
def test_user_errors_keep_their_status_as_json(model_dir, tmp_path, real_photos, raise_line, status, phrase):
    service, model = start(model_dir, tmp_path, f"""
        from sagemaker_inference import errors

        def predict_fn(image, model):
            raise {raise_line}
    """)
    context = Context(model, [JPEG])
    [body] = service.handle([{"body": real_photos[0].read_bytes()}], context)
    assert context.get_response_status(0) == (status, phrase)
    assert context.get_response_content_type(0) == "application/json"
    assert '"error"' in body and "Traceback" not in body


def test_a_failing_user_function_is_a_500_that_tells_nothing_internal(model_dir, tmp_path, real_photos):
    service, model = start(model_dir, tmp_path, """
        def output_fn(prediction, accept):
            raise KeyError("private detail")
    """)
    [(status, _, body)] = call(service.handle, model, [(JPEG, real_photos[0].read_bytes())])
    assert status == 500 and "private detail" not in body["error"]


def test_transform_fn_with_input_fn_is_refused_at_start(model_dir, tmp_path):
    with pytest.raises(ValueError, match="transform_fn"):
        start(model_dir, tmp_path, """
            def transform_fn(model, body, content_type, accept):
                return body

            def input_fn(body, content_type):
                return body
        """)


def test_an_inference_py_that_fails_to_import_stops_the_start(model_dir, tmp_path):
    with pytest.raises(ModuleNotFoundError, match="not_installed_anywhere"):
        start(model_dir, tmp_path, "import not_installed_anywhere\n")


def test_sagemaker_program_names_the_module(model_dir, tmp_path, real_photos, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "serving_code.py")
    model = model_with_code(model_dir, tmp_path / "model", {
        "serving_code.py": "def output_fn(prediction, accept):\n    return 'custom', 'text/plain'\n",
        "inference.py": "raise RuntimeError('not this one')\n",
    })
    service = HandlerService()
    service.initialize(Context(model))
    [(status, _, body)] = call(service.handle, model, [(JPEG, real_photos[0].read_bytes())])
    assert (status, body) == (200, "custom")
