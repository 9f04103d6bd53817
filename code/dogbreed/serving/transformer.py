"""The toolkit's :class:`~sagemaker_inference.transformer.Transformer`, answering every request.

The toolkit's transformer loads the model through ``model_fn``, picks each function from
``code/inference.py`` or the default handler and runs
``transform_fn`` = ``output_fn(predict_fn(input_fn(...)))``. Its ``transform`` is replaced
here (as the PyTorch toolkit does) because, as shipped in 1.10, it:

* answers every error with a plain-text body of the message *and a traceback*, and with
  status 500 for the toolkit's own :class:`UnsupportedFormatError`;
* handles a batch as if every request were the first: the first request's headers, its
  content type and status slot for all, and one error fails the whole batch.

Here each request gets its own headers, status and content type; errors are
``{"error": message}`` JSON with the error's status; an ``UnsupportedFormatError`` is a
415; anything unexpected is a logged 500 that tells the client nothing internal.

Class activation maps come from our ``predict_fn``. When ``code/inference.py`` replaces it
(or ``transform_fn``), a request asking for a map (``X-Explain: cam``, ``explain=cam``,
or ``Accept: image/png`` answered by our ``output_fn``) is a 422 saying so, and
``DOGBREED_EXPLAIN=cam`` stops the start. A user's ``transform_fn`` or ``output_fn``
owns the Accept header: ``Accept: image/png`` is theirs to answer.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from sagemaker_inference import content_types as toolkit_types
from sagemaker_inference import utils
from sagemaker_inference.errors import BaseInferenceToolkitError, GenericInferenceToolkitError, UnsupportedFormatError
from sagemaker_inference.transformer import Transformer as ToolkitTransformer

from dogbreed.artifacts import ModelLoadError
from dogbreed.explain import CAM, NO_MAP
from dogbreed.serving.content_types import JSON, PNG, negotiate
from dogbreed.serving.environment import EXPLAIN_ENV
from dogbreed.serving.errors import (
    ModelNotReadyError,
    NotExplainableError,
    UnsupportedMediaTypeError,
    error_body,
    reason_phrase,
)
from dogbreed.serving.request import accept_of, request_body, request_headers, requested_explain

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error while predicting; see the endpoint's logs"


def one_request(context: Any, idx: int) -> Any:
    """MMS's context narrowed to request ``idx`` of a batch, which becomes its index 0.

    Handler functions taking a ``context`` read ``request_processor[0]``, as SageMaker's
    toolkits do; in a batch of several that must be their own request.
    """
    if idx == 0 and len(context.request_processor) == 1:
        return context
    view = copy.copy(context)
    view.request_processor = [context.request_processor[idx]]
    view.request_ids = {0: (context.request_ids or {}).get(idx)}
    return view


def to_serving_error(exc: Exception) -> BaseInferenceToolkitError:
    """The client-facing error for ``exc``; unexpected exceptions become a logged 500."""
    if isinstance(exc, BaseInferenceToolkitError):
        return exc
    if isinstance(exc, UnsupportedFormatError):
        return UnsupportedMediaTypeError(" ".join(str(exc).split()))
    logger.error("unexpected error while predicting", exc_info=exc)
    return GenericInferenceToolkitError(500, INTERNAL_ERROR, reason_phrase(500))


class Transformer(ToolkitTransformer):
    """Runs the toolkit's handler functions for each request; answers errors as JSON."""

    @property
    def model(self) -> Any:
        """What ``model_fn`` returned; None until initialised."""
        return self._model

    def _validate_user_module_and_set_functions(self) -> None:
        """The toolkit's choice of functions; ``DOGBREED_EXPLAIN=cam`` then stops the start if the user's
        code makes the prediction (every request would be refused)."""
        super()._validate_user_module_and_set_functions()
        replaced = self.prediction_replaced_by()
        explain = self._default_inference_handler.settings.explain
        if replaced is not None and explain != NO_MAP:
            raise ModelLoadError(
                f"{EXPLAIN_ENV}={explain}, but the model's code/inference.py replaces {replaced}, "
                f"which gives no class activation maps; unset {EXPLAIN_ENV}"
            )

    def prediction_replaced_by(self) -> str | None:
        """``"transform_fn"`` or ``"predict_fn"`` when the model's own code replaces it (and so gives no maps)."""
        if self._transform_fn != self._default_transform_fn:
            return "transform_fn"
        if self._predict_fn != self._default_inference_handler.default_predict_fn:
            return "predict_fn"
        return None

    def transform(self, data: list, context: Any) -> list:
        """MMS's batch -> one response body per request, status and content type set per index."""
        try:
            self.validate_and_initialize(model_dir=context.system_properties.get("model_dir"), context=context)
        except Exception as exc:
            # Normally the model is loaded at worker start; reaching this means that failed.
            logger.exception("the model could not be loaded")
            error = ModelNotReadyError(f"the model could not be loaded: {exc}")
            return [self._answer_error(context, idx, error) for idx in range(len(data))]
        responses = []
        for idx, request in enumerate(data):
            try:
                body, media_type = self._transform_one(request, one_request(context, idx))
            except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others
                responses.append(self._answer_error(context, idx, to_serving_error(exc)))
                continue
            context.set_response_content_type(idx, media_type)
            context.set_response_status(code=200, phrase=reason_phrase(200), idx=idx)
            responses.append(body)
        return responses

    def _transform_one(self, request: Any, context: Any) -> tuple[Any, str]:
        """Run ``transform_fn`` on one request; returns (body, content type)."""
        headers = request_headers(context)
        content_type = headers.get("content-type")
        accept = accept_of(headers, self._default_inference_handler.settings.default_accept)
        self._refuse_maps_of_user_code(headers, accept)
        body: Any = request_body(request)
        # The toolkit hands JSON and CSV bodies to input_fn as str. Bytes that are not
        # UTF-8 stay bytes for input_fn to judge: ours answers 415 for the type first.
        if content_type and content_type.split(";", 1)[0].strip().lower() in toolkit_types.UTF8_TYPES:
            with contextlib.suppress(UnicodeDecodeError):
                body = body.decode("utf-8")
        self._context = context  # what _run_handler_function passes to functions taking a context
        result = self._run_handler_function(self._transform_fn, self._model, body, content_type, accept)
        if isinstance(result, tuple):
            return result[0], result[1]
        return result, accept

    def _refuse_maps_of_user_code(self, headers: dict[str, str], accept: str) -> None:
        """A 422 for a request that asks for a map the model's own prediction code cannot give.

        ``X-Explain: cam`` always asks for one; ``Accept: image/png`` only when our
        ``output_fn`` answers it (a user's ``output_fn`` may draw PNGs of its own).
        """
        replaced = self.prediction_replaced_by()
        if replaced is None:
            return  # our predict_fn: it reads (and validates) the request itself
        if requested_explain(headers) == CAM:
            raise NotExplainableError(
                f"this model's own code/inference.py replaces {replaced}, which gives no class "
                f"activation maps; ask without X-Explain: cam (or explain=cam)"
            )
        ours_answer = replaced == "predict_fn" and self._output_fn == self._default_inference_handler.default_output_fn
        if ours_answer and negotiate(accept) == PNG:
            raise NotExplainableError(
                f"Accept: image/png answers the picture with its class activation map, but this "
                f"model's own code/inference.py replaces {replaced}, which gives none; "
                f"accept application/json"
            )

    @staticmethod
    def _answer_error(context: Any, idx: int, error: BaseInferenceToolkitError) -> str:
        """Set request ``idx``'s status and JSON content type; return its error body."""
        level = logging.INFO if error.status_code < 500 else logging.WARNING
        logger.log(level, "request answered %d: %s", error.status_code, error.message)
        phrase = utils.remove_crlf(str(error.phrase or "")).strip() or reason_phrase(error.status_code)
        context.set_response_content_type(idx, JSON)
        context.set_response_status(code=error.status_code, phrase=phrase, idx=idx)
        return error_body(str(error.message))
