"""``blcam export``: cohort CSV → patch dataset on disk (the paper's 28×280×280 patches).

One patch per annotated lesion centre, centred on it, and K random negatives per volume of a
*healthy patient* (a lesion patient's other breast is not guaranteed lesion-free), plus one
at each place a reader rejected (the cohort's optional ``negatives`` column: the review
loop's hard negatives, from any volume, since a reader has looked at exactly that place). Patches
keep the volume's grey values and are stored as ``.npy`` files, which training memory-maps,
so a random crop reads only the pages it touches; each record carries the volume's grey range,
and :class:`~blcam.patches.dataset.PatchDataset` applies the fixed normalisation
(:mod:`blcam.intensity`) when it reads. ``manifest.csv`` lists them.

Resumable and crash-safe: every patch is written to a temporary name and renamed, the
manifest is written last, and a rerun skips patches whose final file exists (a volume whose
patches all exist is not even read). Negatives come from a generator seeded by the seed
and the volume's path, so a resumed run writes byte-identical files.
"""

from __future__ import annotations

import json
import sys
import zlib
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, overload

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..axes import Float3, Floats, Int3, Ints, PathLike
from ..cohort import Cohort, CohortRow, read_cohort, require_both_classes
from ..errors import BlcamError
from ..intensity import NORMALISATION, count_non_finite, non_finite_warning, robust_range
from ..io.atomic import (
    atomic_path,
    check_output_folder,
    csv_text,
    make_folder,
    remove_stale_temporaries,
    safe_name,
    write_json_atomic,
    write_text_atomic,
)
from ..io.locks import LOCK_NAME, folder_lock
from ..io.padding import data_box
from ..io.resample import check_spacing, grid_at_spacing, median_spacing, resample
from ..io.volume import Geometry, read_volume
from ..workers import process_pool
from .extract import box_start, centre_range, extract_box, padded_fraction, random_centres
from .splits import assign_splits, choose_folds

MANIFEST_COLUMNS = ["patch_id", "file", "label", "kind", "patient", "patient_class", "volume", "row",
                    "centre_k", "centre_j", "centre_i", "start_k", "start_j", "start_i",
                    "volume_k", "volume_j", "volume_i", "x", "y", "z", "split", "fold", "padded_fraction",
                    "grey_low", "grey_high", "non_finite_voxels"]


PRE_SPACING = {"spacing": None}


@dataclass(frozen=True)
class ExportSettings:
    patch: Int3 = (28, 280, 280)
    negatives_per_volume: int = 4
    test_fraction: float = 0.3
    folds: int | None = None      # None: 5, or fewer if a class has fewer training patients
    seed: int = 0
    # mm (i j k) to resample to; "auto": the cohort's median (resolved and recorded at export,
    # see resolve_spacing); None: native, each volume's own voxels (the paper)
    spacing: Float3 | str | None = "auto"

    def resolved_spacing(self) -> Float3 | None:
        """The spacing once :func:`resolve_spacing` has replaced ``"auto"`` (``None``: native)."""
        if isinstance(self.spacing, str):
            raise ValueError("resolve the 'auto' spacing against the cohort first (resolve_spacing)")
        return self.spacing

    def grid(self, geometry: Geometry) -> Geometry:
        """Where a volume's patches are cut: its own grid, or the training spacing's
        (:func:`blcam.io.resample.grid_at_spacing`: same field of view, points unmoved)."""
        spacing = self.resolved_spacing()
        return geometry if spacing is None else grid_at_spacing(geometry, spacing)


@overload
def resolve_spacing(spacing: None, cohort: Cohort) -> None: ...
@overload
def resolve_spacing(spacing: Floats | str, cohort: Cohort) -> Float3: ...


def resolve_spacing(spacing: Floats | str | None, cohort: Cohort) -> Float3 | None:
    """``"auto"`` → the cohort's median voxel size (:func:`blcam.io.resample.median_spacing`);
    a triple is checked; ``None`` (native) stays ``None``."""
    if spacing is None:
        return None
    if isinstance(spacing, str):
        if spacing != "auto":
            raise BlcamError(f"--spacing must be 'auto', 'native' or three sizes in mm (i j k), got {spacing!r}")
        return median_spacing(_geometry(r) for r in cohort.rows)
    return check_spacing(spacing)


def _geometry(r: CohortRow) -> Geometry:
    """The row's volume header, which :func:`~blcam.cohort.read_cohort` reads (unless told not to)."""
    if r.geometry is None:
        raise ValueError(f"row {r.row}: the volume's header was not read (read_cohort with check_volumes=True)")
    return r.geometry


@dataclass
class PatchJob:
    """What one worker needs to cut all patches of one volume (picklable)."""

    row: CohortRow
    ids: list[str]
    centres_kji: np.ndarray       # integer box centres
    points_lps: np.ndarray        # annotated point (positives) or box centre (negatives)
    # 'lesion', 'negative' (random), 'reviewed' (rejected by a reader) or 'hard_negative':
    # one kind for every patch, or one per patch (a lesion volume with reviewed negatives)
    kind: str | tuple[str, ...]
    split: str
    fold: int
    patient_class: str
    grid: Geometry                # where the indices live: the volume's grid at the export's spacing

    def kind_of(self, n: int) -> str:
        return self.kind if isinstance(self.kind, str) else self.kind[n]

    def joined(self, other: PatchJob) -> PatchJob:
        """One job for both jobs' patches of the same volume, so the volume is read once."""
        kinds = tuple(job.kind_of(n) for job in (self, other) for n in range(len(job.ids)))
        return replace(self, ids=self.ids + other.ids, kind=kinds,
                       centres_kji=np.concatenate([self.centres_kji, other.centres_kji]),
                       points_lps=np.concatenate([self.points_lps, other.points_lps]))


def export_dataset(cohort_csv: PathLike, out: PathLike, settings: ExportSettings | None = None, jobs: int = 1,
                   progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Export the patch dataset; returns the manifest path. ``on_progress(done, total)`` is
    called after each volume that gives patches (each is read once, whatever kinds it gives).

    Holds ``out``'s folder lock throughout: a second export, or a training reading ``out``,
    is refused while this one writes it (:mod:`blcam.io.locks`). ``settings``: the defaults
    when ``None``.
    """
    settings = ExportSettings() if settings is None else settings
    check_output_folder(out)                          # before the lock, which would create the folder
    with folder_lock(out, purpose="exporting there"):
        return _export_locked(cohort_csv, out, settings, jobs, progress, on_progress)


def _export_locked(cohort_csv: PathLike, out_folder: PathLike, settings: ExportSettings, jobs: int, progress: bool,
                   on_progress: Callable[[int, int], None] | None) -> Path:
    out = Path(out_folder)
    cohort = read_cohort(cohort_csv)
    require_both_classes(cohort)
    settings = replace(settings, spacing=resolve_spacing(settings.spacing, cohort))
    _check_settings(settings)
    settings = replace(settings, folds=choose_folds(cohort.patient_classes(), settings.test_fraction,
                                                    settings.folds))
    info = _dataset_info(cohort, settings)
    jobs_list = _plan(cohort, settings)
    _claim_folder(out, info)
    remove_stale_temporaries(out)
    records: list[dict] = []
    bar = tqdm(total=len(jobs_list), desc="export", unit="vol", disable=not progress)

    def step(done: int) -> None:
        bar.update()
        if on_progress is not None:
            on_progress(done, len(jobs_list))

    if jobs <= 1:
        for done, job in enumerate(jobs_list, 1):
            records += cut_patches(job, out, settings)
            step(done)
    else:
        with process_pool(jobs) as pool:
            futures = [pool.submit(cut_patches, job, out, settings) for job in jobs_list]
            for done, fut in enumerate(as_completed(futures), 1):
                records += fut.result()
                step(done)
    bar.close()
    records.sort(key=lambda r: (r["row"], r["kind"], r["patch_id"]))
    manifest = out / "manifest.csv"
    write_text_atomic(manifest, manifest_csv(records))
    return manifest


def _check_settings(s: ExportSettings) -> None:
    if len(s.patch) != 3 or min(s.patch) < 1:
        raise BlcamError(f"--patch must be three positive sizes (k j i), got {s.patch}")
    if s.negatives_per_volume < 0:
        raise BlcamError(f"--negatives-per-volume must be ≥ 0, got {s.negatives_per_volume}")
    if not 0 <= s.test_fraction < 1:
        raise BlcamError(f"--test-fraction must be in [0, 1), got {s.test_fraction}")
    spacing = s.resolved_spacing()
    if spacing is not None:
        check_spacing(spacing)


def _dataset_info(cohort: Cohort, s: ExportSettings) -> dict:
    return {"format": "blcam-patches-v1", "blcam_version": __version__, "cohort": str(cohort.path.resolve()),
            "settings": json.loads(json.dumps(asdict(s))),  # tuples → lists, as read back
            "axes": "k,j,i", "centre_in_patch": [n // 2 for n in s.patch], "spacing_axes": "i,j,k",
            "normalisation": NORMALISATION}


def _claim_folder(out: Path, info: dict) -> None:
    """Refuse to mix two exports in one folder; a rerun with the same settings resumes."""
    meta = out / "dataset.json"
    if meta.exists():
        try:
            old = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError:
            raise BlcamError(f"{meta}: unreadable; remove the folder or choose another --out") from None
        settings = {**PRE_SPACING, **(old.get("settings") or {})}   # exports from before spacings
        if settings != info["settings"] or old.get("cohort") != info["cohort"]:
            hint = ""
            if {**settings, "spacing": None} == {**info["settings"], "spacing": None}:
                was = settings["spacing"]
                hint = (" It differs only in the spacing: it was exported at "
                        + ("its volumes' native voxels (--spacing native)" if was is None
                           else f"--spacing {' '.join(f'{v:g}' for v in was)}") + "; pass that to resume it.")
            raise BlcamError(f"{out}: holds an export with other settings or cohort "
                             f"({old.get('settings')}); choose another --out or delete it.{hint}")
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise BlcamError(f"{out}: folder exists and is not a patch dataset; choose another --out")
    make_folder(out / "patches")
    write_json_atomic(meta, info)


def _plan(cohort: Cohort, s: ExportSettings) -> list[PatchJob]:
    if s.folds is None:
        raise ValueError("choose the number of folds first (choose_folds)")
    classes = cohort.patient_classes()
    splits = assign_splits(classes, s.test_fraction, s.folds, s.seed)
    stems: dict[str, int] = {}
    plans = []
    for r in cohort.rows:
        stem = safe_name(f"{r.patient}_{Path(r.volume_rel).name.split('.')[0]}", "x")
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}_r{r.row}"
        split, fold = splits[r.patient]
        grid = s.grid(_geometry(r))
        if r.label == "lesion":
            centres = box_start(grid.lps_to_index(r.centres_lps)[:, ::-1], s.patch) + np.asarray(s.patch) // 2
            plans.append(PatchJob(r, [f"{stem}_les{n:02d}" for n in range(len(centres))], centres,
                                  r.centres_lps, "lesion", split, fold, classes[r.patient], grid))
        elif classes[r.patient] == "healthy" and s.negatives_per_volume > 0:
            _check_room_for_negatives(cohort, r, grid, s.patch)
            rng = np.random.default_rng([s.seed, zlib.crc32(r.volume_rel.encode())])
            centres = random_centres(grid.shape, s.patch, s.negatives_per_volume, rng)
            points = grid.index_to_lps(centres[:, ::-1])
            plans.append(PatchJob(r, [f"{stem}_neg{n:02d}" for n in range(len(centres))], centres,
                                  points, "negative", split, fold, classes[r.patient], grid))
        if len(r.negatives_lps):
            for job in _reviewed_job(r, stem, grid, s.patch, split, fold, classes[r.patient]):
                if plans and plans[-1].row is r:     # the volume's lesion or random-negative job
                    plans[-1] = plans[-1].joined(job)
                else:
                    plans.append(job)
    return plans


def _reviewed_job(r: CohortRow, stem: str, grid: Geometry, patch: Ints, split: str, fold: int,
                  patient_class: str) -> list[PatchJob]:
    """Negatives at the places a radiologist rejected (the cohort's ``negatives`` column).

    Each box is moved inside the volume, as random negatives are (padding only ever occurs
    beside lesions, or it would become a label cue). A box that would hold one of the
    volume's own lesion centres is left out with a warning: its random training crops could
    show the lesion under label 0. IDs keep the point's number in the file, so a resumed
    export finds the same patch under the same name.
    """
    lo, hi = centre_range(grid.shape, patch)
    points = grid.lps_to_index(r.negatives_lps)[:, ::-1]
    centres = np.clip(np.floor(points + 0.5).astype(int), lo, hi)
    lesions = np.floor(grid.lps_to_index(r.centres_lps)[:, ::-1] + 0.5).astype(int) if len(r.centres_lps) else None
    keep = []
    for n, c in enumerate(centres):
        start = c - np.asarray(patch) // 2
        if lesions is not None and np.any(np.all((lesions >= start) & (lesions < start + np.asarray(patch)), axis=1)):
            print(f"blcam export: row {r.row}: reviewed negative {n + 1} of '{r.volume_rel}' is left out: its "
                  "patch would hold a lesion centre of the same volume", file=sys.stderr)
            continue
        keep.append(n)
    if not keep:
        return []
    return [PatchJob(r, [f"{stem}_rev{n + 1:02d}" for n in keep], centres[keep], r.negatives_lps[keep], "reviewed",
                     split, fold, patient_class, grid)]


def _check_room_for_negatives(cohort: Cohort, r: CohortRow, grid: Geometry, patch: Ints) -> None:
    """Negatives must lie inside their volume (padding only ever occurs beside lesions, or
    it would become a label cue); a healthy volume smaller than the patch cannot give one."""
    shape = tuple(int(v) for v in grid.shape)
    if any(n < p for n, p in zip(shape, patch)):
        at = "" if grid == r.geometry else f" at the export's spacing {' x '.join(f'{v:g}' for v in grid.spacing)} mm"
        raise BlcamError(f"{cohort.path} row {r.row}: healthy volume '{r.volume_rel}' is {' '.join(map(str, shape))} "
                         f"voxels (k j i){at}, smaller than the patch {' '.join(map(str, patch))}, so its negatives "
                         "would be mostly padding; export a smaller --patch or leave the volume out")


def cut_patches(job: PatchJob, out: Path, s: ExportSettings) -> list[dict]:
    """Write the patches of one volume (skipping finished ones) and return their records.

    Patches keep the volume's own grey values (floats as float32): normalising is a lookup
    done on the much smaller training crops, and skipping it here keeps export close to the
    cost of reading the volume. The volume's grey range goes to a small sidecar written
    before the patches, so a resumed run can write the manifest without re-reading it.
    """
    files = [out / "patches" / f"{pid}.npy" for pid in job.ids]
    sidecar = out / "patches" / f"{job.ids[0].rsplit('_', 1)[0]}.range.json"
    starts = [c - np.asarray(s.patch) // 2 for c in job.centres_kji]
    todo = [n for n, f in enumerate(files) if not f.exists()]
    if todo or not sidecar.exists():
        volume, native = read_volume(job.row.volume)
        if np.issubdtype(volume.dtype, np.floating) or volume.dtype.itemsize > 2:
            volume = volume.astype(np.float32, copy=False)
        volume = resample(volume, native, job.grid)
        bad = count_non_finite(volume)
        # The grey range of the scanned box, as Detect reads it: padding planes are not tissue.
        lo, hi = robust_range(volume[data_box(volume)], f"{job.row.volume} (cohort row {job.row.row})")
        write_json_atomic(sidecar, {"grey_low": lo, "grey_high": hi, "non_finite": bad})
        for n in todo:
            # Padding with the grey value ``lo`` maps to 0 == PAD_VALUE after normalisation.
            raw, _ = extract_box(volume, starts[n], s.patch, pad_value=lo)
            with atomic_path(files[n]) as tmp:
                np.save(tmp, raw)
    else:
        grey = json.loads(sidecar.read_text(encoding="utf-8"))
        lo, hi, bad = grey["grey_low"], grey["grey_high"], grey.get("non_finite", 0)
    if bad:
        print(f"blcam export: {non_finite_warning(job.row.volume_rel, bad, int(np.prod(job.grid.shape)))}",
              file=sys.stderr)
    return [{**_record(job, n, files[n].relative_to(out), starts[n], s, lo, hi), "non_finite_voxels": bad}
            for n in range(len(files))]


def _record(job: PatchJob, n: int, rel: Path, start: np.ndarray, s: ExportSettings, lo: float, hi: float) -> dict:
    shape = job.grid.shape
    padded = padded_fraction(start, s.patch, shape)
    c, p = job.centres_kji[n], job.points_lps[n]
    kind = job.kind_of(n)
    return {"patch_id": job.ids[n], "file": rel.as_posix(), "label": int(kind == "lesion"), "kind": kind,
            "patient": job.row.patient, "patient_class": job.patient_class, "volume": job.row.volume_rel,
            "row": job.row.row, "centre_k": int(c[0]), "centre_j": int(c[1]), "centre_i": int(c[2]),
            "start_k": int(start[0]), "start_j": int(start[1]), "start_i": int(start[2]),
            "volume_k": int(shape[0]), "volume_j": int(shape[1]), "volume_i": int(shape[2]),
            "x": f"{p[0]:.4f}", "y": f"{p[1]:.4f}", "z": f"{p[2]:.4f}", "split": job.split, "fold": job.fold,
            "padded_fraction": f"{padded:.6f}", "grey_low": repr(float(lo)), "grey_high": repr(float(hi))}


def manifest_csv(records: list[dict]) -> str:
    return csv_text(records, MANIFEST_COLUMNS)
