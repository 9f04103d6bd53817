"""dogbreed: transfer learning (ResNets, EfficientNet-Lite0) and serving for SageMaker bring-your-own-container images."""

__version__ = "0.1.0"
