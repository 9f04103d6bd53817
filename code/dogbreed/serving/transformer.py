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
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from sagemaker_inference import content_types as toolkit_types
from sagemaker_inference import utils
from sagemaker_inference.errors import BaseInferenceToolkitError, GenericInferenceToolkitError, UnsupportedFormatError
from sagemaker_inference.transformer import Transformer as ToolkitTransformer

from dogbreed.serving.content_types import JSON
from dogbreed.serving.errors import ModelNotReadyError, UnsupportedMediaTypeError, error_body, reason_phrase
from dogbreed.serving.request import request_body, request_headers

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

    def transform(self, data: list, context: Any) -> list:
        """MMS's batch -> one response body per request, status and content type set per index."""
        try:
            self.validate_and_initialize(model_dir=context.system_properties.get("model_dir"), context=context)
        except Exception as exc:  # noqa: BLE001 - reported to every request of the batch
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
        accept = headers.get("accept")
        if not accept or accept == toolkit_types.ANY:
            accept = self._environment.default_accept
        body: Any = request_body(request)
        # The toolkit hands JSON and CSV bodies to input_fn as str. Bytes that are not
        # UTF-8 stay bytes for input_fn to judge: ours answers 415 for the type first.
        if content_type and content_type.split(";", 1)[0].strip().lower() in toolkit_types.UTF8_TYPES:
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                pass
        self._context = context  # what _run_handler_function passes to functions taking a context
        result = self._run_handler_function(self._transform_fn, self._model, body, content_type, accept)
        if isinstance(result, tuple):
            return result[0], result[1]
        return result, accept

    @staticmethod
    def _answer_error(context: Any, idx: int, error: BaseInferenceToolkitError) -> str:
        """Set request ``idx``'s status and JSON content type; return its error body."""
        level = logging.INFO if error.status_code < 500 else logging.WARNING
        logger.log(level, "request answered %d: %s", error.status_code, error.message)
        phrase = utils.remove_crlf(str(error.phrase or "")).strip() or reason_phrase(error.status_code)
        context.set_response_content_type(idx, JSON)
        context.set_response_status(code=error.status_code, phrase=phrase, idx=idx)
        return error_body(str(error.message))
