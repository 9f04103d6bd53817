"""What the launcher sets in the serving container's environment, and the limits it sets them to.

The names are the ones :mod:`dogbreed.serving.environment` reads; the launcher does not import
serving (its venv has no inference toolkit), so a test keeps the two equal.
"""

from __future__ import annotations

import math

from dogbreed.images import DEFAULT_MAX_PIXELS

WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MAX_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
# A multi-model endpoint's container: SageMaker loads models through POST /models.
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
# The container's own default: SageMaker real-time endpoints accept at most 6 MB per request.
DEFAULT_MAX_PAYLOAD_MB = 6

# Serverless endpoints take at most 4 MB per request, and each of their instances has 1-6 GB of
# memory for every model-server worker's copy of the model: one worker.
SERVERLESS_MAX_PAYLOAD_MB = 4
SERVERLESS_WORKERS = 1

# Asynchronous endpoints process a request for up to 60 minutes.
ASYNC_TIMEOUT_S = 3600
# They take up to 1 GB per request, but the container refuses any picture over its pixel cap
# (DOGBREED_MAX_IMAGE_PIXELS, left at its default), and the model server buffers each body whole
# (twice the limit at most): the limit is an uncompressed 8-bit RGBA picture at that cap.
ASYNC_MAX_PAYLOAD_MB = math.ceil(DEFAULT_MAX_PIXELS * 4 / 2**20)
