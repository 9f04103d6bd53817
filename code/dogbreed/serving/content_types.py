"""The request and response media types the endpoint understands."""

from __future__ import annotations

from sagemaker_inference.content_types import ANY, JSON

from dogbreed.serving.errors import NotAcceptableError, UnsupportedMediaTypeError

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"  # what SageMaker's built-in image classifiers use

SUPPORTED = (JPEG, PNG, X_IMAGE)
# What the endpoint answers: the prediction as JSON, or the picture with its class
# activation map overlaid as PNG.
ANSWERS = (JSON, PNG)
# Accept values that let us answer JSON, and those that ask for the PNG overlay.
_JSON_ACCEPTED = {JSON, "application/*", ANY}
_PNG_ACCEPTED = {PNG, "image/*"}


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def parse(content_type: str | None) -> str:
    """Normalise a Content-Type header to one of :data:`SUPPORTED`.

    Parameters (``; charset=...``) and case are ignored. Raises
    :class:`UnsupportedMediaTypeError` (415) listing the supported types otherwise.
    """
    supported = ", ".join(SUPPORTED)
    media_type = _media_type(content_type or "")
    if not media_type:
        raise UnsupportedMediaTypeError(f"no Content-Type header; send the image bytes with one of: {supported}")
    if media_type not in SUPPORTED:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media_type!r} is not supported; send the raw image bytes with one of: {supported}"
        )
    return media_type


def preferred_answer(accept: str | None) -> str | None:
    """The answer the Accept header asks for first: :data:`JSON`, :data:`PNG`, or None if neither.

    The first item of the list that one of them satisfies wins (q-values are not weighed):
    no header, ``*/*``, ``application/*`` and ``application/json`` give JSON; ``image/png``
    and ``image/*`` give PNG, the uploaded picture with the map overlaid. Parameters and
    case are ignored.
    """
    if not accept or not accept.strip():
        return JSON
    for item in accept.split(","):
        media_type = _media_type(item)
        if media_type in _JSON_ACCEPTED:
            return JSON
        if media_type in _PNG_ACCEPTED:
            return PNG
    return None


def negotiate(accept: str | None) -> str:
    """:func:`preferred_answer`, or :class:`NotAcceptableError` (406) naming both answers when neither fits."""
    answer = preferred_answer(accept)
    if answer is None:
        raise NotAcceptableError(
            f"Accept {accept!r} is not supported; this endpoint answers {JSON} (the prediction) or {PNG} "
            f"(the picture with the top class's activation map overlaid)"
        )
    return answer
