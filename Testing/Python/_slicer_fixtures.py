"""Shared pieces of the Slicer-module tests: a real MRML scene (slicer-core) and phantom cases.

The phantom cases and the end-to-end scenario live in ``BreastLesionCAMLib.Scenario`` so the
module's Slicer self-test runs exactly the same thing inside Slicer.
"""

from __future__ import annotations

import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from BreastLesionCAMLib.Headless import createScene  # noqa: E402


@pytest.fixture
def headless():
    """A fresh scene with Slicer's colour, markups and volumes logics and three slice views."""
    h = createScene()
    yield h
    h.close()
