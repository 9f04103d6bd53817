"""``python -m dogbreed.training``: the training job (the image's ``train``)."""

import sys

from dogbreed.training.job import main

sys.exit(main())
