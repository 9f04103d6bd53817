"""The serving side: multi-model-server runs :mod:`dogbreed.serving.handler_service`.

One small module per concern, in the style of aws/sagemaker-inference-toolkit:
``environment`` (settings), ``content_types``, ``errors`` (errors carrying their HTTP
status), ``predictor`` (model.json + ONNX Runtime), ``handler_service`` (the MMS entry
point) and ``serve`` (the container's ``serve`` program).
"""
