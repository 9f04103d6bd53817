"""Local hyperparameter search on cached backbone features (``python -m dogbreed.tune``)."""
