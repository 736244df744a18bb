"""Scores that mean what they say: Platt scaling of the network's logits, fitted on validation volumes.

The network is trained on lesion-centred and random healthy *crops*, about one lesion crop
in eight; Detect asks it about the strongest peaks of whole volumes, where the question is
"does this candidate hit a lesion?". The raw sigmoid of the crop logit answers the first
question, not the second: on held-out phantom volumes most false candidates score 0.3–0.5
and every hit 0.5–0.8 (candidate ECE 0.22–0.38, ``bench/RESULTS.md``), so a radiologist
reading "0.45" would over-rate a miss and under-rate a hit.

Platt scaling (Platt 1999) fits ``p = sigmoid(a · logit + b)`` to the outcomes of Detect's
own candidates on volumes of patients the model never trained on (``blcam calibrate``), once
for candidates (hit a lesion or not) and once for the volume score (lesion volume or not).
``a > 0`` is required, so the map is strictly increasing: every ranking (the candidates of a
volume, FROC, volume AUC, the pointing game) is unchanged, only the numbers become
probabilities. Platt's smoothed targets ``(N₊ + 1)/(N₊ + 2)`` and ``1/(N₋ + 2)`` keep a fit on
a few dozen hits from claiming certainty. The map lives in the model file's metadata
(``calibration``), so ``blcam detect`` and the Slicer module apply it without another file.

This module imports neither torch nor Qt: the model-file check and the Slicer side use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .axes import Floats
from .errors import BlcamError

FORMAT = "platt-v1"


def sigmoid(logits: Floats | float) -> np.ndarray:
    """Probabilities from logits in float64, without overflow for large magnitudes (and exact
    small probabilities far below 0.5, so very negative logits keep their order)."""
    x = np.asarray(logits, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass(frozen=True)
class Platt:
    """``sigmoid(a · logit + b)``; the identity map is ``a = 1, b = 0``."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, logit: Floats | float) -> np.ndarray:
        return sigmoid(self.a * np.asarray(logit, float) + self.b)


@dataclass(frozen=True)
class ScoreCalibration:
    """The candidate and volume maps of a model file (identity maps when it has none)."""

    candidate: Platt = Platt()
    volume: Platt = Platt()
    record: dict | None = None           # the metadata block it came from (None: uncalibrated)

    @property
    def fitted(self) -> bool:
        return self.record is not None

    @classmethod
    def from_metadata(cls, meta: dict, where: str = "model") -> ScoreCalibration:
        """The model's maps; identity when the metadata has no ``calibration`` (checked first)."""
        block = meta.get("calibration")
        if block is None:
            return cls()
        check_block(block, where)
        return cls(Platt(*block["candidate"]), Platt(*block["volume"]), block)


def check_block(block: object, where: str) -> None:
    """A ``calibration`` metadata block: the format and two ``[a, b]`` pairs with ``a > 0``."""
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        raise BlcamError(f"{where}: model metadata 'calibration' is not a {FORMAT} record")
    for key in ("candidate", "volume"):
        pair = block.get(key)
        if not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
                and pair[0] > 0):
            raise BlcamError(f"{where}: model metadata 'calibration.{key}' is {pair!r}; expected [a, b] "
                             "with a positive slope a")


def logit(p: Floats | float) -> np.ndarray:
    """The inverse sigmoid, clipped away from 0 and 1 (a score written with 6 decimals)."""
    q = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def fit_platt(logits: Floats, outcomes: Floats, what: str) -> Platt:
    """Maximum-likelihood ``a, b`` for Platt's smoothed targets (Newton's method on two
    parameters). ``what`` names the scores in the errors: both outcomes must occur, and
    the logits must rank the positives above the negatives (a positive slope)."""
    x = np.asarray(logits, float).reshape(-1)
    y = np.asarray(outcomes, float).reshape(-1)
    pos = int(y.sum())
    if pos == 0 or pos == len(y):
        raise BlcamError(f"cannot calibrate the {what}: all {len(y)} are {'hits' if pos else 'misses'}; the "
                         "calibration volumes must give both (add lesion and healthy volumes)")
    t = np.where(y > 0, (pos + 1) / (pos + 2), 1 / (len(y) - pos + 2))
    a, b = 1.0, 0.0
    for _ in range(200):
        p = Platt(a, b)(x)
        w = np.maximum(p * (1 - p), 1e-12)
        grad = np.array([np.sum((p - t) * x), np.sum(p - t)])
        hess = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        while True:                          # damped: halve the step until the loss does not rise
            na, nb = a - step[0], b - step[1]
            if _loss(x, t, na, nb) <= _loss(x, t, a, b) + 1e-12 or np.abs(step).max() < 1e-12:
                break
            step = step / 2
        a, b = na, nb
        if np.abs(step).max() < 1e-10:
            break
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
        raise BlcamError(f"cannot calibrate the {what}: on these volumes higher scores do not mean more hits "
                         f"(fitted slope {a:.3g}); is this the model that made the detections?")
    return Platt(float(a), float(b))


def _loss(x: np.ndarray, t: np.ndarray, a: float, b: float) -> float:
    """Cross-entropy against the smoothed targets (``log σ(z) = -logaddexp(0, -z)``)."""
    z = a * x + b
    return float(np.sum(t * np.logaddexp(0, -z) + (1 - t) * np.logaddexp(0, z)))
