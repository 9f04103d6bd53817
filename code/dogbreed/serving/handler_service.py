"""The multi-model-server entry point: the inference toolkit's handler service.

:class:`HandlerService` is the toolkit's :class:`DefaultHandlerService` running our
:class:`~dogbreed.serving.transformer.Transformer` with our
:class:`~dogbreed.serving.inference_handler.InferenceHandler` as the defaults, so
``code/inference.py`` in the model directory may replace any of ``model_fn``,
``input_fn``, ``predict_fn``, ``output_fn`` (or all three request functions at once with
``transform_fn``), each optionally taking a trailing ``context`` argument.

MMS imports this module in every worker (``default_service_handler`` is
``dogbreed.serving.handler_service:handle``), calls ``handle(None, context)`` once to load
the model, then ``handle(batch, context)`` per request batch. A function entry point
rather than MMS's discovery of the class: MMS logs and ignores an exception from a
class's ``initialize``, leaving a worker that fails every request; from the function
the failure stops the worker's start, and ``serve`` has already run the same start-up
once (:func:`dogbreed.serving.serve.check_model`), so it is not a repeating one.

On a multi-model endpoint each MMS worker serves one of the models SageMaker loaded, its
directory in ``context.system_properties["model_dir"]`` as in single-model mode, so every
model gets the same handler. Before loading, a worker checks the memory
(:func:`~dogbreed.serving.memory.ensure_memory_for`: ``MemoryError``, which MMS answers
with 507), and refuses a model carrying ``code/requirements.txt``: ``serve`` installs one
only before the server starts, which a model loaded later cannot have.
"""

from __future__ import annotations

import logging
from typing import Any

from sagemaker_inference.default_handler_service import DefaultHandlerService

from dogbreed.artifacts import ModelLoadError
from dogbreed.serving.environment import ServingEnvironment
from dogbreed.serving.inference_handler import InferenceHandler
from dogbreed.serving.memory import ensure_memory_for
from dogbreed.serving.readiness import mark_loaded
from dogbreed.serving.transformer import Transformer
from dogbreed.serving.user_code import REQUIREMENTS_FILE, code_dir, make_importable

logger = logging.getLogger(__name__)
# MMS's worker module that logs each request's "[METRICS]PredictionTime" line at info.
MMS_SERVICE_LOGGER = "mms.service"


class HandlerService(DefaultHandlerService):
    """The toolkit's handler service with the dogbreed defaults and transformer."""

    def __init__(self, settings: ServingEnvironment | None = None):
        self._defaults = InferenceHandler(settings)
        super().__init__(transformer=Transformer(default_inference_handler=self._defaults))

    def initialize(self, context: Any) -> None:
        """Make ``code/`` importable, then let the toolkit pick the functions and load the model.

        Errors propagate (a missing or broken model, an ``inference.py`` that fails to import).
        """
        make_importable(context.system_properties["model_dir"])
        super().initialize(context)

    @property
    def settings(self) -> ServingEnvironment:
        """The serving settings of the default functions (read from the environment on first use)."""
        return self._defaults.settings

    @property
    def transformer(self) -> Transformer:
        """The transformer that answers requests (holds the loaded model once initialised)."""
        return self._service


_service = HandlerService()


def handle(data: list | None, context: Any) -> list | None:
    """The function MMS calls: ``data`` None loads the model, else one body per request.

    Once the model is loaded the worker says so, for ``serve``'s ``/ping``
    (:mod:`dogbreed.serving.readiness`). MMS's worker logs from INFO up (its
    ``basicConfig``); before loading, the level becomes SAGEMAKER_CONTAINER_LOG_LEVEL's,
    and MMS's own per-request ``[METRICS]`` line stops: the frontend drops it
    (MODEL_METRICS is off in log4j2.xml), so writing it was a pipe write per request for nothing.
    """
    if data is None:
        logging.getLogger().setLevel(_service.settings.log_level)
        logging.getLogger(MMS_SERVICE_LOGGER).setLevel(max(logging.WARNING, _service.settings.log_level))
        if _service.settings.multi_model:
            check_loadable(context.system_properties["model_dir"])
        _service.initialize(context)
        mark_loaded()
        return None
    return _service.handle(data, context)


def check_loadable(model_dir: str) -> None:
    """On a multi-model endpoint, before loading: ``MemoryError`` (507) or ``ModelLoadError`` with the reason."""
    try:
        ensure_memory_for(model_dir)
    except MemoryError as exc:
        logger.error("%s", exc)  # MMS answers 507 without the reason
        raise
    requirements = code_dir(model_dir) / REQUIREMENTS_FILE
    if requirements.is_file():
        raise ModelLoadError(
            f"{requirements}: a multi-model endpoint cannot install a model's requirements when it "
            f"loads the model; put the packages in the serving image or serve this model on its own endpoint"
        )
