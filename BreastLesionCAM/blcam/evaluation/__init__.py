"""Evaluation with the paper's protocol: Table 2 on a split, and k-fold cross-validation.

``table2.evaluate_model`` scores one model in the paper's three input modes; ``cv`` trains
one model per fold plus one on all training folds and reports mean ± sd and the test row;
``report`` renders Markdown tables and ROC plots.
"""

from .cv import cross_validate
from .table2 import evaluate_model

__all__ = ["evaluate_model", "cross_validate"]
