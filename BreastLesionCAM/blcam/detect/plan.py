"""What Detect will do with a volume, said before it starts: the model's grid and the time.

A radiologist who clicks Detect should know whether to wait or get a coffee. The work of
the fast path is proportional to the voxels it reads: the volume resampled to the model's
spacing (:mod:`blcam.io.resample`), read ``crop depth / slab step`` times in slab context.
Seconds per million voxel reads depend on the computer and the network, so the estimate
uses the rate measured by the last Detect on this computer when there is one (the Slicer
module keeps it), else a reference measured on a 2-core laptop-class CPU
(:data:`REFERENCE_S_PER_MVOX`, ``bench/RESULTS.md``), scaled by the network's width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..cam.dense import default_slab_step, slab_starts
from ..io.resample import grid_at_spacing
from ..io.volume import Geometry
from ..model import ensemble_size, model_spacing

# Seconds per million voxel reads of the CPU fast path, per architecture at width 1.0 on the
# 2-core reference CPU (bench/detect.py --preset abus, bench/RESULTS.md: ResNet-18 mapped
# 14.5 M voxel reads in 9.3 s, a half-width ResNet-10 in 3.2 s). Narrower networks are
# cheaper about in proportion to the width (the stem, most of the work, scales with it).
REFERENCE_S_PER_MVOX = {"resnet10": 0.45, "resnet18": 0.65}
# Reading, resampling both ways and writing the heatmap, per million voxels of the input
# (the same run: 8.4 s for an ABUS volume of 209 M voxels).
REFERENCE_IO_S_PER_MVOX = 0.04


@dataclass(frozen=True)
class DetectPlan:
    input_geometry: Geometry
    model_geometry: Geometry
    model_spacing: tuple[float, float, float] | None
    reads_per_voxel: float
    reference_s_per_mvox: float
    calibrated: bool = False     # the model carries score maps (blcam calibrate)
    members: int = 1             # networks in the model file (blcam ensemble): each reads every voxel

    @property
    def mvox_read(self) -> float:
        return math.prod(self.model_geometry.shape) * self.reads_per_voxel / 1e6

    @property
    def io_seconds(self) -> float:
        """Reference time for reading, resampling and writing the input's voxels."""
        return math.prod(self.input_geometry.shape) / 1e6 * REFERENCE_IO_S_PER_MVOX

    def expected_seconds(self, s_per_mvox: float | None = None) -> float:
        """Detect's time at ``s_per_mvox`` (a measured map rate) or the reference rate."""
        return self.io_seconds + self.mvox_read * (self.reference_s_per_mvox if s_per_mvox is None else s_per_mvox)

    def describe(self, s_per_mvox: float | None = None) -> str:
        """One line for the panel: the model's spacing, the grid it maps, the expected time."""
        fmt = lambda values: " × ".join(f"{v:.3g}" for v in values)   # noqa: E731
        shape = "×".join(map(str, self.model_geometry.shape))
        if self.model_spacing is None:
            where = f"model works in each volume's own voxels ({fmt(self.input_geometry.spacing)} mm here)"
        elif self.model_geometry is self.input_geometry:
            where = f"model spacing {fmt(self.model_spacing)} mm, as this volume's"
        else:
            where = (f"model spacing {fmt(self.model_spacing)} mm: this volume ({fmt(self.input_geometry.spacing)} "
                     f"mm) is resampled to {shape} voxels")
        basis = "at this computer's last measured speed" if s_per_mvox else "on a 2-core laptop CPU"
        scores = ("scores are calibrated probabilities" if self.calibrated else
                  "scores are the network's raw sigmoid, not calibrated (blcam calibrate)")
        networks = f"; an ensemble of {self.members} networks" if self.members > 1 else ""
        return f"{where}{networks}; {scores}; Detect ≈ {self.expected_seconds(s_per_mvox):.0f} s {basis}"

    def measured_rate(self, map_seconds: float) -> float:
        """Seconds per million voxel reads that a finished Detect achieved (its
        ``map_seconds`` include reading and resampling, which the estimate adds itself)."""
        return max(map_seconds - self.io_seconds, 0.0) / max(self.mvox_read, 1e-9)


def plan_detect(meta: dict, geometry: Geometry) -> DetectPlan:
    """The plan for a model (its metadata record) and a volume (its geometry, header only)."""
    spacing = model_spacing(meta)
    model_geometry = geometry if spacing is None else grid_at_spacing(geometry, spacing)
    crop = meta["crop"]
    depth = model_geometry.shape[0]
    slabs = len(slab_starts(depth, crop[0], default_slab_step(crop, meta.get("patch"))))
    members = ensemble_size(meta)
    reads = slabs * min(crop[0], depth) / depth * members
    reference = REFERENCE_S_PER_MVOX.get(meta.get("arch", "resnet18"), REFERENCE_S_PER_MVOX["resnet18"])
    return DetectPlan(geometry, model_geometry, spacing, reads, reference * float(meta.get("widen", 1.0)),
                      meta.get("calibration") is not None, members)
