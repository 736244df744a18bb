"""``blcam detect``: volumes (or cohorts) in, heatmaps, candidates and pictures out.

A volume is normalised exactly as for training (:func:`normalise_volume`, then
:func:`network_input` per tile), mapped by the fast path (:class:`DenseLesionMapper`) or the
sliding-window Grad-CAM baseline, and its candidates are found and written
(:mod:`.outputs`, :mod:`.overlays`). Progress goes to a tqdm bar and to an optional
``on_progress`` callback with the overall fraction done; the library never prints records
itself (the CLI's ``--progress-json`` turns the callback into them, :mod:`blcam.cli.progress`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..axes import PathLike, float3, int3
from ..cam.base import LesionMapper, MapOptions
from ..cam.dense import CONTEXTS
from ..cam.maps import LesionMap
from ..cam.registry import MAPPERS, make_mapper
from ..cohort import read_cohort
from ..errors import BlcamError
from ..intensity import NEUTRAL_STORED, count_non_finite, non_finite_warning, normalise_volume
from ..io.atomic import check_output_folder, make_folder, safe_name
from ..io.locks import folder_lock
from ..io.padding import data_box, is_whole, mark_no_data, missing_voxels, suspected_mask
from ..io.resample import coarser_axes, grid_at_spacing, resample
from ..io.volume import Geometry, read_volume
from ..model import load_model, model_spacing, model_stride, resolve_model_path
from ..score_calibration import ScoreCalibration
from .candidates import Candidate, half_max_extent, ranked_candidates, select_candidates
from .outputs import VolumeOutputs, write_candidates, write_heatmap, write_summary
from .overlays import volume_pictures
from .refine import MODES as REFINE_MODES
from .refine import CandidateRefiner, default_mode, trained_inside
from .resume import FinishedVolumes
from .snap import DEFAULT_RADIUS_MM as SNAP_RADIUS_MM
from .snap import snap_to_dark_blob

METHODS = MAPPERS   # the registry itself, so that every registered map is a valid --method
# The heatmap's scale. 'relative': divided by its own maximum, so every volume, healthy or not,
# shows a hot spot at 1 (the paper's display). 'probability': that map times the volume's
# calibrated probability of holding a lesion, so the colours mean the same in every volume and
# a healthy breast the model is sure of stays dark. 'auto': probability for a calibrated model.
HEATMAP_MODES = ("auto", "probability", "relative")
# Each stage's (start, share) of one volume's work; the map's own steps are the map's business.
VOLUME_STAGES = {"map": (0.0, 0.85), "refine": (0.85, 0.05), "pictures": (0.9, 0.1)}
NOT_IMAGED = "the others count as not imaged: mid-grey to the network, no heat and no candidate there (io/padding.py)"
StageCallback = Callable[[str, float], None]       # (stage, fraction of this volume done)
ProgressCallback = Callable[[dict], None]          # {"stage", "fraction", "volume", "volumes", "name"}


@dataclass
class DetectSettings:
    method: str = "fast"
    context: str = "slab"       # fast method: what each feature sees along k (see DenseLesionMapper)
    slab_step: int | None = None  # slices between slabs (None: default_slab_step of the model's crop/patch)
    top_k: int = 10
    min_score: float = 0.0
    nms_mm: float = 10.0
    max_memory_gb: float = 8.0
    overlays: int = 3           # candidates that get their own overlay PNG
    pictures: bool = True       # overlay PNGs and contact sheet (off: a viewer that shows the volume itself)
    batch_size: int = 1         # sliding method: windows per Grad-CAM batch
    refine: int = 3             # best candidates moved to where the network answers best (refine.py); 0: off
    refine_mode: str | None = None  # 'local' / 'crop' (None: local for point-supervised models, else crop)
    snap_mm: float = SNAP_RADIUS_MM  # every candidate onto the darkest blob within this radius (snap.py); 0: off
    heatmap: str = "auto"       # HEATMAP_MODES: 'probability' peaks at the volume's probability; 'relative' at 1
    no_data_value: float | None = None  # voxels of this value that reach a face are not imaged (io/padding.py)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise BlcamError(f"--method '{self.method}': choose one of {', '.join(METHODS)}")
        if self.context not in CONTEXTS:
            raise BlcamError(f"--context '{self.context}': choose one of {', '.join(CONTEXTS)}")
        if not 0.0 <= self.min_score <= 1.0:
            raise BlcamError(f"--min-score must be in [0, 1], got {self.min_score}")
        if not self.nms_mm >= 0:
            raise BlcamError(f"--nms-mm must be ≥ 0, got {self.nms_mm}")
        if self.overlays < 0:
            raise BlcamError(f"--overlays must be ≥ 0, got {self.overlays}")
        if not self.max_memory_gb > 0:
            raise BlcamError(f"--max-memory-gb must be positive, got {self.max_memory_gb}")
        if self.refine < 0:
            raise BlcamError(f"--refine must be ≥ 0, got {self.refine}")
        if self.heatmap not in HEATMAP_MODES:
            raise BlcamError(f"--heatmap '{self.heatmap}': choose one of {', '.join(HEATMAP_MODES)}")
        if not self.snap_mm >= 0:
            raise BlcamError(f"--snap-mm must be ≥ 0, got {self.snap_mm}")
        if self.no_data_value is not None and not np.isfinite(self.no_data_value):
            raise BlcamError(f"--no-data-value must be a finite number (NaN voxels are always left out), "
                             f"got {self.no_data_value}")
        if self.refine_mode not in (None, *REFINE_MODES):
            raise BlcamError(f"--refine-mode '{self.refine_mode}': choose one of {', '.join(REFINE_MODES)}")


@dataclass
class VolumeJob:
    """One volume to process, with what the cohort knows about it (for summaries and pictures)."""

    path: Path
    name: str
    patient: str = ""
    label: str = ""
    truth_lps: np.ndarray | None = None


def _stem(path: Path) -> str:
    return path.name[: -len("".join(path.suffixes))] if path.suffixes and path.is_file() else path.name


def collect_jobs(inputs: Iterable[PathLike]) -> list[VolumeJob]:
    """Volume files/folders and cohort CSVs (every volume in them) → jobs with unique names."""
    jobs: list[VolumeJob] = []
    names: set[str] = set()
    for given in inputs:
        item = Path(given)
        if item.suffix.lower() == ".csv":
            cohort = read_cohort(item)
            found = [VolumeJob(r.volume, safe_name(f"{r.patient}_{_stem(r.volume)}", "volume"), r.patient, r.label,
                               r.centres_lps if len(r.centres_lps) else None) for r in cohort.rows]
        elif item.exists():
            found = [VolumeJob(item.resolve(), safe_name(_stem(item), "volume"))]
        else:
            raise BlcamError(f"{item}: no such volume or cohort CSV")
        for job in found:
            base, n = job.name, 1
            while job.name in names:
                n += 1
                job.name = f"{base}_{n}"
            names.add(job.name)
            jobs.append(job)
    if not jobs:
        raise BlcamError("no volumes to process")
    return jobs


class Detector:
    """A loaded model and its lesion-map method, reused across volumes."""

    def __init__(self, model_path: PathLike, settings: DetectSettings, device: str = "cpu") -> None:
        settings.validate()
        self.settings, self.device = settings, torch.device(device)
        self.model_path = resolve_model_path(model_path)
        self.model, self.meta = load_model(self.model_path, self.device)
        self.crop = int3(self.meta["crop"])
        self.stride = model_stride(self.meta)
        self.spacing = model_spacing(self.meta)
        self.calibration = ScoreCalibration.from_metadata(self.meta, str(self.model_path))
        if settings.heatmap == "probability" and not self.calibration.fitted:
            raise BlcamError(f"--heatmap probability: {self.model_path} is not calibrated, so its volume score is "
                             "not a probability; run 'blcam calibrate' first, or use --heatmap relative")
        self.scaled_heatmap = settings.heatmap == "probability" or (settings.heatmap == "auto"
                                                                     and self.calibration.fitted)
        self.refiner: CandidateRefiner | None = None   # built for the first volume with candidates
        self.warned: set[tuple[str, ...]] = set()      # spacings already warned about (coarser_axes)
        options = MapOptions(max_memory_gb=settings.max_memory_gb, context=settings.context,
                             slab_step=settings.slab_step, patch=self.meta.get("patch"),
                             batch_size=settings.batch_size)
        self.mapper: LesionMapper = make_mapper(settings.method, self.model, self.crop, self.stride,
                                                self.device, options)

    def run(self, job: VolumeJob, out_dir: Path, progress: bool = False,
            on_stage: StageCallback | None = None) -> dict:
        """Process one volume; returns its ``detections.csv`` row. ``on_stage(stage, fraction)``
        follows it (:data:`VOLUME_STAGES`)."""
        s = self.settings

        def report(stage: str, within: float) -> None:
            if on_stage is not None:
                start, share = VOLUME_STAGES[stage]
                on_stage(stage, start + share * within)
        start = time.perf_counter()
        raw, native, scanned, scan = self._read_scanned(job.path)
        # The model's grid (io/resample.py): candidates are found there, in LPS mm, and only
        # the heatmap goes back onto the input's own grid.
        geometry = scanned if self.spacing is None else grid_at_spacing(scanned, self.spacing)
        coarse = [] if self.spacing is None else coarser_axes(native.spacing, self.spacing)
        if coarse and tuple(coarse) not in self.warned:        # once per spacing, not per volume of a cohort
            self.warned.add(tuple(coarse))
            print(f"blcam detect: {job.path}: voxels coarser than the model was trained on ({', '.join(coarse)}); "
                  "its candidates stay usable but its volume score is less reliable on such volumes "
                  "(README, Detect; each volume's candidates JSON records it)", file=sys.stderr)
        t = time.perf_counter()
        raw = resample(raw, scanned, geometry)
        resample_s = time.perf_counter() - t
        missing = missing_voxels(raw)
        scan["suspected_mask"] = self._suspected_mask(raw, missing, job.path)
        stored = normalise_volume(raw, job.path)
        del raw
        if missing is not None:
            stored[missing] = NEUTRAL_STORED
        lmap = self.mapper.map_with_fraction(stored, progress, lambda f: report("map", f))
        ranked = ranked_candidates(lmap, geometry, s.nms_mm, self.calibration)
        if missing is not None:           # nothing was imaged there: no candidate, no heat
            ranked = [c for c in ranked if not missing[_voxel_kji(c, missing.shape)]]
            lmap.heatmap[missing] = 0.0
        candidates, volume_score = select_candidates(ranked, lmap, geometry, s.top_k, s.min_score, self.calibration)
        volume_logit = round(ranked[0].crop_logit, 6) if ranked else None     # what blcam calibrate fits
        map_s = time.perf_counter() - start        # read, resample and map, as before spacings
        refine_s = self._refine(stored, lmap, geometry, candidates, lambda f: report("refine", f))
        snap_s = self._snap(stored, lmap, geometry, candidates)
        heat_scale = volume_score if self.scaled_heatmap else 1.0     # sizes above used the relative map
        if heat_scale != 1.0:
            lmap.heatmap *= np.float32(heat_scale)
        files = VolumeOutputs(out_dir, job.name)
        heat_path = files.heatmap
        t = time.perf_counter()
        heat = resample(lmap.heatmap, geometry, native, fill=0.0)
        resample_s += time.perf_counter() - t
        write_heatmap(heat_path, heat, native)
        del heat
        info = {"volume": str(job.path), "name": job.name, "model": str(self.model_path), "method": s.method,
                "volume_score": round(volume_score, 6), "cam_max": lmap.cam_max, "stride": list(lmap.stride),
                "crop": list(lmap.crop), "settings": asdict(s), "coordinate_system": "LPS",
                "model_spacing": None if self.spacing is None else list(self.spacing), "coarser_than_model": coarse,
                "volume_logit": volume_logit, "heatmap_scale": round(heat_scale, 6),
                **scan,
                "calibration": self.calibration.record}
        t = time.perf_counter()
        if s.pictures:
            report("pictures", 0.0)
            volume_pictures(files, s.overlays, stored, lmap.heatmap, geometry, candidates, volume_score,
                            job.truth_lps)
        else:
            files.remove_pictures()
        pictures_s = time.perf_counter() - t
        for cand in candidates if geometry != native else []:   # files index the input's own voxels
            cand.index_kji = float3(native.lps_to_index(cand.lps)[::-1])
        paths = write_candidates(out_dir, job.name, candidates, info)
        return {"name": job.name, "volume": str(job.path), "patient": job.patient, "label": job.label,
                "volume_score": round(volume_score, 6), "candidates": len(candidates), "method": s.method,
                "seconds": round(time.perf_counter() - start, 2), "resample_seconds": round(resample_s, 2),
                "map_seconds": round(map_s, 2),
                "refine_seconds": round(refine_s, 2), "snap_seconds": round(snap_s, 2),
                "pictures_seconds": round(pictures_s, 2),
                "heatmap": heat_path.name,
                "candidates_json": paths["json"].name, "non_finite_voxels": scan["non_finite_voxels"]}

    def _read_scanned(self, path: Path) -> tuple[np.ndarray, Geometry, Geometry, dict]:
        """The volume at ``path`` cut to the box it was scanned in (:mod:`blcam.io.padding`):
        that box's array (non-finite where nothing was imaged, ``--no-data-value`` voxels
        included), the volume's own grid and the box's, and what was left out, for its JSON."""
        raw, native = read_volume(path)
        bad = count_non_finite(raw)
        if bad:
            print(f"blcam detect: {non_finite_warning(path, bad, raw.size, NOT_IMAGED)}", file=sys.stderr)
        marked = 0
        if self.settings.no_data_value is not None:
            raw, marked = mark_no_data(raw, self.settings.no_data_value)
        # Constant planes padded onto the faces are not tissue: only the box inside them is
        # mapped, and the heatmap is 0 over the padding.
        box = data_box(raw)
        scanned = native if is_whole(box, raw.shape) else native.sub_box(box)
        raw = raw if scanned is native else np.ascontiguousarray(raw[box])
        return raw, native, scanned, {"non_finite_voxels": bad, "no_data_voxels": marked,
                                      "scanned_box_kji": [[sl.start, sl.stop] for sl in box]}

    def _suspected_mask(self, raw: np.ndarray, missing: np.ndarray | None, path: Path) -> dict | None:
        """Warn when ``raw`` looks masked with an ordinary grey value that ``--no-data-value``
        does not name (:func:`suspected_mask`; ``missing``: its non-finite voxels): Detect
        would read the mask's edge as lesions."""
        found = None if self.settings.no_data_value is not None else suspected_mask(raw, missing)
        if found is None:
            return None
        value, fraction = found
        print(f"blcam detect: warning: {path}: {100 * fraction:.0f} % of the volume holds its lowest value ({value:g}) "
              "in regions that reach its faces with a hard edge, as a mask outside the field of view does; the "
              "network reads such an edge as a lesion. If nothing was imaged there, rerun with --no-data-value "
              f"{value:g} (README, Detect)", file=sys.stderr)
        return {"value": value, "fraction": round(fraction, 4)}

    def _refine(self, stored: np.ndarray, lmap: LesionMap, geometry: Geometry, candidates: list[Candidate],
                on_fraction: Callable[[float], None]) -> float:
        """Move the best ``settings.refine`` candidates (:mod:`.refine`); returns the seconds spent."""
        start = time.perf_counter()
        todo = candidates[: self.settings.refine] if self.settings.method == "fast" else []
        if not todo:
            return time.perf_counter() - start
        if self.refiner is None:
            mode = self.settings.refine_mode or default_mode(self.meta)
            self.refiner = CandidateRefiner(self.model, self.crop, self.stride, self.device, mode,
                                            inside=trained_inside(self.meta))
        refiner = self.refiner
        for n, cand in enumerate(todo):
            on_fraction(n / len(todo))
            pos, _ = refiner(stored, cand.index_kji)
            _move(cand, pos, lmap, geometry)
        return time.perf_counter() - start

    def _snap(self, stored: np.ndarray, lmap: LesionMap, geometry: Geometry, candidates: list[Candidate]) -> float:
        """Move every candidate onto the darkest blob within ``settings.snap_mm`` (:mod:`.snap`);
        returns the seconds spent."""
        start = time.perf_counter()
        spacing_kji = tuple(reversed(geometry.spacing))
        for cand in candidates if self.settings.snap_mm > 0 else []:
            pos, moved = snap_to_dark_blob(stored, cand.index_kji, spacing_kji, self.settings.snap_mm)
            if moved > 0:
                _move(cand, pos, lmap, geometry)
        return time.perf_counter() - start


def _voxel_kji(cand: Candidate, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The candidate's nearest voxel (:attr:`Candidate.voxel_ijk`) as an index into an array of
    ``shape`` (``k, j, i``), held inside it."""
    return tuple(int(v) for v in np.clip(cand.voxel_ijk[::-1], 0, np.asarray(shape) - 1))


def _move(cand: Candidate, pos: np.ndarray, lmap: LesionMap, geometry: Geometry) -> None:
    """Put ``cand`` at voxel ``pos`` ``(k, j, i)``: its LPS position, and its size read from the
    heatmap there (refinement and snapping both move candidates)."""
    cand.index_kji = float3(pos)
    cand.lps = float3(geometry.index_to_lps(pos[::-1]))
    cand.size_mm_ijk = half_max_extent(lmap.heatmap, cand.index_kji, lmap.crop, tuple(reversed(geometry.spacing)))


def detect(model_path: PathLike, inputs: Iterable[PathLike], out_dir: PathLike, settings: DetectSettings | None = None,
           device: str = "cpu", progress: bool = True, on_progress: ProgressCallback | None = None,
           force: bool = False) -> Path:
    """Detect lesions in every volume of ``inputs``; returns the ``detections.csv`` path.

    Holds ``out_dir``'s folder lock (:mod:`blcam.io.locks`). Volumes an earlier run into
    ``out_dir`` finished from the same model, volume and settings are skipped, their rows
    reused (:mod:`.resume`); ``force`` recomputes them. ``settings``: the defaults when ``None``.
    ``on_progress(record)`` follows the whole run: ``record`` holds the ``stage`` (``map``,
    ``refine``, ``pictures``, ``skipped``, ``done``), the overall ``fraction`` done, and the
    ``volume`` number of ``volumes`` and its ``name``.
    """
    settings = DetectSettings() if settings is None else settings
    check_output_folder(out_dir)                      # before the lock, which would create the folder
    with folder_lock(out_dir, purpose="writing detections there"):
        return _detect_locked(model_path, inputs, out_dir, settings, device, progress, on_progress, force)


def _detect_locked(model_path: PathLike, inputs: Iterable[PathLike], out_folder: PathLike,
                   settings: DetectSettings, device: str, progress: bool, on_progress: ProgressCallback | None,
                   force: bool) -> Path:
    from tqdm import tqdm

    out_dir = Path(out_folder)
    jobs = collect_jobs(inputs)
    detector = Detector(model_path, settings, device)
    make_folder(out_dir, "--out")
    rows = []
    finished = FinishedVolumes(out_dir, detector.model_path, settings, force)
    bar = tqdm(jobs, desc="detect", unit="vol", disable=not progress)
    for n, job in enumerate(bar, 1):

        def stage(name: str, within: float, n: int = n, job: VolumeJob = job) -> None:
            if on_progress is not None:
                on_progress({"stage": name, "fraction": round((n - 1 + within) / len(jobs), 4), "volume": n,
                             "volumes": len(jobs), "name": job.name})

        row = finished.finished_row(job)
        if row is None:
            row = detector.run(job, out_dir, progress=progress, on_stage=stage)
            finished.record(job, row)
        else:
            stage("skipped", 1.0)
            bar.set_postfix(skipped=finished.skipped)
        rows.append(row)
        stage("done", 1.0)
    finished.report(len(jobs), progress)
    return write_summary(out_dir, rows)
