"""The paper's Table 2 for one model on one split: three input modes, six (+2) numbers.

(a) the full stored patch (28×280×280; MONAI's ResNet ends in global average pooling, so
it accepts any size), (b) the crop centred on the patch centre (the lesion centre for
positives), (c) a random crop inside the patch, seeded and reproducible, drawn as the model's
training drew them (inside the volume's part of the patch unless it was trained with
``padded_crops``; see :mod:`blcam.training.data`). For each: AUC and
accuracy at threshold 0.5 (the paper's columns), plus sensitivity and specificity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..axes import PathLike
from ..device import resolve_device
from ..errors import BlcamError
from ..io.atomic import json_safe, write_json_atomic, write_text_atomic
from ..metrics.classification import binary_summary
from ..model import load_model, resolve_model_path
from ..patches.dataset import PatchDataset, load_dataset
from ..score_calibration import sigmoid
from ..training.data import STREAM_EVAL, PatchSource, centre_offset, crop_ranges, prefers_channels_last, random_params
from ..training.predict import predict_logits
from .report import markdown_table, plot_roc

MODES = ("patch", "centre", "random")
METRICS = ("auc", "accuracy", "sensitivity", "specificity")


def split_for_evaluation(ds: PatchDataset, split: str, meta: dict) -> list[dict]:
    """Records of ``test`` or ``fold:K``, refusing a fold the model was trained on."""
    if split == "test":
        records = ds.select(split="test")
    elif split.startswith("fold:") and split[5:].isdigit():
        k = int(split[5:])
        n_folds = int(ds.info["settings"]["folds"])
        if k >= n_folds:
            raise BlcamError(f"--split {split}: {ds.root} has folds 0..{n_folds - 1}")
        trained = meta.get("training", {})
        if "fold" in trained and trained["fold"] != k:
            raise BlcamError(f"--split {split}: this model was trained on fold {k}'s patches "
                             f"(its held-out split was {trained.get('val_split', 'test')}); scores would be inflated")
        records = ds.select(split="train", folds=[k])
    else:
        raise BlcamError(f"--split '{split}': use 'test' or 'fold:K' (K a fold number)")
    if not records:
        raise BlcamError(f"{ds.root}: split '{split}' has no patches")
    return records


def evaluate_model(run_or_model: PathLike, dataset_root: PathLike, split: str = "test", out: PathLike | None = None,
                   device: str = "auto",
                   batch_size: int = 14, seed: int = 0, resident: str = "auto", workers: int = 0,
                   progress: bool = True) -> dict:
    """Score ``split`` in the three modes; with ``out`` (a ``.json`` path) also write
    ``<stem>.md`` (Table 2 layout) and ``<stem>_roc.png`` beside it. Returns the result dict."""
    model_path = resolve_model_path(run_or_model)
    dev = resolve_device(device)
    model, meta = load_model(model_path, dev)
    ds = load_dataset(dataset_root)
    records = split_for_evaluation(ds, split, meta)
    patch, crop = tuple(ds.patch_size), tuple(meta["crop"])
    source = PatchSource(ds, records, crop, dev, resident, workers)
    rows = np.arange(len(records))
    ranges = None if meta.get("training", {}).get("padded_crops") else crop_ranges(ds, records, crop)
    plans = {"patch": (np.zeros((len(rows), 3), np.int64), patch),
             "centre": (np.tile(centre_offset(patch, crop), (len(rows), 1)), crop),
             "random": (random_params(seed, STREAM_EVAL, 0, rows, patch, crop, 0.0, ranges)[0], crop)}
    labels = np.array([r["label"] for r in records])
    channels_last = prefers_channels_last(dev)
    if channels_last:     # weights in the inputs' layout, as training holds them (no reorder per batch)
        model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    modes, probs = {}, {}
    bar = tqdm(total=3 * len(rows), desc=f"evaluate {split}", unit="patch", disable=not progress)
    for mode, (offsets, size) in plans.items():
        # Whole patches are ~3× the voxels of a crop: smaller batches keep memory in bounds.
        bs = max(1, batch_size // 3) if mode == "patch" else batch_size
        logits = predict_logits(model, source, rows, offsets, bs, "auto", channels_last, size, bar)
        probs[mode] = sigmoid(logits)
        modes[mode] = {"input": "x".join(map(str, size)), **binary_summary(labels, probs[mode])}
    bar.close()
    result = {"model": str(model_path), "dataset": str(Path(dataset_root)), "split": split, "seed": seed,
              "crop": list(crop), "patch": list(patch), "n": len(records), "n_positive": int(labels.sum()),
              "modes": modes,
              "patches": [{"patch_id": r["patch_id"], "patient": r["patient"], "label": int(r["label"]),
                           **{m: float(probs[m][n]) for m in MODES}} for n, r in enumerate(records)]}
    if out is not None:
        write_reports(result, Path(out))
    return result


def write_reports(result: dict, out: Path) -> None:
    """``out`` (JSON), ``<stem>.md`` and ``<stem>_roc.png``."""
    if out.suffix != ".json":
        raise BlcamError(f"--out {out}: give a .json path (the Markdown table and ROC plot go beside it)")
    write_json_atomic(out, json_safe(result))
    row = {m: result["modes"][m] for m in MODES}
    title = f"{Path(result['model']).parent.name} on {result['split']} ({result['n']} patches)"
    write_text_atomic(out.with_suffix(".md"), markdown_table({"Test set" if result["split"] == "test"
                                                              else result["split"]: row}, result, title))
    labels = np.array([p["label"] for p in result["patches"]])
    plot_roc(out.with_name(out.stem + "_roc.png"), labels,
             {m: np.array([p[m] for p in result["patches"]]) for m in MODES}, result, title)

