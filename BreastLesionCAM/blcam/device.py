"""Where a network runs: the device names every command accepts, and the list a user picks from.

One vocabulary for the command line, the training config and the Slicer panel: ``auto``
(CUDA, else Apple MPS, else the CPU), ``cpu``, ``cuda`` (the first GPU; under torchrun each
process's own), ``cuda:N`` (one GPU of several, numbered as PyTorch numbers them) and
``mps`` (Apple Silicon). Names are checked without importing torch (:func:`is_device_name`),
so the Slicer module validates its settings before torch is even installed; the functions
that ask the hardware import torch when they are called.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from .errors import BlcamError

DEVICES = ("auto", "cpu", "cuda", "mps")
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def is_device_name(name: object) -> bool:
    """True for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` and ``mps``."""
    return isinstance(name, str) and (name in DEVICES or _CUDA_INDEX.fullmatch(name) is not None)


def check_device_name(name: str, option: str = "--device") -> str:
    """``name`` itself, or :class:`BlcamError` naming the value and the accepted names."""
    if not is_device_name(name):
        raise BlcamError(f"{option} '{name}': choose one of {', '.join(DEVICES)} or cuda:N (a GPU's index)")
    return name


def device_name(text: str) -> str:
    """argparse type of ``--device``."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: choose one of {', '.join(DEVICES)} or cuda:N")
    return text


def cuda_index(name: str) -> int | None:
    """The N of ``cuda:N``; None for every other name."""
    match = _CUDA_INDEX.fullmatch(name)
    return int(match.group(1)) if match else None


def mps_available() -> bool:
    import torch
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str, local_rank: int = 0):
    """The ``torch.device`` for ``name``: 'auto' picks CUDA, then Apple MPS, then the CPU;
    explicit names are checked against the hardware, with a message saying what is missing."""
    import torch
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    index = cuda_index(name)
    if name == "cuda" or index is not None:
        if not torch.cuda.is_available():
            raise BlcamError(f"--device {name}: no CUDA GPU is visible to PyTorch (try --device auto)")
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise BlcamError(f"--device {name}: only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", local_rank % count if index is None else index)
    if name == "mps" and not mps_available():
        raise BlcamError("--device mps: Apple MPS is not available (try --device auto)")
    return torch.device(name)


def device_choices(cuda_names: Sequence[str] = (), mps: bool = False) -> list[tuple[str, str]]:
    """``(name, label)`` pairs for a menu: auto (saying what it picks), cpu, each CUDA GPU by
    index and model name, and mps when Apple's GPU is there."""
    gpus = [(f"cuda:{n}", f"cuda:{n} ({gpu})") for n, gpu in enumerate(cuda_names)]
    rest = [("cpu", "cpu")] + gpus + ([("mps", "mps (Apple GPU)")] if mps else [])
    picked = concrete_device("auto", [name for name, _ in rest])
    return [("auto", f"auto ({picked})")] + rest


def available_devices() -> list[tuple[str, str]]:
    """:func:`device_choices` of this computer (imports torch)."""
    import torch
    names = [torch.cuda.get_device_name(n) for n in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return device_choices(names, mps_available())


def concrete_device(name: str, available: Sequence[str]) -> str:
    """The device a job with ``name`` will use, among ``available`` names (as listed by
    :func:`device_choices`): 'auto' → the first GPU, else mps, else cpu; 'cuda' → cuda:0."""
    if name == "auto":
        gpus = [a for a in available if cuda_index(a) is not None]
        return gpus[0] if gpus else "mps" if "mps" in available else "cpu"
    return "cuda:0" if name == "cuda" else name
