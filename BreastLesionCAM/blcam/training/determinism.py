"""Deterministic CPU training: the same seed gives the same weights, and a resumed run the
weights of one never interrupted (``Testing/Python/test_training.py``)."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def deterministic(enabled: bool):
    """Deterministic kernels for the duration of a CPU run (both settings restored afterwards).

    Without filling uninitialised memory: with deterministic algorithms on, torch by default
    writes a known value into every tensor ``torch.empty`` returns, a debugging aid against
    kernels that read memory they never wrote. Every training tensor is written before it is
    read, so the weights are the same without it (tested), and the fills took about a tenth of
    a CPU training step (``bench/RESULTS.md``).
    """
    before = torch.are_deterministic_algorithms_enabled()
    fill_before = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(enabled or before)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.utils.deterministic.fill_uninitialized_memory = fill_before  # type: ignore[attr-defined]
