"""Our default inference functions, in the toolkit's contract.

:class:`InferenceHandler` is a :class:`DefaultInferenceHandler`: the toolkit's
:class:`~sagemaker_inference.transformer.Transformer` calls its ``default_*_fn`` for every
function that ``code/inference.py`` does not define. What flows between them:

* ``model_fn(model_dir)`` -> a :class:`Predictor` (model.json + ONNX Runtime);
* ``input_fn(body, content_type)`` -> an upright RGB PIL image (415/413/400 on bad input);
* ``predict_fn(image, model)`` -> ``{"predicted_class", "predicted_label", "top_k": [...]}``
  for the request's ``top_k`` (``X-Top-K`` or custom attribute ``top_k=``; 400 if bad),
  plus ``"explanation"`` when the request asks for a map (``X-Explain: cam``, custom
  attribute ``explain=cam``, ``Accept: image/png``, else ``DOGBREED_EXPLAIN``): then an
  :class:`~dogbreed.serving.predictor.ExplainedPrediction`, a dict that also holds the
  picture and the map for the PNG answer;
* ``output_fn(prediction, accept)`` -> ``(JSON text, "application/json")``, or
  ``(PNG bytes, "image/png")``, the picture with the map overlaid, when Accept prefers
  ``image/png`` or ``image/*`` (406 if Accept allows neither).

So a user may replace any one of them and keep the others. A user's ``input_fn`` that
returns an RGB PIL image keeps maps working; a user's ``output_fn`` gets the explanation
in the prediction (``Accept: image/png`` asks for it there too) and renders what it likes.
"""

from __future__ import annotations

import logging
from typing import Any

from sagemaker_inference import encoder
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler

from dogbreed.artifacts import ModelLoadError
from dogbreed.explain import NO_MAP, overlay, png_bytes
from dogbreed.serving import content_types
from dogbreed.serving.environment import EXPLAIN_ENV, ServingEnvironment
from dogbreed.serving.errors import NotExplainableError
from dogbreed.serving.predictor import ExplainedPrediction, Predictor, decode_image
from dogbreed.serving.request import (
    accept_of,
    explain_method,
    request_headers,
    requested_explain,
    requested_top_k,
)

logger = logging.getLogger(__name__)


class InferenceHandler(DefaultInferenceHandler):
    """The defaults for dogbreed models; settings come from :class:`ServingEnvironment`."""

    def __init__(self, settings: ServingEnvironment | None = None):
        self._settings = settings

    @property
    def settings(self) -> ServingEnvironment:
        """The serving settings, read from the environment on first use."""
        if self._settings is None:
            self._settings = ServingEnvironment.from_env()
        return self._settings

    def default_model_fn(self, model_dir: str, context: Any = None) -> Predictor:
        """Load and validate the model of ``model_dir``; raises ``ModelLoadError`` with the reason."""
        s = self.settings
        predictor = Predictor(
            model_dir,
            threads=s.ort_threads,
            max_payload_bytes=s.max_payload_bytes,
            max_image_pixels=s.max_image_pixels,
            default_top_k=s.top_k,
            precision=s.precision,
            int8_max_loss=s.int8_max_loss,
            log_level=s.log_level,
        )
        logger.info(
            "model loaded from %s: %s, %d classes, %s, %d ORT thread(s), %s",
            model_dir,
            predictor.metadata.arch,
            len(predictor.classes),
            predictor.precision,
            s.ort_threads,
            "class activation maps" if predictor.can_explain else "no class activation maps (an older export)",
        )
        if s.explain != NO_MAP and not predictor.can_explain:
            # Every request would be refused: say so once, at start, as DOGBREED_PRECISION=int8 does.
            raise ModelLoadError(
                f"{EXPLAIN_ENV}={s.explain}, but this model was exported before class activation "
                f"maps (model.json has no explain); train it again with this version or unset "
                f"{EXPLAIN_ENV}"
            )
        return predictor

    def default_input_fn(self, input_data: Any, content_type: str | None, context: Any = None):
        """Image bytes -> an upright RGB PIL image, within the payload and pixel limits."""
        return decode_image(input_data, content_type, self.settings.max_payload_bytes, self.settings.max_image_pixels)

    def default_predict_fn(self, data: Any, model: Predictor, context: Any = None) -> dict[str, Any]:
        """A PIL image (or preprocessed array) -> the ``top_k`` most probable breeds, and the map if asked."""
        headers = request_headers(context)
        answer = content_types.preferred_answer(accept_of(headers, self.settings.default_accept))
        method = explain_method(requested_explain(headers), answer, self.settings.explain)
        return model.classify(data, requested_top_k(headers), method)

    def default_output_fn(self, prediction: Any, accept: str | None, context: Any = None) -> tuple[Any, str]:
        """The prediction as JSON (numpy values included), or as the picture with its map overlaid (PNG)."""
        media_type = content_types.negotiate(accept)
        if media_type == content_types.PNG:
            return overlay_png(prediction), media_type
        return encoder.encode(prediction, media_type), media_type


def overlay_png(prediction: Any) -> bytes:
    """The PNG answer: the uploaded picture with the prediction's map overlaid (at most OVERLAY_MAX_SIDE pixels)."""
    if not isinstance(prediction, ExplainedPrediction):
        # Only our predict_fn gives the picture and the map; the transformer refuses the
        # cases it can tell beforehand (a predict_fn of the model's own code).
        raise NotExplainableError(
            f"Accept: image/png answers the picture with its class activation map, but the "
            f"prediction is a {type(prediction).__name__} without one; accept application/json"
        )
    return png_bytes(overlay(prediction.image, prediction.explanation))
