"""The serving side: multi-model-server runs the inference toolkit's handler service.

sagemaker-inference does the request flow (``model_fn`` -> ``input_fn`` ->
``predict_fn`` -> ``output_fn``, each replaceable from the model's ``code/inference.py``);
these modules supply what is ours, one concern each:

* ``environment``: the settings, from environment variables;
* ``content_types``, ``errors`` (the toolkit's error types with their HTTP status),
  ``request`` (headers, body, ``top_k`` of one MMS request);
* ``predictor``: decoding, model.json's preprocessing and ONNX Runtime;
* ``inference_handler``: the default functions, on top of the predictor;
* ``transformer`` and ``handler_service``: the toolkit's classes, per-request JSON errors;
* ``user_code``: ``code/`` on the import path, ``code/requirements.txt`` installed;
* ``serve`` (the container's ``serve`` program) and ``unhealthy`` (its 503 server).
"""
