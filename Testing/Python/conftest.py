"""Shared pytest setup: the core package importable from the source tree, small threads.

The tests run on a 2-core CI machine; torch and BLAS are limited to 2 threads so parallel
pieces of one test (e.g. export workers) don't oversubscribe it. The fixtures several test
modules share live here (pytest finds them without an import).
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def headless():
    """A fresh MRML scene (slicer-core) with Slicer's colour, markups and volumes logics and
    three slice views (:func:`_headless.createScene`); skips without slicer-core."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from _headless import createScene

    h = createScene()
    yield h
    h.close()


@pytest.fixture
def faults():
    """Real filesystem faults (read-only folders, full disks), undone at teardown."""
    from _fault_fixtures import Faults

    f = Faults()
    yield f
    f.undo()
