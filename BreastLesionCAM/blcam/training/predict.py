"""Scoring patches with a network: shared by validation during training and by evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..axes import Ints
from .data import PatchSource, to_network

if TYPE_CHECKING:
    from tqdm import tqdm


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA under 'auto' (or when asked for), fp32 otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, source: PatchSource, rows: Ints, offsets: np.ndarray,
                   batch_size: int, precision: str = "auto", channels_last: bool = False,
                   crop: Sequence[int] | None = None, progress: tqdm | None = None) -> np.ndarray:
    """The network's logit for each of ``rows`` (crops at ``offsets``, no flips), in order.

    ``crop`` overrides the source's crop size (e.g. the whole stored patch); ``progress``
    is an optional tqdm bar advanced by the number of patches scored.
    """
    model.eval()
    flips = np.zeros((len(rows), 2), bool)
    out = []
    for x, _, _ in source.batches(rows, offsets, flips, batch_size, crop):
        with autocast_for(source.device, precision):
            logits = model(to_network(x, channels_last))
        out.append(logits.float().reshape(-1).cpu())
        if progress is not None:
            progress.update(len(x))
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def bce_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy, computed stably from logits (matches the training loss)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    if logits.size == 0:
        return float("nan")
    return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))
