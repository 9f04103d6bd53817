"""Our default inference functions, in the toolkit's contract.

:class:`InferenceHandler` is a :class:`DefaultInferenceHandler`: the toolkit's
:class:`~sagemaker_inference.transformer.Transformer` calls its ``default_*_fn`` for every
function that ``code/inference.py`` does not define. What flows between them:

* ``model_fn(model_dir)`` -> a :class:`Predictor` (model.json + ONNX Runtime);
* ``input_fn(body, content_type)`` -> an upright RGB PIL image (415/413/400 on bad input);
* ``predict_fn(image, model)`` -> ``{"predicted_class", "predicted_label", "top_k": [...]}``
  for the request's ``top_k`` (``X-Top-K`` or custom attribute ``top_k=``; 400 if bad);
* ``output_fn(prediction, accept)`` -> ``(JSON text, "application/json")`` (406 unless
  Accept allows JSON).

So a user may replace any one of them and keep the others.
"""

from __future__ import annotations

import logging
from typing import Any

from sagemaker_inference import encoder
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler

from dogbreed.serving import content_types
from dogbreed.serving.environment import ServingEnvironment
from dogbreed.serving.predictor import Predictor, decode_image
from dogbreed.serving.request import request_headers, requested_top_k

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
        predictor = Predictor(model_dir, threads=s.ort_threads, max_payload_bytes=s.max_payload_bytes,
                              max_image_pixels=s.max_image_pixels, default_top_k=s.top_k, precision=s.precision,
                              int8_max_loss=s.int8_max_loss)
        logger.info("model loaded from %s: %s, %d classes, %s, %d ORT thread(s)",
                    model_dir, predictor.metadata.arch, len(predictor.classes), predictor.precision, s.ort_threads)
        return predictor

    def default_input_fn(self, input_data: Any, content_type: str | None, context: Any = None):
        """Image bytes -> an upright RGB PIL image, within the payload and pixel limits."""
        return decode_image(input_data, content_type, self.settings.max_payload_bytes, self.settings.max_image_pixels)

    def default_predict_fn(self, data: Any, model: Predictor, context: Any = None) -> dict[str, Any]:
        """A PIL image (or preprocessed array) -> the ``top_k`` most probable breeds."""
        return model.classify(data, requested_top_k(request_headers(context)))

    def default_output_fn(self, prediction: Any, accept: str | None, context: Any = None) -> tuple[str, str]:
        """The prediction as JSON (numpy values included), if Accept allows JSON."""
        media_type = content_types.check_accepts_json(accept)
        return encoder.encode(prediction, media_type), media_type
