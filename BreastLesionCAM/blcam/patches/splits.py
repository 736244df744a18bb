"""Patient-level test split and cross-validation folds, stratified by patient class.

Splitting by patch (or by volume) would leak: two breasts of one patient, or two patches of
one lesion, look alike. Every patient therefore lands in exactly one of test / fold 0..k-1,
and the healthy and lesion patients are spread evenly (paper, Table 1).
"""

from __future__ import annotations

import numpy as np

from ..errors import BlcamError

DEFAULT_FOLDS = 5
CLASSES = ("healthy", "lesion")


def choose_folds(patient_classes: dict[str, str], test_fraction: float, folds: int | None) -> int:
    """The number of folds, checked so that every fold gets at least one training patient of
    each class (cross-validation needs both classes on both sides of every fold).

    ``None`` means ``DEFAULT_FOLDS``, or fewer when a class has fewer training patients; an
    explicit number that cannot be filled is refused, naming the patient counts.
    """
    left = {cls: n - int(round(n * test_fraction))
            for cls in CLASSES for n in [sum(c == cls for c in patient_classes.values())]}
    fewest = max(1, min(left.values()))
    if folds is None:
        return min(DEFAULT_FOLDS, fewest)
    if folds < 1:
        raise BlcamError(f"--folds must be at least 1, got {folds}")
    if folds > fewest:
        raise BlcamError(f"--folds {folds}: after the test split {left['healthy']} healthy and {left['lesion']} "
                         f"lesion patient(s) are left for training, and every fold needs at least one of each; "
                         f"use --folds {fewest} or fewer")
    return folds


def assign_splits(patient_classes: dict[str, str], test_fraction: float, folds: int,
                  seed: int) -> dict[str, tuple[str, int]]:
    """Map each patient to ``("test", -1)`` or ``("train", fold)``.

    Within each class, patients are shuffled (seeded, independent of input order) and the
    first ``round(n * test_fraction)`` go to test; the rest are dealt round-robin into folds.
    """
    if folds < 1:
        raise BlcamError(f"--folds must be at least 1, got {folds}")
    result: dict[str, tuple[str, int]] = {}
    for cls_no, cls in enumerate(CLASSES):
        patients = sorted(p for p, c in patient_classes.items() if c == cls)
        rng = np.random.default_rng([seed, cls_no])
        order = [patients[i] for i in rng.permutation(len(patients))]
        n_test = int(round(len(order) * test_fraction))
        if test_fraction > 0 and len(order) - n_test < 1:
            raise BlcamError(f"only {len(order)} {cls} patient(s): too few for a test fraction of {test_fraction}")
        for p in order[:n_test]:
            result[p] = ("test", -1)
        # Deal folds starting at a class-dependent offset so small classes don't all pile into fold 0.
        for n, p in enumerate(order[n_test:]):
            result[p] = ("train", (n + cls_no * (folds // 2)) % folds)
    return result
