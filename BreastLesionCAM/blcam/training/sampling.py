"""Which patches one epoch trains on, and in what order: as exported, or class-balanced.

The paper trains on every exported patch once per epoch. A patch dataset is far from
balanced, though: one positive per annotated lesion against several random negatives per
healthy volume (the demo: 60 lesion patches, 392 healthy ones). Trained on that mix the
network sees each lesion kind a few dozen times per epoch against hundreds of easy healthy
crops, and learns the kinds that look least like healthy tissue first; a mass that resembles
normal tissue (a circumscribed, mildly hypoechoic one beside fat lobules) stays
under-learned, and the classifier turns cautious at 0.5. ``positive_fraction`` draws a fixed
share of each epoch from the lesion patches instead (MONAI's ``RandCropByPosNegLabel`` does
the same with its pos/neg ratio): the epoch keeps its length, positives are repeated (each
repeat gets its own random crop and flips, :func:`repeat_numbers`) and a random subset of
the negatives fills the rest, a different one every epoch.

Everything is a pure function of seed and epoch, so every DDP rank computes the same
global order and takes its own shard, as ``DistributedSampler`` does, and a resumed run
trains on exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch.utils.data import DistributedSampler

STREAM_SAMPLING = 7      # a random stream of its own (data.py's crops use others)


def epoch_order(labels: Sequence[int] | np.ndarray, epoch: int, seed: int, rank: int, world_size: int,
                positive_fraction: float | None) -> tuple[np.ndarray, np.ndarray]:
    """This rank's ``(patch rows, repeat numbers)`` for ``epoch``. ``positive_fraction=None``:
    every patch once in a random order (``DistributedSampler``, the paper); a float: that
    share of the epoch's draws are lesion patches."""
    labels = np.asarray(labels, np.int64)
    if positive_fraction is None:
        # Any sized sequence serves as the sampler's dataset (it only takes its length).
        sampler: DistributedSampler[int] = DistributedSampler(
            range(len(labels)), num_replicas=world_size, rank=rank,  # type: ignore[arg-type]
            shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        rows = np.fromiter(iter(sampler), np.int64)
        return rows, np.zeros(len(rows), np.int64)
    rng = np.random.default_rng([seed, STREAM_SAMPLING, epoch])
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n = len(labels)
    n_pos = min(n, max(1, round(positive_fraction * n))) if len(pos) else 0
    n_neg = min(len(neg), n - n_pos)
    n_pos = n - n_neg if len(pos) else 0          # too few negatives: positives fill the epoch
    # Positives in whole shuffled passes (each repeated ⌊n_pos/len⌋ or ⌈…⌉ times, never
    # one lesion five times and another not at all); negatives without replacement.
    reps = math.ceil(n_pos / len(pos)) if len(pos) else 0
    chosen_pos = np.concatenate([rng.permutation(pos) for _ in range(reps)])[:n_pos] if reps else pos[:0]
    chosen = np.concatenate([chosen_pos, rng.permutation(neg)[:n_neg]])
    order = chosen[rng.permutation(len(chosen))]
    padded = math.ceil(len(order) / world_size) * world_size
    order = np.resize(order, padded)               # DistributedSampler pads the same way
    return order[rank::world_size], repeat_numbers(order)[rank::world_size]


def repeat_numbers(global_order: np.ndarray) -> np.ndarray:
    """For each draw, how many times its patch was drawn before it in the epoch (0, 1, …).

    The crop and flips of a draw are keyed by patch *and* repeat number, so a lesion drawn
    three times trains on three different crops rather than one crop three times.
    """
    seen: dict[int, int] = {}
    out = np.zeros(len(global_order), np.int64)
    for n, row in enumerate(np.asarray(global_order, np.int64)):
        out[n] = seen.get(int(row), 0)
        seen[int(row)] = out[n] + 1
    return out
