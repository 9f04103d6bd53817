"""What a training job leaves for its report: the output's file and folder names, and its trial's scalars.

The job writes these (:mod:`dogbreed.training`, :mod:`dogbreed.tune`) and the report reads
them back (:mod:`dogbreed.report`, also ``python -m dogbreed.report`` on a downloaded output),
as does the launcher (:mod:`dogbreed.launcher`), so the names belong to none of them.

Paths are relative to the job's output data folder, ``/opt/ml/output/data``, which
SageMaker uploads as ``output.tar.gz``.
"""

REPORT_FILE = "report.html"  # the training report (dogbreed.report.page)
METRICS_FILE = "metrics.json"  # the final figures, every epoch's, the classes, the hyperparameters
CONFUSION_MATRIX_FILE = "confusion_matrix.csv"  # in a folder per evaluated split: valid/, test/
TRIAL_DIR = "debug-output"  # the job's own smdebug trial (SageMaker Debugger's goes to S3)
PROFILE_DIR = "profile"  # in the format of dogbreed.profile_format
# Class activation maps of a few test photos: JPEG overlays, and an index listing them.
EXPLANATIONS_DIR = "explanations"
EXPLANATIONS_INDEX_FILE = "index.json"  # inside EXPLANATIONS_DIR
# A features job's cache of the frozen backbone's outputs, one file per split; the launcher
# hands it to later jobs as their features channel.
FEATURES_DIR = "features"
SEARCH_DIR = "tune"  # python -m dogbreed.tune's study, its trials and its page (dogbreed.report.search)

# The scalars the job saves into its smdebug trial (hook.save_scalar) besides the losses
# smdebug records itself, so that every curve in the report comes from the Debugger data.
STEP_ACCURACY_SCALAR = "train/batch_accuracy"  # each training step's batch accuracy
# At the end of each epoch, that epoch's figures, each named EPOCH_SCALAR_PREFIX + its name.
EPOCH_SCALAR_PREFIX = "epoch/"
EPOCH_SCALARS = ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
