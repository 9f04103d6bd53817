"""One process of a distributed job: torchrun (started by sagemaker-training's runner) runs this file."""

import sys

from dogbreed.training.toolkit import run_process

sys.exit(run_process())
