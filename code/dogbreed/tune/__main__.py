"""``python -m dogbreed.tune``: the local hyperparameter search."""

import sys

from dogbreed.tune.search import main

sys.exit(main())
