"""``python -m dogbreed.sagemaker``."""

import sys

from dogbreed.sagemaker.cli import main

sys.exit(main())
