"""The baseline container's entry point: ``docker run IMAGE serve`` starts the model server.

Like SageMaker's PyTorch inference container: the toolkit's ``start_model_server``
writes MMS's config from the ``SAGEMAKER_*`` variables (and its own defaults), starts
MMS over ``/opt/ml/model`` and waits on it. Any other command runs as given.
"""

import subprocess
import sys

if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        from sagemaker_inference import model_server

        import handler_service

        model_server.start_model_server(handler_service=handler_service.__name__)
    else:
        sys.exit(subprocess.call(sys.argv[1:]))
