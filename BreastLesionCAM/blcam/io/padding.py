"""What of a volume was not imaged: padding planes at its faces, NaN voxels, a declared mask value.

Why. Datasets are often padded to a common size, and exports pad or mask what lies outside
the scanned field of view, with a constant (0, the scanner's minimum, -1024) or NaN. The
network never saw such a margin: training crops lie inside the volume (``padded_crops``
off), and at a volume's own faces Detect's convolutions see their zero padding, which is
mid-grey in the network's units. A black margin beside tissue looks to it like the anechoic
inside of a cyst behind its bright wall. Measured on 53 seed-11 phantom volumes with the
bundled model (``bench/RESULTS.md``), a 5 mm black margin on both lateral faces drew most
top candidates into the margins: pointing game 0.577 → 0.231, volume AUC 0.905 → 0.639.

So Detect leaves out what was not imaged, in three ways:

* :func:`data_box`: ultrasound has speckle everywhere it images, so a whole plane of one value
  (or of NaN) at a face is padding. Peeling those planes off, face by face, leaves the box
  that was scanned; Detect maps only that box, which *is* the unpadded volume, so it finds
  there what it finds in the unpadded volume.
* :func:`missing_voxels`: NaN and ±inf voxels anywhere mean "no data"; the network sees them
  as mid-grey, and they get no heat and no candidate.
* :func:`mark_no_data`: a mask of another shape written as an ordinary grey value (0 outside
  a curved field of view) cannot be told from a shadow that dark by the image alone, so the
  user names the value (``--no-data-value``); :func:`suspected_mask` only prompts them to.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

Box = tuple[slice, ...]


def _constant(plane: np.ndarray) -> bool:
    """Whether every finite voxel of ``plane`` has the same value (also true with none finite)."""
    if np.issubdtype(plane.dtype, np.floating):
        plane = plane[np.isfinite(plane)]
        if plane.size == 0:
            return True
    return bool(plane.min() == plane.max())


def data_box(volume: np.ndarray) -> Box:
    """Slices ``(k, j, i)`` of the largest box whose face planes are not constant: the volume
    without the constant (or non-finite) planes padded onto any of its six faces. The whole
    volume when no face is padded, or when every plane is constant (nothing to tell apart).

    Reads one plane per padded plane plus one per face, so a volume without padding costs six
    plane reads (a negligible share of Detect's time even at ABUS size).
    """
    box = [slice(0, n) for n in volume.shape]
    for axis, n in enumerate(volume.shape):
        lo, hi = 0, n
        while lo < hi and _constant(_plane(volume, box, axis, lo)):
            lo += 1
        if lo == hi:                   # every plane along this axis is constant: keep the volume
            return tuple(slice(0, m) for m in volume.shape)
        while _constant(_plane(volume, box, axis, hi - 1)):
            hi -= 1
        box[axis] = slice(lo, hi)
    return tuple(box)


def _plane(volume: np.ndarray, box: list[slice], axis: int, index: int) -> np.ndarray:
    """Plane ``index`` along ``axis``, within the box's extent along the axes already peeled
    (padding planes already removed there cannot make a plane look like data)."""
    where = list(box)
    where[axis] = slice(index, index + 1)
    return volume[tuple(where)]


def is_whole(box: Box, shape: tuple[int, ...]) -> bool:
    """Whether ``box`` covers the whole of an array of ``shape``."""
    return all(s.start == 0 and s.stop == n for s, n in zip(box, shape))


def missing_voxels(volume: np.ndarray) -> np.ndarray | None:
    """Where ``volume`` holds no image: its NaN and ±inf voxels (a masked export's "no data"
    inside the box), or ``None`` when it has none (an integer volume never has any).

    Detect shows them to the network as mid-grey, its own zero input, the value its
    convolutions pad a volume's faces with, rather than as black: black beside tissue reads
    as a cyst (see the module's note), and no lesion can lie where nothing was imaged.
    """
    if not np.issubdtype(volume.dtype, np.floating):
        return None
    finite = np.isfinite(volume)
    return None if finite.all() else ~finite


def mark_no_data(volume: np.ndarray, value: float) -> tuple[np.ndarray, int]:
    """``volume`` with its voxels of ``value`` that connect (6-connected) to one of its faces set
    to NaN, as float32, and how many they were; ``volume`` itself when there are none.

    For an export that writes "not imaged" as an ordinary grey value (0 outside a curved field
    of view, say) rather than NaN: only the user knows that value, hence ``blcam detect
    --no-data-value``. Connected to a face, because what lies outside a field of view reaches
    the volume's edge, while a region of the same value enclosed by tissue (the inside of an
    anechoic cyst) is image. A shadow as dark as ``value`` that reaches a face is marked too:
    on the phantom, whose deep shadows hold zeros, that cost 0.006 of FROC (``bench/RESULTS.md``).
    """
    hit = volume == value
    if not hit.any():
        return volume, 0
    outside = _face_connected(hit)
    count = int(np.count_nonzero(outside))
    if not count:
        return volume, 0
    marked = volume.astype(np.float32, copy=True)
    marked[outside] = np.nan
    return marked, count


def _face_connected(hit: np.ndarray) -> np.ndarray:
    """The voxels of ``hit`` that connect (6-connected) to one of the array's faces."""
    labels, _ = ndi.label(hit)
    faces = np.unique(np.concatenate([np.unique(np.take(labels, end, axis=axis))
                                      for axis in range(hit.ndim) for end in (0, -1)]))
    return np.isin(labels, faces[faces > 0])


def suspected_mask(volume: np.ndarray, missing: np.ndarray | None = None, min_fraction: float = 0.01,
                   edge_ratio: float = 0.5) -> tuple[float, float] | None:
    """``(value, fraction)`` when ``volume`` looks masked with an ordinary grey value: at least
    ``min_fraction`` of it holds its lowest value in regions that reach a face, and the voxels
    bordering those regions are, by their median, at least ``edge_ratio`` as bright as the
    volume's median. A hard edge from tissue to that value is a mask; a shadow fades into it
    (on the phantom's unmasked volumes that ratio stays below 0.3, ``bench/RESULTS.md``).
    ``None`` otherwise. Only a hint for a warning: the image cannot prove it.

    ``missing``: :func:`missing_voxels` of ``volume`` (its non-finite voxels, which are neither
    the mask's value nor tissue), so that a caller who has it does not find them again.
    """
    imaged = volume if missing is None else volume[~missing]
    if imaged.size == 0:
        return None
    low = imaged.min()
    hit = volume == low
    if np.count_nonzero(hit) < min_fraction * volume.size:
        return None
    outside = _face_connected(hit)
    fraction = float(np.count_nonzero(outside)) / volume.size
    if fraction < min_fraction:
        return None
    tissue = ~hit if missing is None else ~hit & ~missing
    edge = ndi.binary_dilation(outside) & tissue
    median = np.median(volume[tissue]) if tissue.any() else low
    if not edge.any() or not median > low:
        return None
    ratio = (np.median(volume[edge]) - low) / (median - low)
    return (float(low), fraction) if ratio >= edge_ratio else None
