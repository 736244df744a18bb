"""``python -m blcam`` runs the CLI (used by the Slicer module, which has no console script)."""

import sys

from .cli import main

sys.exit(main())
