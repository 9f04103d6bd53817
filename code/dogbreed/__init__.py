"""dogbreed: ResNet transfer learning and serving for SageMaker bring-your-own-container images."""

__version__ = "0.1.0"
