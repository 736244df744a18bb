"""Named phantom geometries: ``demo`` (small and fast) and ``abus`` (the size of a real scan).

The demo size (48×320×320 voxels) keeps the demo, the tests and training on a laptop fast,
but it hides what only real data sizes show: memory per volume, patch extraction and
sliding-window detection over ~200 M voxels, and strongly anisotropic voxels. The ``abus``
preset matches the TDSC-ABUS 2023 volumes (865×682×354 voxels i, j, k of about
0.2×0.073×0.476 mm) with an oblique, flipped direction (:data:`.geometry.ABUS_DIRECTION`),
for benchmarks and for tests that must not assume axis-aligned data.

Shapes and spacings are in array order (k, j, i) like everywhere in the phantom; directions
are 9 numbers row-major as SimpleITK stores them (columns: LPS directions of i, j, k), or
``None`` for the demo's per-volume random mix of flips and 90° rotations.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..axes import Floats, Ints, float3, int3
from ..errors import BlcamError
from .geometry import ABUS_DIRECTION, check_direction
from .volume import DEFAULT_SHAPE, DEFAULT_SPACING


@dataclass(frozen=True)
class Preset:
    """A cohort geometry: array shape and spacing (k, j, i), direction (or ``None``)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...] | None


PRESETS = {
    "demo": Preset(int3(DEFAULT_SHAPE), float3(DEFAULT_SPACING), None),
    "abus": Preset((354, 682, 865), (0.476, 0.073, 0.2), ABUS_DIRECTION),
}


def resolve(preset: str = "demo", shape: Ints | None = None, spacing: Floats | None = None,
            direction: Floats | None = None) -> Preset:
    """The preset's values, each replaced by the caller's where one is given.

    An explicit ``--shape`` or ``--spacing`` wins over the preset, so ``--preset abus
    --shape 64 320 160`` is a small volume with the ABUS spacing and direction (a quick
    check of anisotropic, oblique data); a given direction is checked here.
    """
    if preset not in PRESETS:
        raise BlcamError(f"--preset {preset}: unknown; use one of {', '.join(sorted(PRESETS))}")
    base = PRESETS[preset]
    return Preset(tuple(shape) if shape is not None else base.shape,
                  tuple(spacing) if spacing is not None else base.spacing,
                  check_direction(direction) if direction is not None else base.direction)
