"""A whole synthetic cohort on disk, in exactly the layout a user would prepare.

``OUT/cohort.csv`` (``patient,volume,label,annotation,birads``, paths relative to OUT) is
the one input of ``blcam export``; beside it the volumes, lesion-centre markups (half in
LPS, half in RAS, as Slicer may write either), label masks, and the ground truth a user of
real data never has (``lesions.csv``, ``mimics.csv``) so that localisation can be scored.

Patient ``p`` is made from ``np.random.default_rng([seed, p])`` alone, so patients can be
made in any order and in parallel with byte-identical results, and a cohort of N patients
is a prefix of the cohort of N+1.

Every LPS point written (lesion centroids, mimic centres, clicked centres) goes through the
volume's own :class:`~blcam.io.volume.Geometry`, whatever its direction: a fixed
``direction`` (e.g. the oblique, flipped ABUS one) changes the files' geometry and these
points together, and nothing else (the tissue drawn for a seed stays the same).
"""

from __future__ import annotations

import math
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..axes import Floats, Ints, PathLike
from ..errors import BlcamError
from ..io.atomic import remove_stale_temporaries, write_csv_atomic, write_json_atomic
from ..io.points import write_markups
from ..io.volume import write_volume
from ..workers import process_pool
from .geometry import check_direction, random_geometry
from .lesions import annotate
from .volume import DEFAULT_SHAPE, DEFAULT_SPACING, simulate_volume

COHORT_COLUMNS = ["patient", "volume", "label", "annotation", "birads"]
LESION_COLUMNS = ["volume", "lesion", "kind", "x", "y", "z", "i", "j", "k", "diameter_mm",
                  "voxels", "birads"]
MIMIC_COLUMNS = ["volume", "kind", "x", "y", "z", "diameter_mm"]
MIN_SHAPE = (4, 24, 24)


def is_lesion_patient(seed: int, patient: int, fraction: float) -> bool:
    """Whether ``patient`` has lesions: exactly ⌊N·f⌋ or ⌈N·f⌉ of any N first patients do.

    Drawing the class independently per patient would often give a small cohort no lesion
    patient at all; a Beatty sequence with a seed-dependent phase keeps the share exact and
    still depends on ``(seed, patient)`` only.
    """
    phase = float(np.random.default_rng([seed]).random())
    return math.floor((patient + 1) * fraction + phase) > math.floor(patient * fraction + phase)


def validate(patients: int, seed: int, jobs: int, shape: Ints, spacing: Floats, lesion_fraction: float,
             direction: Floats | None = None) -> None:
    """Raise :class:`BlcamError` naming the first bad option."""
    if int(patients) < 1:
        raise BlcamError(f"--patients must be at least 1, got {patients}")
    if int(seed) < 0:
        raise BlcamError(f"--seed must be a non-negative integer, got {seed}")
    if int(jobs) < 1:
        raise BlcamError(f"--jobs must be at least 1, got {jobs}")
    if len(shape) != 3 or any(int(s) < m for s, m in zip(shape, MIN_SHAPE)):
        raise BlcamError(f"--shape {' '.join(map(str, shape))}: need three sizes K J I of at "
                         f"least {' '.join(map(str, MIN_SHAPE))}")
    if len(spacing) != 3 or not all(math.isfinite(float(s)) and 0.01 <= float(s) <= 10.0
                                    for s in spacing):
        raise BlcamError(f"--spacing {' '.join(map(str, spacing))}: need three spacings "
                         "(k j i, mm) between 0.01 and 10")
    if not (math.isfinite(float(lesion_fraction)) and 0.0 <= float(lesion_fraction) <= 1.0):
        raise BlcamError(f"--lesion-fraction must be between 0 and 1, got {lesion_fraction}")
    if direction is not None:
        check_direction(direction)


def make_cohort(out: PathLike, patients: int = 20, seed: int = 0, jobs: int = 1, shape: Ints = DEFAULT_SHAPE,
                spacing: Floats = DEFAULT_SPACING, lesion_fraction: float = 0.5,
                progress: bool = True, direction: Floats | None = None) -> Path:
    """Write a synthetic cohort under ``out``; returns the path of ``cohort.csv``.

    ``shape`` is the array shape (k, j, i), ``spacing`` the voxel size (k, j, i) in mm.
    ``direction``: 9 numbers, row-major (SimpleITK order: columns are the LPS directions
    of i, j, k), orthonormal, given to every volume and mask; ``None`` keeps the default
    per-volume mix of identity, flips and 90° rotations (and the default output byte for
    byte). ``jobs`` patients are made in parallel; the output does not depend on it.
    """
    validate(patients, seed, jobs, shape, spacing, lesion_fraction, direction)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BlcamError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    args: dict[str, Any] = dict(out=str(out), seed=int(seed), shape=tuple(int(s) for s in shape),
                spacing=tuple(float(s) for s in spacing), fraction=float(lesion_fraction),
                direction=None if direction is None else check_direction(direction))
    results = {}
    bar = _progress(int(patients), progress)
    try:
        if int(jobs) == 1 or int(patients) == 1:
            for p in range(int(patients)):
                results[p] = make_patient(p, **args)
                bar.update(1)
        else:
            with process_pool(min(int(jobs), int(patients))) as pool:
                futures = {pool.submit(make_patient, p, **args): p for p in range(int(patients))}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
    finally:
        bar.close()
    rows = [results[p] for p in range(int(patients))]
    write_csv_atomic(out / "cohort.csv", [r for res in rows for r in res["cohort"]], COHORT_COLUMNS)
    write_csv_atomic(out / "lesions.csv", [r for res in rows for r in res["lesions"]], LESION_COLUMNS)
    write_csv_atomic(out / "mimics.csv", [r for res in rows for r in res["mimics"]], MIMIC_COLUMNS)
    meta = {
        "generator": f"blcam {__version__} phantom", "seed": int(seed), "patients": int(patients),
        "shape_kji": list(args["shape"]), "spacing_kji_mm": list(args["spacing"]),
        "lesion_fraction": float(lesion_fraction),
        "lesion_patients": sum(any(r["label"] == "lesion" for r in res["cohort"]) for res in rows),
        "volumes": sum(len(res["cohort"]) for res in rows)}
    if args["direction"] is not None:      # absent by default: the default files stay as they were
        meta["direction"] = list(args["direction"])
    write_json_atomic(out / "phantom.json", meta)
    return out / "cohort.csv"


def make_patient(p: int, out: str, seed: int, shape: Ints, spacing: Floats, fraction: float,
                 direction: Floats | None = None) -> dict:
    """Make and write all volumes of patient ``p``; returns its CSV rows (as dicts)."""
    rng = np.random.default_rng([seed, p])
    lesion_patient = is_lesion_patient(seed, p, fraction)
    sides = ["L", "R"] if rng.random() < 0.8 else [str(rng.choice(["L", "R"]))]
    labels = ["healthy"] * len(sides)
    if lesion_patient:
        first = int(rng.integers(len(sides)))
        labels = ["lesion" if n == first or rng.random() < 0.2 else "healthy"
                  for n in range(len(sides))]
    rows: dict[str, list[dict]] = {"cohort": [], "lesions": [], "mimics": []}
    for side, label in zip(sides, labels):
        _make_volume(rng, f"P{p:04d}", side, label, out, shape, spacing, direction, rows)
    return rows


def _make_volume(rng: np.random.Generator, patient: str, side: str, label: str, out: str, shape: Ints, spacing: Floats,
                 direction: Floats | None, rows: dict) -> None:
    """Make, write and tabulate one volume (appending to ``rows``).

    A function of its own so that the volume's arrays are freed before the patient's next
    one is simulated: at ABUS size they are 0.4 GB the next volume's peak need not carry.
    """
    volume_id = f"{patient}_{side}"
    _, geometry = random_geometry(rng, shape, spacing, direction)
    n_lesions = (1 if rng.random() < 0.7 else 2) if label == "lesion" else 0
    vol = simulate_volume(rng, shape, spacing, lesions=n_lesions)
    write_volume(Path(out, "volumes", f"{volume_id}.nrrd"), vol.image, geometry)
    write_volume(Path(out, "masks", f"{volume_id}.nrrd"), vol.mask, geometry)
    annotation = ""
    if vol.lesions:
        clicks = np.array([annotate(rng, vol.mask, les, spacing)[::-1] for les in vol.lesions])
        system = "RAS" if rng.random() < 0.5 else "LPS"
        annotation = f"annotations/{volume_id}.mrk.json"
        write_markups(Path(out, annotation), geometry.index_to_lps(clicks),
                      [f"lesion-{les.id}" for les in vol.lesions],
                      [f"{les.kind}, {les.diameter_mm:.1f} mm" for les in vol.lesions],
                      coordinate_system=system)
    birads = max([les.birads for les in vol.lesions], default=1)
    rows["cohort"].append(dict(patient=patient, volume=f"volumes/{volume_id}.nrrd",
                               label=label, annotation=annotation, birads=birads))
    for les in vol.lesions:
        x, y, z = geometry.index_to_lps(les.centroid_ijk)
        i, j, k = les.centroid_ijk
        rows["lesions"].append(dict(volume=volume_id, lesion=les.id, kind=les.kind,
                                    x=_r(x), y=_r(y), z=_r(z), i=_r(i), j=_r(j), k=_r(k),
                                    diameter_mm=_r(les.diameter_mm), voxels=les.voxels,
                                    birads=les.birads))
    for mimic in vol.mimics:
        x, y, z = geometry.index_to_lps(mimic.center_kji[::-1])
        rows["mimics"].append(dict(volume=volume_id, kind=mimic.kind, x=_r(x), y=_r(y),
                                   z=_r(z), diameter_mm=_r(mimic.diameter_mm)))


def _r(value: float) -> str:
    return f"{float(value):.4f}"


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr, shown even when stderr is a pipe: the Slicer module reads it."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; keep working without it
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc="phantom", unit="patient")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
