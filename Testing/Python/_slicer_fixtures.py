"""Shared pieces of the Slicer-module tests. The ``headless`` fixture (a real MRML scene from
slicer-core) is in ``conftest.py``; each Slicer test module starts with
``slicer = pytest.importorskip("slicer")`` so it skips, rather than fails, without slicer-core.

The phantom cases and the end-to-end scenario live in ``BreastLesionCAMLib.Scenario`` so the
module's Slicer self-test runs exactly the same thing inside Slicer.
"""

from __future__ import annotations


def assert_cancel_kills_tree(target, pids, seconds: float = 5.0) -> None:
    """Cancel ``target`` (a ProcessRunner, or a Job around one) without blocking, poll it to its
    end, and check that it and every process in ``pids`` are gone within ``seconds``."""
    import time

    import psutil

    t0 = time.monotonic()
    target.cancel()
    assert time.monotonic() - t0 < 0.5, "cancel() must return at once (it runs on the GUI thread)"
    target.wait(timeout=seconds)
    assert time.monotonic() - t0 < seconds
    process = getattr(target, "process", target)
    assert process.finished and process.cancelled and not target.succeeded
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
