"""Whole-volume Detect: lesion maps → candidates → files for Slicer, CSV/JSON, pictures; scoring.

``pipeline`` (``detect``: volumes or cohorts in, outputs per volume plus ``detections.csv``),
``candidates`` (peaks, NMS in mm, calibrated scores, half-maximum sizes), ``outputs`` (NRRD,
``.mrk.json``, CSV/JSON), ``overlays`` (the paper's blend, contact sheets), ``scoring``
(``blcam evaluate-detection``: pointing game, distance, FROC, volume AUC, per-kind and per-size
breakdown, score calibration).
"""

from .candidates import Candidate, find_candidates
from .pipeline import DetectSettings, Detector, detect

__all__ = ["Candidate", "find_candidates", "DetectSettings", "Detector", "detect"]
