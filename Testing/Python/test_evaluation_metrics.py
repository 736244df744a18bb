"""Classification metrics against brute-force definitions (ties, degenerate inputs)."""

import math

import numpy as np
import pytest

from blcam.errors import BlcamError
from blcam.metrics.classification import binary_summary, confusion, midranks, roc_auc, roc_curve


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    s = rng.integers(0, 6, 60).astype(float)          # many ties
    assert roc_auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(y, s)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert trapezoid(tpr, fpr) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.isinf(thr[0])
    assert len(thr) == len(np.unique(s)) + 1


def test_auc_extremes_and_undefined():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5] * 4) == 0.5
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(BlcamError, match="labels must be 0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(BlcamError, match="differ in length"):
        roc_auc([0, 1], [0.1])
    with pytest.raises(BlcamError, match="not finite"):
        roc_auc([0, 1], [0.1, float("nan")])


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_summary_at_threshold():
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.2, 0.6, 0.1])      # 0.5 counts as positive
    c = confusion(y, s)
    assert c == {"tp": 2, "fn": 1, "fp": 1, "tn": 1}
    m = binary_summary(y, s)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["n_positive"] == 3 and m["n_negative"] == 2
    assert math.isnan(binary_summary([0, 0], [0.1, 0.7])["sensitivity"])
