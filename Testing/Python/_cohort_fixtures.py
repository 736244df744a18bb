"""Tiny hand-made cohorts for the ingest and export tests (no phantom needed: fast, exact).

Each volume is noise with a bright cube at every lesion centre, so a test can check both the
bookkeeping (manifest, splits) and the pixels (the patch really is centred on the lesion).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from blcam.io.points import write_markups
from blcam.io.volume import Geometry, write_volume

# Directions (row-major 3×3) exercising flips, a rotation and a left-handed frame.
DIRECTIONS = {
    "identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "flip_x": (-1, 0, 0, 0, 1, 0, 0, 0, 1),
    "rot90_z": (0, -1, 0, 1, 0, 0, 0, 0, 1),
    "permuted_left": (0, 0, 1, 1, 0, 0, 0, 1, 0),
    "oblique": tuple(np.round(np.array([[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, 1]]).ravel(), 6)),
}


def make_geometry(shape_kji, spacing_ijk=(0.5, 0.4, 1.2), origin=(-31.0, 12.5, 7.25), direction="identity"):
    return Geometry(tuple(int(s) for s in shape_kji[::-1]), tuple(float(s) for s in spacing_ijk),
                    tuple(float(o) for o in origin), tuple(float(d) for d in DIRECTIONS[direction]))


def write_case(folder: Path, name: str, shape_kji, lesions_kji=(), direction="identity", seed=0,
               coordinate_system="LPS", jitter=0.3, dtype=np.int16):
    """Write a volume (and its markups if it has lesions); returns (volume_rel, annotation_rel, points_lps)."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 10, size=shape_kji).astype(dtype)
    geom = make_geometry(shape_kji, direction=direction)
    points = []
    for c in lesions_kji:
        c = np.asarray(c)
        arr[tuple(slice(v - 1, v + 2) for v in c)] = 400
        arr[tuple(c)] = 1000
        idx_ijk = c[::-1] + rng.uniform(-jitter, jitter, 3)
        points.append(geom.index_to_lps(idx_ijk))
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    write_volume(folder / "volumes" / f"{name}.nrrd", arr, geom)
    ann = ""
    if points:
        ann = f"annotations/{name}.mrk.json"
        write_markups(folder / ann, np.array(points), coordinate_system=coordinate_system)
    return f"volumes/{name}.nrrd", ann, np.array(points).reshape(-1, 3)


def write_cohort_csv(path: Path, rows) -> Path:
    """rows: (patient, volume, label, annotation) tuples."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "volume", "label", "annotation"])
        w.writerows(rows)
    return path


def small_cohort(folder: Path, n_healthy=4, n_lesion=4, shape=(12, 40, 40), seed=0) -> Path:
    """A valid cohort: healthy patients with 1–2 healthy volumes, lesion patients with a lesion
    volume (1–2 lesions) and sometimes a healthy other breast."""
    rng = np.random.default_rng(seed)
    rows = []
    dirs = list(DIRECTIONS)
    for p in range(n_healthy + n_lesion):
        pid = f"P{p:03d}"
        lesion = p >= n_healthy
        for b in range(1 + (p % 2)):
            name = f"{pid}_{'LR'[b]}"
            direction = dirs[(p + b) % len(dirs)]
            if lesion and b == 0:
                n = 1 + (p % 2)
                centres = [tuple(int(rng.integers(2, s - 2)) for s in shape) for _ in range(n)]
                vol, ann, _ = write_case(folder, name, shape, centres, direction, seed=p * 10 + b,
                                         coordinate_system="RAS" if p % 2 else "LPS")
                rows.append((pid, vol, "lesion", ann))
            else:
                vol, _, _ = write_case(folder, name, shape, (), direction, seed=p * 10 + b)
                rows.append((pid, vol, "healthy", ""))
    return write_cohort_csv(folder / "cohort.csv", rows)
