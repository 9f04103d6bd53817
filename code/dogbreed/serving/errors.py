"""Errors that carry the HTTP status and the message a client gets back."""

from __future__ import annotations

import json


class ServingError(Exception):
    """Base class: ``status`` is the HTTP code; the message is shown to the client."""

    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def body(self) -> str:
        """The JSON response body, ``{"error": message}``."""
        return json.dumps({"error": self.message})


class BadRequestError(ServingError):
    """The body is empty, not an image, truncated or corrupt; or a parameter is invalid."""

    status = 400


class PayloadTooLargeError(ServingError):
    """The body exceeds the payload limit, or the image has too many pixels."""

    status = 413


class UnsupportedMediaTypeError(ServingError):
    """The Content-Type is not one the endpoint reads."""

    status = 415


class ModelNotReadyError(ServingError):
    """The model could not be loaded; nothing can be predicted until it is fixed."""

    status = 503


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` (used in MMS's status line)."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
