"""Typed 3-tuples: a volume's sizes, spacings, points and indices, one value per axis.

Dataclasses such as :class:`~blcam.io.volume.Geometry` say ``tuple[int, int, int]``;
``tuple(int(v) for v in values)`` only says ``tuple[int, ...]``. These helpers convert and
state the length (a value that is not three long raises ``ValueError``: callers pass values
that are 3-D by contract, checked earlier where they come from the user).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import SupportsFloat, SupportsInt

__all__ = ["Float3", "Int3", "float3", "int3"]

Int3 = tuple[int, int, int]
Float3 = tuple[float, float, float]


def int3(values: Iterable[SupportsInt]) -> Int3:
    """``values`` (three of them) as ints."""
    a, b, c = (int(v) for v in values)
    return a, b, c


def float3(values: Iterable[SupportsFloat]) -> Float3:
    """``values`` (three of them) as floats."""
    a, b, c = (float(v) for v in values)
    return a, b, c
