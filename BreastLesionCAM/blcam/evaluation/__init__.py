"""Evaluation: the paper's Table 2 on a split, k-fold cross-validation, and detection scoring.

``patch_classification.evaluate_model`` scores one model in the paper's three input modes
(Table 2); ``cv`` trains one model per fold plus one on all training folds and reports mean ±
sd and the test row; ``detection`` is ``blcam evaluate-detection`` (pointing game, distance,
FROC, volume AUC, per-kind and per-size breakdown, score calibration); ``report`` renders
Markdown tables and ROC plots.
"""

from .cv import cross_validate
from .patch_classification import evaluate_model

__all__ = ["evaluate_model", "cross_validate"]
