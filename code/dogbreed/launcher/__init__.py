"""Drive SageMaker training, tuning, hosting and prediction with the dogbreed images.

``python -m dogbreed.launcher --help`` lists the commands; a notebook or a script calls the
same operations as functions, ``from dogbreed.launcher import train, deploy_local, predict``
(:mod:`dogbreed.launcher.api`). Built on the SageMaker Python SDK 3.x (``sagemaker.core``
resources and shapes, ``ModelTrainer`` and ``LocalSession`` for local mode); it runs in
``.venv-launcher`` and never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use: ``import dogbreed.launcher.validation`` stays free of the SDK."""
    # A submodule (``from dogbreed.launcher import cli``) is the import system's to load.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is None:
        api = importlib.import_module(f"{__name__}.api")
        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
