"""Drive SageMaker training, tuning, hosting and prediction with the dogbreed images.

``python -m dogbreed.launcher --help`` lists the commands. Built on the SageMaker
Python SDK 3.x (``sagemaker.core`` resources and shapes, ``ModelTrainer`` and
``LocalSession`` for local mode); it runs in ``.venv-launcher`` and never imports torch.
"""
