"""The errors a client gets back, as the inference toolkit's error types.

Each is a :class:`sagemaker_inference.errors.BaseInferenceToolkitError` carrying its HTTP
``status_code``, the ``message`` the client reads (the ``"error"`` of the JSON body) and
the reason ``phrase`` of the status line. A user's ``code/inference.py`` may raise these,
or the toolkit's own ``BaseInferenceToolkitError``/``GenericInferenceToolkitError``, and
gets the same treatment (see :mod:`dogbreed.serving.transformer`).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from sagemaker_inference.errors import BaseInferenceToolkitError


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` (MMS puts it in the status line)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(message: str) -> str:
    """The JSON body of every error answer: ``{"error": message}``."""
    return json.dumps({"error": message})


class ServingError(BaseInferenceToolkitError):
    """Base class of our errors: the subclass fixes the status, the caller the message."""

    status = 500

    def __init__(self, message: str):
        super().__init__(self.status, message, reason_phrase(self.status))


class BadRequestError(ServingError):
    """The body is empty, not an image, truncated or corrupt; or a parameter is invalid."""

    status = 400


class NotAcceptableError(ServingError):
    """The Accept header allows no type the endpoint can answer with."""

    status = 406


class PayloadTooLargeError(ServingError):
    """The body exceeds the payload limit, or the image has too many pixels."""

    status = 413


class UnsupportedMediaTypeError(ServingError):
    """The Content-Type is not one the endpoint reads."""

    status = 415


class ModelNotReadyError(ServingError):
    """The model could not be loaded; nothing can be predicted until it is fixed."""

    status = 503


class NotExplainableError(ServingError):
    """A map was asked for (``X-Explain: cam``, ``Accept: image/png``) but this model cannot give one.

    422, not 400 or 5xx: the request is well formed and its values are valid (the same
    request gets a map from a model that can give one), so 400 would blame the client's
    syntax; nothing failed on the server either, so no 5xx. What cannot be processed is
    this request on this model (an export from before class activation maps, or the
    model's own ``code/inference.py`` replacing the prediction), and the message says which.
    """

    status = 422
