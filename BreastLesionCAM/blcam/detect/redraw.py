"""``blcam pictures``: a volume's overlay PNGs and contact sheet, drawn afterwards from what Detect wrote.

The pictures are half of a demo-size volume's Detect time (``bench/RESULTS.md``), and nobody
looks at all of them: the Slicer panel shows the volume itself, a cohort's reader opens the
few volumes worth a look, and the demo's report shows about six of its 56 held-out volumes.
So ``blcam detect --no-pictures`` writes only the heatmap and candidates, and this module
draws the pictures of chosen volumes later from the files on disk: the volume itself, its
``_heatmap.nrrd`` and its ``_candidates.json``. It draws on the volume's own grid through
:func:`.overlays.volume_pictures`, the function Detect draws with, so for a model without a
training spacing (whose grid is the volume's) the pictures are Detect's own, up to the
heatmap file's 1/255 steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..axes import PathLike, float3
from ..errors import BlcamError
from ..intensity import normalise_volume
from ..io.locks import folder_lock
from ..io.volume import read_volume
from .candidates import Candidate
from .outputs import VolumeOutputs
from .overlays import volume_pictures
from .pipeline import VolumeJob, collect_jobs


def _saved_candidates(files: VolumeOutputs, index_of) -> tuple[list[Candidate], float]:
    """The candidates and volume score Detect wrote, positions from their LPS millimetres."""
    try:
        info = json.loads(files.json.read_text(encoding="utf-8"))
        rows, volume_score = info["candidates"], float(info["volume_score"])
        candidates = [Candidate(float(r["score"]), float(r["crop_logit"]), float(r["local_logit"]),
                                float3(index_of([r["x"], r["y"], r["z"]])[::-1]), float3((r["x"], r["y"], r["z"])),
                                float3((r["size_i_mm"], r["size_j_mm"], r["size_k_mm"]))) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise BlcamError(f"{files.json}: not a candidates file written by 'blcam detect' ({exc})") from exc
    return candidates, volume_score


def draw_saved(det_dir: PathLike, job: VolumeJob, overlays: int) -> None:
    """Draw the pictures of one volume Detect processed into ``det_dir``."""
    files = VolumeOutputs(Path(det_dir), job.name)
    for path in (files.json, files.heatmap):
        if not path.is_file():
            raise BlcamError(f"{path}: missing; run 'blcam detect' on {job.path} into {det_dir} first")
    raw, geometry = read_volume(job.path)
    heat, _ = read_volume(files.heatmap)          # written on the volume's own grid
    if heat.shape != raw.shape:
        raise BlcamError(f"{files.heatmap}: {heat.shape[::-1]} voxels, but {job.path} has {raw.shape[::-1]}: "
                         "this heatmap was made from another volume")
    candidates, volume_score = _saved_candidates(files, geometry.lps_to_index)
    stored = normalise_volume(raw, job.path)
    del raw
    volume_pictures(files, overlays, stored, np.clip(heat, 0.0, 1.0).astype(np.float32), geometry, candidates,
                    volume_score, job.truth_lps)


def redraw_pictures(det_dir: PathLike, inputs: Iterable[PathLike], names: Sequence[str] = (), overlays: int = 3,
                    progress: bool = True) -> list[str]:
    """Draw the pictures of the volumes of ``inputs`` (the volumes and cohorts given to Detect,
    so their names match) that Detect processed into ``det_dir``; ``names``: only these.
    Returns the names drawn. Holds ``det_dir``'s folder lock, as Detect does."""
    if overlays < 0:
        raise BlcamError(f"--overlays must be ≥ 0, got {overlays}")
    jobs = collect_jobs(inputs)
    if names:
        known = {job.name for job in jobs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BlcamError(f"--only {', '.join(unknown)}: no such volume among the inputs (their names: "
                             f"{', '.join(sorted(known)[:8])}{' …' if len(known) > 8 else ''})")
        jobs = [job for job in jobs if job.name in names]
    if not Path(det_dir).is_dir():
        raise BlcamError(f"{det_dir}: no such folder of detections")
    with folder_lock(det_dir, purpose="drawing pictures there"):
        for job in tqdm(jobs, desc="pictures", unit="vol", disable=not progress):
            draw_saved(det_dir, job, overlays)
    return [job.name for job in jobs]
