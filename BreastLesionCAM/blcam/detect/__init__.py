"""Whole-volume Detect: lesion maps → candidates → files for Slicer, CSV/JSON, pictures.

``pipeline`` (``detect``: volumes or cohorts in, outputs per volume plus ``detections.csv``),
``candidates`` (peaks, NMS in mm, calibrated scores, half-maximum sizes), ``refine``,
``outputs`` (NRRD, ``.mrk.json``, CSV/JSON), ``overlays`` (the paper's blend, contact
sheets), ``redraw`` (those pictures drawn afterwards from the files, ``blcam pictures``),
``plan`` (the expected time). Scoring detections against annotations is evaluation's:
:mod:`blcam.evaluation.detection`.
"""

from __future__ import annotations

import importlib

# Imported on first use (PEP 562): the output contract (:mod:`.outputs`: file names, CSV
# columns) must be importable without torch, by the Slicer module before PyTorch is installed.
_LAZY = {"Candidate": ".candidates", "find_candidates": ".candidates", "DetectSettings": ".pipeline",
         "Detector": ".pipeline", "detect": ".pipeline"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
