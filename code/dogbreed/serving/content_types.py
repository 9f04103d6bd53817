"""The request and response media types the endpoint understands."""

from __future__ import annotations

from dogbreed.serving.errors import UnsupportedMediaTypeError

JPEG = "image/jpeg"
PNG = "image/png"
X_IMAGE = "application/x-image"  # what SageMaker's built-in image classifiers use
JSON = "application/json"

SUPPORTED = (JPEG, PNG, X_IMAGE)


def parse(content_type: str | None) -> str:
    """Normalise a Content-Type header to one of :data:`SUPPORTED`.

    Parameters (``; charset=...``) and case are ignored. Raises
    :class:`UnsupportedMediaTypeError` listing the supported types otherwise.
    """
    supported = ", ".join(SUPPORTED)
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if not media_type:
        raise UnsupportedMediaTypeError(f"no Content-Type header; send the image bytes with one of: {supported}")
    if media_type not in SUPPORTED:
        raise UnsupportedMediaTypeError(
            f"Content-Type {media_type!r} is not supported; send the raw image bytes with one of: {supported}"
        )
    return media_type
