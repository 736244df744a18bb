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


def assert_cancel_kills_tree(runner, pids, seconds: float = 5.0) -> None:
    """Cancel ``runner`` and check it and every process in ``pids`` are gone within ``seconds``."""
    import time

    import psutil

    t0 = time.monotonic()
    assert runner.cancel(timeout=seconds)
    assert runner.wait(timeout=seconds) is not None
    assert time.monotonic() - t0 < seconds
    assert runner.cancelled and not runner.succeeded
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
