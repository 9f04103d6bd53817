"""Where a training job leaves what its report reads, relative to ``metrics.json``'s folder
(``/opt/ml/output/data``, which SageMaker uploads as ``output.tar.gz``)."""

TRIAL_DIR = "debug-output"  # the local smdebug trial (SageMaker Debugger's own goes to S3)
PROFILE_DIR = "profile"  # system.jsonl, steps.jsonl, the top operators
# Class activation maps of a few test photos: JPEG overlays and INDEX_FILE, which lists them
# (see dogbreed.training.explanations, which writes them, and dogbreed.report.data, which reads them).
EXPLANATIONS_DIR = "explanations"
INDEX_FILE = "index.json"
