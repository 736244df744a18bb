"""Whole-volume Detect: lesion maps → candidates → files for Slicer, CSV/JSON, pictures.

``pipeline`` (``detect``: volumes or cohorts in, outputs per volume plus ``detections.csv``),
``candidates`` (peaks, NMS in mm, calibrated scores, half-maximum sizes), ``refine``,
``outputs`` (NRRD, ``.mrk.json``, CSV/JSON), ``overlays`` (the paper's blend, contact
sheets), ``plan`` (the expected time). Scoring detections against annotations is
evaluation's: :mod:`blcam.evaluation.detection`.
"""

from .candidates import Candidate, find_candidates
from .pipeline import DetectSettings, Detector, detect

__all__ = ["Candidate", "find_candidates", "DetectSettings", "Detector", "detect"]
