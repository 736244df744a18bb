"""Hard-negative mining: the network's own false alarms in healthy training volumes become negatives.

Random negatives (a few boxes per healthy volume) rarely contain what fools a detector: fat
lobules, shadows without a mass, Cooper's ligament crossings. Detect then lights up every
healthy breast, and the volume score cannot tell healthy from lesion volumes. Mining fixes
that where it arises: part-way through training, the current network runs Detect (the fast
lesion map, :class:`~blcam.cam.dense.DenseLesionMapper`) on the healthy volumes of the
*training* patients, and its strongest candidates, boxes around them cut exactly as export
cuts negatives (:func:`blcam.patches.export.cut_patches`), join the training set as label 0.

Only patients whose patches are in the training records are mined: the held-out split (the
test patients, or the validation fold under ``--fold``) never contributes, so evaluation
stays clean. Negatives come only from healthy patients, as in export. The mined patches and
their manifest live in the run folder (``hard_negatives/``), which records what was added
and lets ``--resume`` reload it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..cam.dense import DenseLesionMapper, default_slab_step
from ..cohort import read_cohort
from ..detect.candidates import find_candidates
from ..errors import BlcamError
from ..intensity import normalise_volume
from ..io.atomic import write_text_atomic
from ..io.resample import resample
from ..io.volume import read_volume
from ..patches.dataset import PatchDataset, read_manifest
from ..patches.export import ExportSettings, PatchJob, cut_patches, manifest_csv
from ..patches.extract import centre_range

FOLDER = "hard_negatives"


def mining_epochs(epochs: int, rounds: int) -> list[int]:
    """The epochs after which to mine: ``rounds`` evenly spaced ones, the last well before the
    end so the network trains on what it mined (e.g. 40 epochs, 1 round: after epoch 20); none
    after the last epoch, where nothing would train on them."""
    return sorted({e for r in range(1, rounds + 1) if (e := max(1, round(epochs * r / (rounds + 1)))) < epochs})


def mined_manifest(run_dir: Path, round_no: int) -> Path:
    return Path(run_dir) / FOLDER / f"round{round_no}.csv"


def load_mined(run_dir: Path, round_no: int) -> list[dict]:
    """Records of an earlier mining round (for ``--resume``), with absolute patch paths."""
    path = mined_manifest(run_dir, round_no)
    if not path.is_file():
        raise BlcamError(f"{path}: missing; the run mined hard negatives in round {round_no} but their "
                         "manifest is gone, so it cannot be resumed")
    return read_manifest(path)


def training_healthy_rows(ds: PatchDataset, train_recs: list[dict]) -> list[tuple]:
    """``(cohort row, fold)`` of every volume of the healthy patients whose patches are training records."""
    folds = {r["patient"]: r["fold"] for r in train_recs if r["patient_class"] == "healthy"}
    cohort_csv = Path(ds.info["cohort"])
    if not cohort_csv.is_file():
        raise BlcamError(f"{ds.root}/dataset.json: its cohort {cohort_csv} is gone; hard-negative mining reads "
                         "the training volumes from it")
    return [(r, folds[r.patient]) for r in read_cohort(cohort_csv).rows if r.patient in folds]


def mine(net: torch.nn.Module, ds: PatchDataset, train_recs: list[dict], crop: Sequence[int],
         device: str | torch.device, run_dir: Path,
         round_no: int, per_volume: int, min_score: float, nms_mm: float = 10.0, progress: bool = False) -> list[dict]:
    """Mine one round; writes ``RUN/hard_negatives/`` (patches + ``round<N>.csv``), returns the records.

    The network is put in eval mode for the pass and handed back in training mode.
    """
    from tqdm import tqdm

    rows = training_healthy_rows(ds, train_recs)
    out = Path(run_dir) / FOLDER
    settings = ExportSettings(patch=ds.patch_size, spacing=ds.spacing)
    net.eval()
    try:
        mapper = DenseLesionMapper(net, crop, device, context="slab",
                                   slab_step=default_slab_step(crop, ds.patch_size))
        records: list[dict] = []
        for r, fold in tqdm(rows, desc=f"mine round {round_no}", unit="vol", leave=False, disable=not progress):
            raw, native = read_volume(r.volume)
            geometry = settings.grid(native)                              # the dataset's spacing
            stored = normalise_volume(resample(raw, native, geometry), r.volume_rel)
            del raw
            cands, _ = find_candidates(mapper(stored), geometry, per_volume, min_score, nms_mm)
            if not cands:
                continue
            lo, hi = centre_range(stored.shape, ds.patch_size)          # boxes inside the volume, as export's negatives
            centres = np.clip(np.floor(np.array([c.index_kji for c in cands]) + 0.5).astype(int), lo, hi)
            stem = f"{r.patient}_{Path(r.volume_rel).name.split('.')[0]}_r{r.row}"
            job = PatchJob(r, [f"{stem}_hn{round_no}-{n:02d}" for n in range(len(centres))], centres,
                           geometry.index_to_lps(centres[:, ::-1].astype(float)), "hard_negative", "train", fold,
                           "healthy", geometry)
            records += cut_patches(job, out, settings)
    finally:
        net.train()
    for rec in records:
        rec["file"] = str((out / rec["file"]).resolve())
    write_text_atomic(mined_manifest(run_dir, round_no), manifest_csv(records))
    return load_mined(run_dir, round_no)
