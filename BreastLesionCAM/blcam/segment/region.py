"""The lesion around one Detect candidate, as a binary mask: heatmap to find it, image to outline it.

Why both. Grad-CAM says *where* a lesion is, not where it ends: it is the network's stride-16
feature grid upsampled, and it peaks on the lesion's middle. On the test phantom's 12 mm cyst
(0.3 mm voxels, a tiny trained model) the heatmap's half-maximum region holds 17 % of the
cyst's voxels, the 0.2 × peak region 71 % (and 11 % of it lies outside the cyst): a threshold
on the heatmap alone measures the CAM's cell size, not the lesion. The image knows the
outline: breast lesions are hypoechoic, darker than the tissue around them. So the heatmap
says which region and how far it may reach, and the image delimits it.

The rule (lengths in mm and grey levels from the image itself, so nothing depends on the
voxel size, the orientation, the scanner's grey scale or a phantom):

1. **Peak**: the hottest voxel within ``SEED_RADIUS_MM`` of the candidate (Detect's refinement
   may move a candidate a little off the heatmap's maximum).
2. **Hot core**: the connected region of voxels at or above ``fraction`` × peak (default 0.5,
   the half maximum, as in the candidate's size estimate), or above an absolute ``threshold``
   when one is given, that contains the peak. A fraction of the candidate's *own* peak means
   the same for weak and strong candidates; an absolute threshold compares candidates on one
   scale (Detect's heatmaps are in [0, 1]). Without an image, the hot core is the result.
3. **Cap**: everything stays inside a ball of ``radius_mm`` around the candidate (default
   30 mm: a 6 cm lesion through its centre, larger than nearly all breast lesions), so no
   threshold and no dark structure touching the lesion can spread the region through the
   volume. ``capped`` flags a region that reached the ball's surface (its outline there is
   the cap's, not the lesion's).
4. **Image refinement** (an image is given and ``refine`` is on). The image is smoothed with a
   Gaussian of ``smoothing_mm`` against speckle. Its grey levels give the lesion's level (the
   25th percentile over the hot core: the core's darker part, robust when the core spills over
   the lesion's edge) and the surroundings' level (the median over the cap ball, which a
   lesion fills only a small part of: under half while its diameter is under 0.8 × the
   ball's). The lesion must be clearly darker: below the ball's 25th percentile; otherwise
   (a lesion that is not hypoechoic) the hot core is the result and ``refined`` is False.
   The region is the connected part of {smoothed < halfway between the two levels} that
   carries the most heat over the hot core, confined to the *envelope*: the connected region
   at ``envelope`` × peak (default 0.1) around the peak, i.e. as far as the network saw
   anything. Enclosed holes are filled. Last, the **partial-volume rim**: the voxels just
   outside the region (one face-neighbour layer) straddle the lesion's edge, and those darker
   than the surroundings' level hold lesion, so they are counted in. On the 12 mm cyst above
   this gives 79 % of the cyst's volume, every voxel inside it or in its outer voxel layer.

Connected means face-connected (6 neighbours): a diagonal chain of speckle voxels is no bridge.

Limits, measured on phantom lesions with a Grad-CAM-coarse heatmap (4.8 mm cells): cysts of
10-16 mm come out at 80-90 % of their volume, inside them. A mass with a posterior acoustic
shadow is not delimited from its shadow (as dark, and joined to it): the region takes the
shadow's part inside the envelope, 1.2-2× the mass's volume. An iso-echoic lesion, or one
much smaller than the heatmap's blob, fails the darkness test and keeps the hot core. The
segment is a start for the Segment Editor, not a final outline. On a full ABUS volume
(865 × 682 × 354 voxels) one candidate takes about 5 s on one CPU core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats, Ints, int3
from ..errors import BlcamError
from ..io.volume import Geometry
from .measure import RegionMeasurements, measure_region

DEFAULT_FRACTION = 0.5
DEFAULT_ENVELOPE = 0.1
DEFAULT_RADIUS_MM = 30.0
DEFAULT_SMOOTHING_MM = 0.5
SEED_RADIUS_MM = 5.0


@dataclass(frozen=True)
class RegionRule:
    """How the region around a candidate is cut out (see the module docstring)."""

    fraction: float = DEFAULT_FRACTION          # hot core: heat >= fraction × the candidate's peak
    threshold: float | None = None              # ... or heat >= threshold (absolute), when given
    envelope: float = DEFAULT_ENVELOPE          # refined region: within heat >= envelope × peak
    radius_mm: float = DEFAULT_RADIUS_MM        # cap: nothing outside this ball around the candidate
    refine: bool = True                         # delimit with the image's dark region (when given one)
    smoothing_mm: float = DEFAULT_SMOOTHING_MM  # Gaussian sigma against speckle, before the dark threshold

    def check(self) -> None:
        """Refuse values that cannot describe a region, naming the value."""
        if not 0.0 < self.fraction <= 1.0:
            raise BlcamError(f"fraction {self.fraction}: must be in (0, 1] (a fraction of the candidate's peak)")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise BlcamError(f"threshold {self.threshold}: must be in (0, 1] (heatmaps are in [0, 1])")
        if not 0.0 < self.envelope <= 1.0:
            raise BlcamError(f"envelope {self.envelope}: must be in (0, 1] (a fraction of the candidate's peak)")
        if not self.radius_mm > 0.0:
            raise BlcamError(f"radius {self.radius_mm} mm: must be positive")
        if not self.smoothing_mm >= 0.0:
            raise BlcamError(f"smoothing {self.smoothing_mm} mm: must be zero or positive")


@dataclass
class LesionRegion:
    """The mask cropped to its bounding box, which starts at voxel ``offset_kji`` of the volume."""

    mask: np.ndarray                    # bool (k, j, i)
    offset_kji: tuple[int, int, int]
    seed_kji: tuple[int, int, int]      # the peak voxel the region grew from
    peak: float                         # the heatmap's value there
    level: float                        # the hot core's heat threshold
    refined: bool                       # delimited by the image's dark region
    dark_level: float | None            # the smoothed grey value the image was thresholded at
    capped: bool                        # reached the cap ball's surface
    measurements: RegionMeasurements

    def full(self, shape: Ints) -> np.ndarray:
        """The region as a bool mask of the whole volume (``shape`` is ``(k, j, i)``)."""
        out = np.zeros(shape, bool)
        out[tuple(slice(o, o + n) for o, n in zip(self.offset_kji, self.mask.shape))] = self.mask
        return out


def segment_candidate(heatmap: np.ndarray, geometry: Geometry, index_kji: Floats, image: np.ndarray | None = None,
                      rule: RegionRule = RegionRule()) -> LesionRegion:
    """The region of the lesion at ``index_kji`` (continuous voxel index ``(k, j, i)``) of
    ``heatmap``; both on the grid ``geometry`` describes, like ``image`` when one is given."""
    rule.check()
    heatmap = np.asarray(heatmap)
    if heatmap.shape != geometry.shape:
        raise BlcamError(f"heatmap of shape {heatmap.shape} is not on the volume's grid {geometry.shape} (k, j, i)")
    if image is not None and np.shape(image) != heatmap.shape:
        raise BlcamError(f"image of shape {np.shape(image)} is not on the heatmap's grid {heatmap.shape} (k, j, i)")
    centre = np.asarray(index_kji, float).ravel()
    voxel = np.floor(centre + 0.5)
    if centre.shape != (3,) or not np.all(np.isfinite(centre)) or np.any(voxel < 0) or np.any(voxel >= heatmap.shape):
        shown = ", ".join(f"{v:.6g}" for v in centre)
        raise BlcamError(f"candidate at voxel (k, j, i) ({shown}) is outside the volume {heatmap.shape}")
    spacing = np.asarray(geometry.spacing[::-1], float)            # (k, j, i)
    box = _box(voxel.astype(int), rule.radius_mm, spacing, heatmap.shape)
    distance = _distance_mm(box, centre, spacing)
    ball = distance <= rule.radius_mm
    heat = np.where(ball, np.nan_to_num(heatmap[box].astype(np.float32), nan=0.0), np.float32(0.0))
    near = distance <= max(SEED_RADIUS_MM, float(spacing.max()))
    seed = np.unravel_index(np.argmax(np.where(near, heat, -np.inf)), heat.shape)
    peak = float(heat[seed])
    level = float(rule.threshold if rule.threshold is not None else rule.fraction * peak)
    if peak <= 0.0 or peak < level:
        raise BlcamError(f"the heatmap near the candidate peaks at {peak:.3f}, below the threshold {level:.3f}: "
                         "no hot region to segment")
    core = _holding(heat >= level, seed)
    region, dark_level = core, None
    if image is not None and rule.refine:
        envelope = _holding(heat >= min(level, rule.envelope * peak), seed)
        refined = _dark_region(np.asarray(image)[box], core, envelope, heat, ball, spacing, rule.smoothing_mm)
        if refined is not None:
            region, dark_level = refined
    surface = ball & (distance > rule.radius_mm - float(spacing.max()))
    index = np.argwhere(region)
    lo, hi = index.min(axis=0), index.max(axis=0) + 1
    cropped = region[tuple(slice(a, b) for a, b in zip(lo, hi))].copy()
    offset = int3(s.start + a for s, a in zip(box, lo))
    return LesionRegion(cropped, offset, int3(s.start + v for s, v in zip(box, seed)), peak, level,
                        dark_level is not None, dark_level, bool((region & surface).any()),
                        measure_region(cropped, geometry, offset))


def _box(voxel: np.ndarray, radius_mm: float, spacing: np.ndarray, shape: Ints) -> tuple[slice, slice, slice]:
    """Index box of the cap ball (voxel axes are orthogonal, so the ball is an axis-aligned
    ellipsoid in index space whatever the direction)."""
    half = np.ceil(radius_mm / spacing).astype(int)
    lo, hi = np.maximum(voxel - half, 0), np.minimum(voxel + half + 1, shape)
    k, j, i = (slice(int(a), int(b)) for a, b in zip(lo, hi))
    return k, j, i


def _distance_mm(box: tuple[slice, slice, slice], centre: Floats, spacing: Floats) -> np.ndarray:
    """Distance in mm from the candidate to every voxel centre of the box."""
    squares = [((np.arange(s.start, s.stop) - c) * d).astype(np.float32) ** 2 for s, c, d in zip(box, centre, spacing)]
    return np.sqrt(squares[0][:, None, None] + squares[1][None, :, None] + squares[2][None, None, :])


def _holding(inside: np.ndarray, seed: tuple[int | np.integer, ...]) -> np.ndarray:
    """The connected part of ``inside`` that holds the voxel ``seed``."""
    labels, _ = ndi.label(inside)
    return labels == labels[seed]


def _dark_region(image: np.ndarray, core: np.ndarray, envelope: np.ndarray, heat: np.ndarray, ball: np.ndarray,
                 spacing: np.ndarray, smoothing_mm: float):
    """Step 4 of the rule: the dark region under the hot core and its grey threshold, or None
    when the core is not clearly darker than its surroundings."""
    smoothed = image.astype(np.float32)
    if smoothing_mm > 0:
        smoothed = ndi.gaussian_filter(smoothed, smoothing_mm / spacing, mode="nearest")
    around = smoothed[ball]
    lesion_level = float(np.percentile(smoothed[core], 25))
    surround_level = float(np.median(around))
    if not lesion_level < float(np.percentile(around, 25)):
        return None
    level = 0.5 * (lesion_level + surround_level)
    labels, count = ndi.label((smoothed < level) & envelope)
    heat_held = np.bincount(labels[core], weights=heat[core], minlength=count + 1)
    heat_held[0] = 0.0
    if count == 0 or heat_held.max() <= 0.0:
        return None
    region = ndi.binary_fill_holes(labels == int(np.argmax(heat_held)))
    rim = ndi.binary_dilation(region) & ~region & ball & (smoothed < surround_level)
    return region | rim, level
