"""The request and response media types the endpoint understands."""

from __future__ import annotations

from sagemaker_inference.content_types import ANY, JSON

from dogbreed.serving.errors import NotAcceptableError, UnsupportedMediaTypeError

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"  # what SageMaker's built-in image classifiers use

SUPPORTED = (JPEG, PNG, X_IMAGE)
# Accept values that let us answer JSON.
_JSON_ACCEPTED = {JSON, "application/*", ANY}


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


def check_accepts_json(accept: str | None) -> str:
    """Return :data:`JSON` if the Accept header allows it, else raise :class:`NotAcceptableError` (406).

    No header, ``*/*``, ``application/*`` and ``application/json`` all allow it, among
    other types and with any parameters (q-values are not weighed).
    """
    if not accept or not accept.strip():
        return JSON
    if any(_media_type(item) in _JSON_ACCEPTED for item in accept.split(",")):
        return JSON
    raise NotAcceptableError(f"Accept {accept!r} is not supported; this endpoint answers {JSON}")
