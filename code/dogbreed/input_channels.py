"""The training job's input channels: one name each, for the job that reads them and the launcher
that sends them (``/opt/ml/input/data/<name>``, ``SM_CHANNEL_<NAME>``)."""

SPLIT_CHANNELS = ("train", "valid", "test")  # the images, a channel per split
PRETRAINED_CHANNEL = "pretrained"  # ImageNet weights, where the image has none for the architecture
FEATURES_CHANNEL = "features"  # a feature cache: a features job's output.tar.gz
MODEL_CHANNEL = "model"  # an earlier job's model, which the job starts from (incremental training)
ALL_CHANNELS = (*SPLIT_CHANNELS, PRETRAINED_CHANNEL, FEATURES_CHANNEL, MODEL_CHANNEL)
