"""``python -m dogbreed.launcher``."""

import sys

from dogbreed.launcher.cli import main

sys.exit(main())
