"""Volume geometry for phantom volumes: deliberately not always the identity.

Scanners and converters write volumes with flipped, permuted and offset axes; code that
assumes ``direction == I`` or ``origin == 0`` puts heatmaps and lesion centres in the wrong
place without any error. The phantom therefore gives a share of its volumes flips,
90° rotations and a left-handed permutation (determinant −1, which Slicer shows with the
slice axis reversed), and non-zero origins, so every consumer is tested against them.

A cohort can also be given one fixed direction for all its volumes (``direction=``), such
as :data:`ABUS_DIRECTION`: oblique as well as flipped, since real ABUS scans are not
aligned with the patient axes and code that only survives 90° turns is not yet right.
"""

from __future__ import annotations

import math

import numpy as np

from ..axes import Floats, Ints, float3
from ..errors import BlcamError
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
ORTHONORMAL_TOLERANCE = 1e-6
ABUS_TILT_DEG = 15.0


def _abus_direction(tilt_deg: float) -> tuple[float, ...]:
    """The "abus" axes (i→L, j→P along the beam, k→I: a flip, det −1) turned by ``tilt_deg``
    about the beam: the probe lies obliquely on the breast, so the coronal plane's axes i
    and k both mix L and S (and spacings 0.2 and 0.476 mm mix in LPS)."""
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    about_p = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return tuple(float(v) for v in (about_p @ np.diag([1.0, 1.0, -1.0])).reshape(-1))


ABUS_DIRECTION = _abus_direction(ABUS_TILT_DEG)

WEIGHTS = {"identity": 0.4, "flip-i": 0.12, "abus": 0.12, "rot90-k": 0.12, "rot90-i": 0.12,
           "swap-ik": 0.12}


def check_direction(direction: Floats, option: str = "--direction") -> tuple[float, ...]:
    """``direction`` (9 numbers, row-major) as a tuple, or a :class:`BlcamError` naming it.

    ITK stores any non-singular matrix, but one that is not orthonormal skews or scales
    space: no scanner writes it and readers treat it differently, so lesion centres written
    with it need not be where a viewer shows the lesion. It is refused with the value and
    the error rather than silently "corrected".
    """
    try:
        text = " ".join(_number(v) for v in direction)
    except TypeError:
        raise BlcamError(f"{option} {direction!r}: need 9 numbers") from None
    try:
        values = np.asarray([float(v) for v in direction], float)
    except (TypeError, ValueError):
        raise BlcamError(f"{option} {text}: need 9 numbers") from None
    if values.size != 9 or not np.all(np.isfinite(values)):
        raise BlcamError(f"{option} {text}: need 9 finite numbers (a 3x3 matrix, row-major)")
    matrix = values.reshape(3, 3)
    error = float(np.max(np.abs(matrix @ matrix.T - np.eye(3))))
    if error > ORTHONORMAL_TOLERANCE:
        raise BlcamError(f"{option} {text}: not orthonormal (D*D^T differs from the identity by "
                         f"{error:.3g} > {ORTHONORMAL_TOLERANCE:g}); give a rotation, possibly "
                         "with a flip, row-major, columns = LPS directions of i, j, k")
    return tuple(float(v) for v in values)


def _number(value: float) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return repr(value)


def random_geometry(rng: np.random.Generator, shape: Ints, spacing: Floats, direction: Floats | None = None
                    ) -> tuple[str, Geometry]:
    """A geometry for an array of ``shape`` (k, j, i) with ``spacing`` (k, j, i) in mm.

    Returns the direction's name too (written nowhere, useful in tests and pictures).
    Most non-identity volumes also get an origin of up to ±150 mm per axis. A given
    ``direction`` (9 numbers, row-major, checked by the caller) replaces the drawn one
    (name ``"given"``); the draws are the same, so the tissue of every volume is too.
    """
    names = list(WEIGHTS)
    p = np.asarray([WEIGHTS[n] for n in names])
    name = str(rng.choice(names, p=p / p.sum()))
    if name == "identity" and rng.random() < 0.5:
        origin = (0.0, 0.0, 0.0)
    else:
        origin = float3(np.round(rng.uniform(-150.0, 150.0, 3), 3))
    k, j, i = (int(s) for s in shape)
    sk, sj, si = (float(s) for s in spacing)
    if direction is None:
        direction = tuple(float(v) for v in DIRECTIONS[name].reshape(-1))
    else:
        name, direction = "given", tuple(float(v) for v in direction)
    return name, Geometry((i, j, k), (si, sj, sk), origin, direction)
