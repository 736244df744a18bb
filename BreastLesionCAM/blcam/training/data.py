"""Crops and flips of stored patches, fed either from device memory or a DataLoader.

Augmentation parameters are a pure function of ``(seed, stream, epoch, patch index)``:
each patch gets its own generator, so the crop a patch receives does not depend on batch
composition, worker count, process count or the device. That makes CPU runs reproducible,
``--resume`` bit-exact, and the two data paths interchangeable (a test checks they give
identical batches):

* **resident** — all patches, normalised once to uint8, in one tensor on the training device (a paper-
  sized cohort is ~1.4 GB, which an H100 holds easily); a batch is one gather kernel with
  the flips folded into the index vectors, so the GPU never waits for the CPU;
* **loader** — a DataLoader with worker processes over memory-mapped ``.npy`` files
  (pinned memory on CUDA) for cohorts that do not fit; a crop touches only its pages, and
  only the crop is normalised to uint8 (the export stores grey values).

Crop positions are uniform over the positions that keep the crop inside the part of the
patch that lies in its volume (:func:`crop_ranges`). A lesion near a volume border gets a
padded patch while negatives are drawn inside the volume, so crops reaching into the padding
would teach the network "padding means lesion"; the paper's uniform crops over the whole
patch remain available (``padded_crops``). Flips are along
k (slices, the paper's "depth") and i (horizontal), never j: j is the beam direction, and
acoustic shadows fall along +j, so flipping it would show the network impossible images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from ..axes import Ints, int3
from ..errors import BlcamError
from ..intensity import network_input
from ..patches.dataset import PatchDataset

STREAM_TRAIN, STREAM_EVAL = 0, 1      # independent random streams for training and evaluation crops
STREAM_ZOOM = 11                      # training zoom factors (augment.py); sampling.py uses 7
STREAM_APPEARANCE = 13                # blur, low resolution, contrast, gamma (appearance.py)
RESIDENT_SHARE = 0.25                 # hold patches in memory if they take at most this share of it
# One batch: uint8 crops (B, k, j, i), labels (B,), patch rows (B,).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def max_offsets(patch: Ints, crop: Ints) -> np.ndarray:
    """Largest crop start per axis (inclusive); the crop must fit in the stored patch."""
    patch, crop = np.asarray(patch, int), np.asarray(crop, int)
    if (crop > patch).any():
        raise BlcamError(f"crop {' '.join(map(str, crop))} does not fit in the stored patches "
                         f"{' '.join(map(str, patch))} (k j i); "
                         f"use a smaller --crop or export larger patches")
    return patch - crop


def centre_offset(patch: Ints, crop: Ints) -> np.ndarray:
    """Start of the crop whose centre voxel (``crop // 2``) is the patch's centre voxel."""
    top = max_offsets(patch, crop)
    return np.clip(np.asarray(patch, int) // 2 - np.asarray(crop, int) // 2, 0, top)


def crop_ranges(dataset: PatchDataset, records: Sequence[dict], crop: Ints) -> np.ndarray:
    """``(n, 2, 3)``: per record, the first and last crop start (inclusive) per axis that keep
    the crop inside the patch's in-volume part; where that part is thinner than the crop,
    the starts whose crop covers all of it (the least padding possible).

    Every allowed crop still holds the lesion centre: the in-volume part contains the
    patch centre.
    """
    patch = np.asarray(dataset.patch_size, int)
    crop = np.asarray(crop, int)
    top = max_offsets(patch, crop)
    out = np.zeros((len(records), 2, 3), np.int64)
    for n, rec in enumerate(records):
        lo, hi = dataset.valid_box(rec)
        a, b = hi - crop, lo          # last start ending inside, first start beginning inside
        out[n, 0] = np.clip(np.minimum(a, b), 0, top)
        out[n, 1] = np.clip(np.maximum(a, b), 0, top)
    return out


def full_ranges(n: int, patch: Ints, crop: Ints) -> np.ndarray:
    """``(n, 2, 3)``: every crop start that fits in the patch (the paper's padded crops)."""
    out = np.zeros((n, 2, 3), np.int64)
    out[:, 1] = max_offsets(patch, crop)
    return out


def keep_lesion_inside(ranges: np.ndarray, labels: Sequence[int], patch: Ints, crop: Ints,
                       margin: float) -> np.ndarray:
    """``ranges`` with the crop starts of positive patches narrowed so that the lesion centre
    (the patch centre) lies at least ``margin`` × the crop size inside every face of the crop.

    With the paper's proportions (28→16, 280→160) the centre always stays 6–12 % of the crop
    inside it; with patches twice the crop it can sit on the crop's face, where a subtle
    lesion is half cut off yet labelled positive. Where the narrowed range is empty (a lesion
    at a volume border) the allowed start nearest the centred one (:func:`centre_offset`) is
    kept. Negatives keep their ranges.
    """
    out = np.array(ranges, np.int64, copy=True)
    if margin <= 0:
        return out
    patch, crop = np.asarray(patch, int), np.asarray(crop, int)
    m = np.floor(margin * crop).astype(np.int64)
    positive = np.asarray(labels) == 1
    first, last = out[positive, 0], out[positive, 1]
    lo, hi = np.maximum(first, patch // 2 - crop + 1 + m), np.minimum(last, patch // 2 - m)
    nearest = np.clip(centre_offset(patch, crop), first, last)
    empty = lo > hi
    out[positive, 0] = np.where(empty, nearest, lo)
    out[positive, 1] = np.where(empty, nearest, hi)
    return out


def draw_rngs(seed: int, stream: int, epoch: int, indices: Ints,
              repeats: Ints | None = None) -> Iterator[tuple[int, int, np.random.Generator]]:
    """``(row, patch index, generator)`` per draw: a generator of its own for each (seed,
    stream, epoch, patch, repeat), so a draw never depends on the order or on other streams.
    ``repeats[n]``: how often ``indices[n]`` was drawn before in this epoch (:mod:`.sampling`);
    a first draw keeps the key it always had."""
    for row, idx in enumerate(indices):
        again = 0 if repeats is None else int(repeats[row])
        yield row, int(idx), np.random.default_rng([seed, stream, epoch, int(idx)] + ([again] if again else []))


def random_params(seed: int, stream: int, epoch: int, indices: Ints, patch: Ints, crop: Ints,
                  flip_p: float, ranges: np.ndarray | None = None,
                  repeats: Ints | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-draw ``(offsets (n, 3), flips (n, 2) over k and i)``: crop starts uniform within
    ``ranges[idx]`` (:func:`crop_ranges`), or anywhere in the patch without ``ranges``; each
    repeat gets its own crop (:func:`draw_rngs`)."""
    top = max_offsets(patch, crop)
    offsets = np.zeros((len(indices), 3), np.int64)
    flips = np.zeros((len(indices), 2), bool)
    for row, idx, rng in draw_rngs(seed, stream, epoch, indices, repeats):
        lo, hi = (ranges[idx] if ranges is not None else (np.zeros(3, np.int64), top))
        offsets[row] = rng.integers(lo, hi + 1)
        flips[row] = rng.random(2) < flip_p
    return offsets, flips


def batch_slices(n: int, size: int, merge_single: bool = False) -> list[slice]:
    """Consecutive batches of ``size`` over ``n`` items. With ``merge_single`` a last batch of
    one joins the previous batch: BatchNorm cannot train on a single sample whose last
    feature map is 1×1×1 ("expected more than 1 value per channel"). Deterministic, and it
    changes nothing for the sizes that worked before."""
    starts = list(range(0, n, size))
    if merge_single and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]


def crop_array(patch: np.ndarray, offset: Ints, flip: Sequence[bool], crop: Sequence[int]) -> np.ndarray:
    """One crop of a stored patch (numpy), flipped along k and/or i, contiguous."""
    k, j, i = (int(v) for v in offset)
    out = patch[k:k + crop[0], j:j + crop[1], i:i + crop[2]]
    if flip[0]:
        out = out[::-1]
    if flip[1]:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def crop_gather(bank: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                crop: Sequence[int]) -> torch.Tensor:
    """Crops of ``bank[rows]`` in one indexing kernel: flips become reversed index ranges."""
    dev = bank.device
    ar = [torch.arange(c, device=dev) for c in crop]
    kk = offsets[:, 0:1] + torch.where(flips[:, 0:1], crop[0] - 1 - ar[0], ar[0])
    jj = offsets[:, 1:2] + ar[1]
    ii = offsets[:, 2:3] + torch.where(flips[:, 1:2], crop[2] - 1 - ar[2], ar[2])
    return bank[rows[:, None, None, None], kk[:, :, None, None], jj[:, None, :, None], ii[:, None, None, :]]


def crop_slices(bank: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                crop: Sequence[int]) -> torch.Tensor:
    """Same result as :func:`crop_gather` by per-patch slicing: faster on the CPU, where a
    gather pays for its index arithmetic, while on a GPU one kernel beats B small ones."""
    out = torch.empty((len(rows), *crop), dtype=bank.dtype, device=bank.device)
    for n, (r, o, f) in enumerate(zip(rows.tolist(), offsets.tolist(), flips.tolist())):
        view = bank[r, o[0]:o[0] + crop[0], o[1]:o[1] + crop[1], o[2]:o[2] + crop[2]]
        dims = [d for d, flip in ((0, f[0]), (2, f[1])) if flip]
        out[n] = view.flip(dims) if dims else view
    return out


def prefers_channels_last(device: torch.device) -> bool:
    """Whether the network runs in channels_last_3d on ``device``: cuDNN's and oneDNN's native
    layout, so convolutions skip the reorder copies. On the CPU a training step of the demo's
    network ran 1.4× faster in it (``bench/train_layout.py``); only the layout of the same
    fp32 arithmetic changes. MPS keeps the default layout (not measured there)."""
    return device.type in ("cuda", "cpu")


def to_network(x_uint8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A uint8 ``(B, k, j, i)`` batch to the network's float ``(B, 1, k, j, i)`` input."""
    x = network_input(x_uint8.unsqueeze(1).float())
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


class _KeyedCrops(Dataset):
    """DataLoader dataset: key ``(row, offset (3), flip_k, flip_i, crop (3))`` → (uint8 crop, row).

    Patches are stored in grey values; only the crop is read from the memory map and
    normalised, which is cheaper than normalising the whole patch and gives the same bytes.
    """

    def __init__(self, dataset: PatchDataset, records: list[dict]):
        self.dataset, self.records = dataset, records
        self._maps: dict[int, np.ndarray] = {}     # per worker process, filled lazily

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple) -> tuple[torch.Tensor, int]:
        row, ok, oj, oi, fk, fi, ck, cj, ci = key
        raw = self._maps.get(row)
        if raw is None:
            raw = self._maps[row] = self.dataset.load_raw(self.records[row], mmap=True)
        crop = crop_array(raw, (ok, oj, oi), (fk, fi), (ck, cj, ci))
        return torch.from_numpy(self.dataset.normalise(self.records[row], crop)), row


class _Keys:
    """A sampler whose keys are replaced before each pass (persistent workers keep running)."""

    def __init__(self) -> None:
        self.keys: list[list[tuple]] = []     # one list of _KeyedCrops keys per batch

    def __iter__(self) -> Iterator[list[tuple]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class PatchSource:
    """Crops of a fixed set of patch records, on ``device``, from memory or a DataLoader.

    ``crop`` is the default crop size; :meth:`batches` may ask for another one (evaluation
    scores full patches and crops from the same source without loading the patches twice).
    """

    def __init__(self, dataset: PatchDataset, records: list[dict], crop: Sequence[int], device: torch.device,
                 resident: str = "auto", workers: int = 0):
        self.dataset, self.records, self.crop, self.device = dataset, records, tuple(crop), device
        self.patch = tuple(dataset.patch_size)
        max_offsets(self.patch, self.crop)
        self.labels = torch.tensor([float(r["label"]) for r in records], device=device)
        self.resident = _decide_resident(resident, len(records) * int(np.prod(self.patch)), device)
        if self.resident:
            self.bank = self._load_bank()
        else:
            # One DataLoader for the whole run: its sampler's keys are swapped before each
            # pass, so persistent workers (and their memory maps) survive across epochs.
            self._keys = _Keys()
            self._loader = DataLoader(_KeyedCrops(dataset, records), batch_sampler=self._keys,
                                      num_workers=workers, pin_memory=device.type == "cuda",
                                      persistent_workers=workers > 0,
                                      prefetch_factor=4 if workers > 0 else None)

    def _load_bank(self) -> torch.Tensor:
        """Read and normalise every patch (threads: NumPy releases the GIL) into one tensor."""
        bank = torch.empty((len(self.records), *self.patch), dtype=torch.uint8, device=self.device)

        def load(rec: dict) -> np.ndarray:
            arr = self.dataset.load(rec, mmap=False)
            if arr.shape != self.patch:
                raise BlcamError(f"{self.dataset.path_of(rec)}: patch shape {arr.shape}, dataset says {self.patch}")
            return arr

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for n, arr in enumerate(pool.map(load, self.records)):
                bank[n].copy_(torch.from_numpy(arr))
        return bank

    def batches(self, order: Ints, offsets: np.ndarray, flips: np.ndarray, batch_size: int,
                crop: Sequence[int] | None = None, merge_single: bool = False) -> Iterator[Batch]:
        """``(uint8 crops (B, k, j, i), labels (B,), rows (B,))`` on the device, in ``order``
        (``merge_single``: see :func:`batch_slices`; training sets it)."""
        order = np.asarray(order, np.int64)
        crop = self.crop if crop is None else int3(crop)
        max_offsets(self.patch, crop)
        slices = batch_slices(len(order), batch_size, merge_single)
        if self.resident:
            yield from self._resident_batches(order, offsets, flips, slices, crop)
        else:
            yield from self._loader_batches(order, offsets, flips, slices, crop)

    def _resident_batches(self, order: np.ndarray, offsets: np.ndarray, flips: np.ndarray, slices: list[slice],
                          crop: Sequence[int]) -> Iterator[Batch]:
        rows_all = torch.as_tensor(order, device=self.device)
        off_all = torch.as_tensor(np.asarray(offsets, np.int64), device=self.device)
        flip_all = torch.as_tensor(np.asarray(flips, bool), device=self.device)
        for sl in slices:
            rows = rows_all[sl]
            cut = crop_gather if self.device.type == "cuda" else crop_slices
            yield cut(self.bank, rows, off_all[sl], flip_all[sl], crop), self.labels[rows], rows

    def _loader_batches(self, order: np.ndarray, offsets: np.ndarray, flips: np.ndarray, slices: list[slice],
                        crop: Sequence[int]) -> Iterator[Batch]:
        keys = [(int(r), *map(int, o), bool(f[0]), bool(f[1]), *crop) for r, o, f in zip(order, offsets, flips)]
        self._keys.keys = [keys[sl] for sl in slices]
        for crops, rows in self._loader:
            rows = rows.to(self.device, non_blocking=True)
            yield crops.to(self.device, non_blocking=True), self.labels[rows], rows


def _decide_resident(mode: str, nbytes: int, device: torch.device) -> bool:
    """'on'/'off' as asked; 'auto': resident if the patches take ≤ RESIDENT_SHARE of free memory."""
    if mode in ("on", "off"):
        return mode == "on"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    elif device.type == "cpu":
        free = psutil.virtual_memory().available
    else:
        return False
    return nbytes <= RESIDENT_SHARE * free
