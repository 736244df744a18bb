"""Shared pytest setup: the core package importable from the source tree, small threads.

The tests run on a 2-core CI machine; torch and BLAS are limited to 2 threads so parallel
pieces of one test (e.g. export workers) don't oversubscribe it.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
