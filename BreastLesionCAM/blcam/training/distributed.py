"""Multi-process (DDP) plumbing for ``blcam train`` (device names: :mod:`blcam.device`).

The same command runs alone or under ``torchrun --nproc_per_node N``: torchrun sets
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, and :func:`setup` then joins the process group
(NCCL on CUDA, gloo otherwise, so DDP is testable on CPU). Only rank 0 writes files; the
other ranks still compute, and validation scores are gathered so every rank sees the same
metrics and takes the same decisions (best model, early stop) without diverging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..device import cuda_index, resolve_device  # noqa: F401  (resolve_device: re-exported)
from ..errors import BlcamError


@dataclass
class DistContext:
    """Where this process sits in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of a few numbers over all ranks."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj`` (picklable, small), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def launched_as_main() -> bool:
    """Rank 0 of a torchrun job, or a plain process: known before :func:`setup` joins the
    group, so rank 0 alone can take the folder locks before any rank starts work."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), resolve_device(device_name)
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda_index(device_name) is not None:
        raise BlcamError(f"--device {device_name} under torchrun: every process would use that one GPU; "
                         "use --device cuda (each process takes its own)")
    device = resolve_device(device_name, local_rank)
    if device.type == "mps":
        raise BlcamError("multi-process training is not supported on Apple MPS; run one process")
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        created = True
    return DistContext(rank, dist.get_world_size(), local_rank, created), device


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The share of the global batch each process trains on (must divide evenly).

    ``--batch-size`` stays the paper's global batch under torchrun, so adding GPUs does
    not silently change the recipe; an uneven split would weight samples unequally.
    """
    if batch_size % world_size:
        lower = max(world_size, batch_size // world_size * world_size)
        raise BlcamError(f"--batch-size {batch_size} cannot be split evenly over {world_size} processes; "
                         f"use a multiple of {world_size} (e.g. {lower} or {lower + world_size})")
    return batch_size // world_size
