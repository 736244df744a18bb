"""Does an ensemble of models point better than its members? (issue 10; a measurement)

The demo's model, trained twice with the same recipe and data on two CPUs, pointed at 0.708
and 0.542 of the same 24 lesions: its training trajectory, not only its recipe, decides
what Detect finds. Averaging the local-logit maps of models trained with different seeds
(what nnU-Net does with its five fold models) removes what is particular to one trajectory.
This script measures it on one held-out cohort: every member alone, then the ensemble,
with the same Detect settings (fast map, refinement) and the same metrics.

The ensemble is ``blcam ensemble``'s model file: its local-logit grid is the mean of the
members' (so its crop logit is the mean of their crop logits, the network's own pooling being
linear), and refinement asks the mean of their local logits. Members are scored with their
own calibration, if any; the ensemble is uncalibrated (rankings are what is compared)::

    python bench/ensemble.py /tmp/ens/run-default /tmp/ens/run-s18 --cohort /tmp/ens/held_out_cohort.csv \
        --masks /tmp/ens/phantom/masks --lesions /tmp/ens/phantom/lesions.csv --out /tmp/ens/ensemble
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

from blcam.detect.pipeline import DetectSettings, detect  # noqa: E402
from blcam.ensemble import write_ensemble  # noqa: E402
from blcam.evaluation.detection import evaluate_detection  # noqa: E402
from blcam.model import resolve_model_path  # noqa: E402


def score(det_dir: Path, args) -> dict:
    loc = evaluate_detection(det_dir, args.cohort, det_dir / "localisation.json", args.masks, lesions=args.lesions)
    groups = (loc.get("breakdown") or {}).get("kind", {})
    kinds = {k: f"{round(v['pointing_game'] * v['lesions'])}/{v['lesions']}" for k, v in groups.items() if v["lesions"]}
    return {"pointing": loc["pointing_game"], "distance_mm": loc["distance_mm_median"],
            "froc": loc["froc"]["mean_sensitivity"], "volume_auc": loc["volume_auc"], "kinds": kinds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="run folders or model files (same architecture and crop)")
    p.add_argument("--cohort", type=Path, required=True, help="held-out cohort CSV")
    p.add_argument("--masks", type=Path, required=True)
    p.add_argument("--lesions", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=10)
    args = p.parse_args(argv)
    paths = [resolve_model_path(m) for m in args.models]
    settings = DetectSettings(top_k=args.top_k, overlays=0)
    rows = []
    for n, path in enumerate(paths):
        det = args.out / f"member-{n}"
        if not (det / "detections.csv").is_file():
            detect(path, [args.cohort], det, settings, progress=False)
        rows.append({"model": str(path), **score(det, args)})
        print(rows[-1], flush=True)
    det, model = args.out / "ensemble", args.out / "ensemble.safetensors"
    if not model.is_file():
        write_ensemble(paths, model)
    if not (det / "detections.csv").is_file():
        detect(model, [args.cohort], det, settings, progress=False)
    rows.append({"model": f"mean of {len(paths)}", **score(det, args)})
    print(rows[-1], flush=True)
    print("\n| model | pointing game | median distance | FROC mean | volume AUC | by kind |\n" + "|" + " --- |" * 6)
    for r in rows:
        print(f"| {r['model']} | {r['pointing']:.3f} | {r['distance_mm']:.1f} mm | {r['froc']:.3f} | "
              f"{r['volume_auc']:.3f} | {r['kinds']} |")
    (args.out / "ensemble.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
