"""The baseline's handler service, as the inference toolkit's README shows a container's.

MMS imports this module in each worker and instantiates its one class. The toolkit's
``Transformer`` finds the user's ``inference.py`` (``SAGEMAKER_PROGRAM``) on the Python
path and takes ``model_fn``, ``input_fn``, ``predict_fn`` and ``output_fn`` from it; the
toolkit's ``DefaultInferenceHandler`` fills in for any it lacks (the course's script
defines all four).
"""

from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer


class HandlerService(DefaultHandlerService):
    """``DefaultHandlerService`` over a ``Transformer`` with the toolkit's default handler."""

    def __init__(self):
        super().__init__(transformer=Transformer(default_inference_handler=DefaultInferenceHandler()))
