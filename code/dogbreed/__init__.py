"""dogbreed: transfer learning (ResNets, EfficientNet-Lite0) and serving, as SageMaker bring-your-own-container
images."""

__version__ = "0.1.0"
