"""Per-axis values, typed: a volume's sizes, spacings, points and indices.

Dataclasses such as :class:`~blcam.io.volume.Geometry` say ``tuple[int, int, int]``;
``tuple(int(v) for v in values)`` only says ``tuple[int, ...]``. :func:`int3` and
:func:`float3` convert and state the length (a value that is not three long raises
``ValueError``: callers pass values that are 3-D by contract, checked earlier where they
come from the user). :data:`Ints` and :data:`Floats` are what functions accept per axis or
per item: a list, a tuple or a NumPy array.

No ``X | Y`` outside annotations here: Slicer 5.8 imports blcam on Python 3.9.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import SupportsFloat, SupportsInt, Union

import numpy as np

__all__ = ["Float3", "Floats", "Int3", "Ints", "PathLike", "float3", "int3"]

Int3 = tuple[int, int, int]
Float3 = tuple[float, float, float]
Ints = Union[Sequence[int], np.ndarray]
Floats = Union[Sequence[float], np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]


def int3(values: Iterable[SupportsInt]) -> Int3:
    """``values`` (three of them) as ints."""
    a, b, c = (int(v) for v in values)
    return a, b, c


def float3(values: Iterable[SupportsFloat]) -> Float3:
    """``values`` (three of them) as floats."""
    a, b, c = (float(v) for v in values)
    return a, b, c
