"""Volume geometry for phantom volumes: deliberately not always the identity.

Scanners and converters write volumes with flipped, permuted and offset axes; code that
assumes ``direction == I`` or ``origin == 0`` puts heatmaps and lesion centres in the wrong
place without any error. The phantom therefore gives a share of its volumes flips,
90° rotations and a left-handed permutation (determinant −1, which Slicer shows with the
slice axis reversed), and non-zero origins, so every consumer is tested against them.
"""

from __future__ import annotations

import numpy as np

from ..io.volume import Geometry

# Columns are the LPS directions of the index axes (i, j, k); stored row-major as SimpleITK.
DIRECTIONS = {
    "identity": np.eye(3),
    "flip-i": np.diag([-1.0, 1.0, 1.0]),                                 # det −1
    "abus": np.diag([1.0, 1.0, -1.0]),                                   # i→L, j→P (depth), k→I
    "rot90-k": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),   # det +1
    "rot90-i": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),   # det +1
    "swap-ik": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),    # det −1
}
WEIGHTS = {"identity": 0.4, "flip-i": 0.12, "abus": 0.12, "rot90-k": 0.12, "rot90-i": 0.12,
           "swap-ik": 0.12}


def random_geometry(rng: np.random.Generator, shape, spacing) -> tuple[str, Geometry]:
    """A geometry for an array of ``shape`` (k, j, i) with ``spacing`` (k, j, i) in mm.

    Returns the direction's name too (written nowhere, useful in tests and pictures).
    Most non-identity volumes also get an origin of up to ±150 mm per axis.
    """
    names = list(WEIGHTS)
    p = np.asarray([WEIGHTS[n] for n in names])
    name = str(rng.choice(names, p=p / p.sum()))
    if name == "identity" and rng.random() < 0.5:
        origin = (0.0, 0.0, 0.0)
    else:
        origin = tuple(float(v) for v in np.round(rng.uniform(-150.0, 150.0, 3), 3))
    k, j, i = (int(s) for s in shape)
    sk, sj, si = (float(s) for s in spacing)
    direction = tuple(float(v) for v in DIRECTIONS[name].reshape(-1))
    return name, Geometry((i, j, k), (si, sj, sk), origin, direction)
