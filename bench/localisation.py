"""Localisation benchmark: phantom cohort → export → train → Detect on held-out volumes → metrics.

One phantom cohort and one patch export are shared by every recipe compared, so the rows
differ only in the recipe. Each recipe is trained on the training patients, Table 2 is read
on the test patches, Detect runs on the test patients' volumes, and the localisation metrics
are scored against the phantom's lesion masks. Prints one table (metrics and seconds per
stage) and writes it as JSON.

The CPU setting (the demo's sizes, ≥ 150 patients, a seed other than the demo's) fits a
2-core machine in under 40 minutes::

    python bench/localisation.py --patients 150 --seed 2 --out /tmp/loc --json bench/localisation-cpu.json

``--variant NAME:key=value,...`` adds an ablation row: the default recipe with training
(``TrainConfig``) or Detect (``DetectSettings``) fields changed, e.g.
``--variant no-point:point_loss=0``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

from blcam.demo.pipeline import DemoConfig, held_out_cohort  # noqa: E402
from blcam.detect.pipeline import DetectSettings, detect  # noqa: E402
from blcam.evaluation import evaluate_model  # noqa: E402
from blcam.evaluation.detection import evaluate_detection  # noqa: E402
from blcam.io.resample import mm_to_voxels  # noqa: E402
from blcam.patches.export import ExportSettings, export_dataset  # noqa: E402
from blcam.phantom import make_cohort  # noqa: E402
from blcam.recipes import RECIPES, recipe_config  # noqa: E402
from blcam.training import TrainConfig, train_model  # noqa: E402
from blcam.training.distributed import resolve_device  # noqa: E402


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_variant(text: str) -> tuple[str, dict, dict]:
    """``NAME:key=value,...`` → (name, TrainConfig changes, DetectSettings changes)."""
    name, _, body = text.partition(":")
    train_keys = {f.name for f in fields(TrainConfig)}
    detect_keys = {f.name for f in fields(DetectSettings)}
    train, det = {}, {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key in train_keys:
            train[key] = _value(value)
        elif key in detect_keys:
            det[key] = _value(value)
        else:
            raise SystemExit(f"--variant {text}: unknown field '{key}'")
    return name, train, det


def _summary(det_dir: Path) -> list[dict]:
    with (det_dir / "detections.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_recipe(name, base: TrainConfig, det_changes: dict, c: DemoConfig, paths: dict, out: Path, device) -> dict:
    run, det_dir = out / f"run-{name}", out / f"detections-{name}"
    seconds = {}
    t = time.perf_counter()
    if not (run / "model.safetensors").is_file():
        train_model(paths["patches"], run, base, progress=False)
    seconds["train"] = time.perf_counter() - t
    t = time.perf_counter()
    table2 = evaluate_model(run, paths["patches"], "test", out / f"table2-{name}.json", device, progress=False)
    seconds["table2"] = time.perf_counter() - t
    t = time.perf_counter()
    settings = replace(DetectSettings(top_k=c.top_k, nms_mm=c.nms_mm, overlays=0), **det_changes)
    detect(run, [paths["test_cohort"]], det_dir, settings, device, progress=False)
    seconds["detect"] = time.perf_counter() - t
    loc = evaluate_detection(det_dir, paths["test_cohort"], out / f"localisation-{name}.json", paths["masks"],
                             lesions=paths["lesions"])
    return {"recipe": name, "auc_patch": table2["modes"]["patch"]["auc"],
            "auc_centre": table2["modes"]["centre"]["auc"],
            "auc_random": table2["modes"]["random"]["auc"], "pointing": loc["pointing_game"],
            "distance_mm": loc["distance_mm_median"], "froc": loc["froc"]["mean_sensitivity"],
            "volume_auc": loc["volume_auc"], "volumes": loc["volumes"], "lesions": loc["lesions"],
            "refine_s": round(sum(float(r.get("refine_seconds") or 0) for r in _summary(det_dir)), 1),
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=150)
    p.add_argument("--seed", type=int, default=2, help="phantom, split and training seed (the demo uses 1)")
    p.add_argument("--epochs", type=int, default=DemoConfig.epochs)
    p.add_argument("--test-fraction", type=float, default=DemoConfig.test_fraction,
                   help="share of patients held out (default: the demo's)")
    p.add_argument("--patch", type=int, nargs=3, default=list(DemoConfig.patch), metavar=("K", "J", "I"),
                   help="patch size in the demo's 0.5 mm voxels (converted to the export's spacing)")
    p.add_argument("--crop", type=int, nargs=3, default=list(DemoConfig.crop), metavar=("K", "J", "I"),
                   help="training crop in the demo's 0.5 mm voxels (converted like --patch)")
    p.add_argument("--negatives-per-volume", type=int, default=DemoConfig.negatives_per_volume)
    p.add_argument("--recipes", nargs="*", default=["default", "paper"], choices=sorted(RECIPES),
                   help="recipe rows (none: only the --variant rows)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...")
    p.add_argument("--export-spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                   help="export at this spacing (mm, i j k; default: 'auto', the phantom's own); patch and crop "
                   "keep their size in mm")
    p.add_argument("--phantom-spacing", type=float, nargs=3, default=None, metavar=("SK", "SJ", "SI"),
                   help="write the phantom at this spacing (mm, k j i) over the demo's field of view")
    p.add_argument("--out", type=Path, required=True, help="work folder (kept: rerun to reuse its stages)")
    p.add_argument("--json", type=Path, help="write the table here as JSON")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    c = replace(DemoConfig(), patients=args.patients, seed=args.seed, epochs=args.epochs, patch=tuple(args.patch),
                crop=tuple(args.crop), negatives_per_volume=args.negatives_per_volume, test_fraction=args.test_fraction)
    # Patch and crop hold the demo's tissue (its voxel sizes at its 0.5 mm) at whatever spacing
    # the patches are cut: the export's, or the phantom's own.
    demo_kji = np.asarray(c.spacing, float)
    if args.phantom_spacing is not None:
        fov = np.asarray(c.shape) * demo_kji
        c = replace(c, spacing=tuple(args.phantom_spacing),
                    shape=tuple(int(round(v)) for v in fov / np.asarray(args.phantom_spacing)))
    # The export's default spacing, 'auto', is the phantom's own (one spacing for all volumes).
    spacing = "auto" if args.export_spacing is None else tuple(args.export_spacing)
    cut_at = tuple(args.export_spacing) if args.export_spacing is not None else tuple(reversed(c.spacing))
    to_vox = lambda size: mm_to_voxels(np.asarray(size) * demo_kji, cut_at, "size")   # noqa: E731
    c = replace(c, patch=to_vox(c.patch), crop=to_vox(c.crop))
    device = str(resolve_device(args.device))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    paths = {"cohort": out / "phantom" / "cohort.csv", "patches": out / "patches",
             "test_cohort": out / "held_out_cohort.csv", "masks": out / "phantom" / "masks",
             "lesions": out / "phantom" / "lesions.csv"}
    seconds = {}
    t = time.perf_counter()
    if not paths["cohort"].is_file():
        make_cohort(out / "phantom", c.patients, c.seed, c.jobs, c.shape, c.spacing, c.lesion_fraction, progress=False)
    seconds["phantom"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (paths["patches"] / "manifest.csv").is_file():
        export_dataset(paths["cohort"], paths["patches"],
                       ExportSettings(tuple(c.patch), c.negatives_per_volume, c.test_fraction, None, c.seed,
                                      spacing=spacing),
                       jobs=c.jobs, progress=False)
    seconds["export"] = time.perf_counter() - t
    held_out_cohort(paths["cohort"], paths["patches"] / "manifest.csv", paths["test_cohort"])
    print(f"cohort: {c.patients} patients (seed {c.seed}); phantom {seconds['phantom']:.0f} s, "
          f"export {seconds['export']:.0f} s", flush=True)

    base = {"arch": c.arch, "stem": c.stem, "widen": c.widen, "crop": tuple(c.crop), "epochs": c.epochs,
            "batch_size": c.batch_size, "lr": c.lr, "device": device, "seed": c.seed, "workers": 0,
            "val_every": c.val_every}     # as the demo: the curves' held-out AUC picks nothing here
    # The paper's row is the paper's method end to end: its layer4 CAM map, neither refined nor snapped.
    paper_detect = {"refine": 0, "snap_mm": 0.0}
    plan = [(name, recipe_config(name, **base), paper_detect if name == "paper" else {}) for name in args.recipes]
    for text in args.variant:
        name, train, det = parse_variant(text)
        plan.append((name, replace(recipe_config("default", **base), **train), det))
    rows = []
    for name, cfg, det in plan:
        rows.append(run_recipe(name, cfg, det, c, paths, out, device))
        r = rows[-1]
        print(f"{r['recipe']:>14}: pointing {r['pointing']:.3f}, distance {r['distance_mm']:.1f} mm, FROC "
              f"{r['froc']:.3f}, volume AUC {r['volume_auc']:.3f}, Table 2 AUC {r['auc_patch']:.3f}/"
              f"{r['auc_centre']:.3f}/{r['auc_random']:.3f}, seconds {r['seconds']}", flush=True)
    head = "| recipe | pointing game | median distance | FROC mean | volume AUC | Table 2 AUC (patch/centre/random) " \
           "| train s | Detect s (of which refine) |"
    print("\n" + head + "\n|" + " --- |" * 8)
    for r in rows:
        print(f"| {r['recipe']} | {r['pointing']:.3f} | {r['distance_mm']:.1f} mm | {r['froc']:.3f} | "
              f"{r['volume_auc']:.3f} | {r['auc_patch']:.3f} / {r['auc_centre']:.3f} / {r['auc_random']:.3f} | "
              f"{r['seconds']['train']:.0f} | {r['seconds']['detect']:.0f} ({r['refine_s']:.0f}) |")
    if args.json:
        args.json.write_text(json.dumps({"patients": c.patients, "seed": c.seed, "stages": seconds, "rows": rows},
                                        indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
