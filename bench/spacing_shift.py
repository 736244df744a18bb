"""Spacing shift: does a model keep its Detect figures on volumes of another voxel size?

Real cohorts come from other scanners, at other slice spacings and in-plane resolutions,
than the one a model was trained on. Detect resamples every volume to the model's spacing,
but the tissue's texture still differs: 0.8 mm slices resampled to 0.5 mm are smoother
along the slices than any training crop. This writes one phantom cohort (the same seed and
patients, over the demo's field of view) at the demo's 0.5 mm and at each ``--spacing``,
runs every model's Detect on each, and prints the localisation metrics side by side, with
the pointing game per lesion kind. The phantom's draws depend on its grid, so the lesions
differ between spacings: compare figures over a few dozen lesions, not lesion by lesion.

Use a seed and patients that no compared model was trained on (the demo trains on seed 1)::

    python bench/spacing_shift.py BreastLesionCAM/Resources/Models/PhantomDemo.safetensors \\
        --seed 11 --patients 40 --spacing 0.8 0.3 0.4 --out /tmp/shift
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

from blcam.demo.pipeline import DemoConfig  # noqa: E402
from blcam.detect.pipeline import DetectSettings, detect  # noqa: E402
from blcam.evaluation.detection import evaluate_detection  # noqa: E402
from blcam.phantom import make_cohort  # noqa: E402
from blcam.training.distributed import resolve_device  # noqa: E402

KINDS = ("cyst", "irregular", "oval")


def cohort_at(out: Path, spacing_kji: tuple, patients: int, seed: int, c: DemoConfig) -> Path:
    """The phantom cohort at ``spacing_kji`` over the demo's field of view (kept: rerun reuses it)."""
    shape = tuple(int(round(v)) for v in np.asarray(c.shape) * np.asarray(c.spacing) / np.asarray(spacing_kji))
    folder = out / ("phantom-" + "x".join(f"{s:g}" for s in spacing_kji))
    if not (folder / "cohort.csv").is_file():
        make_cohort(folder, patients, seed, c.jobs, shape, spacing_kji, c.lesion_fraction, progress=False)
    return folder


def score(model: Path, name: str, phantom: Path, out: Path, c: DemoConfig, device: str,
          settings: DetectSettings | None = None) -> dict:
    """Detect with ``model`` on ``phantom``'s volumes (the demo's settings unless ``settings``),
    then the metrics against its masks."""
    det = out / f"detections-{name}-{phantom.name}"
    start = time.perf_counter()
    settings = settings or DetectSettings(top_k=c.top_k, nms_mm=c.nms_mm, overlays=0)
    detect(model, [phantom / "cohort.csv"], det, settings, device, progress=False)
    seconds = time.perf_counter() - start
    r = evaluate_detection(det, phantom / "cohort.csv", out / f"localisation-{name}-{phantom.name}.json",
                           phantom / "masks", lesions=phantom / "lesions.csv")
    kinds = r.get("breakdown", {}).get("kind", {})
    return {"model": name, "phantom": phantom.name, "pointing": r["pointing_game"],
            "distance_mm": r["distance_mm_median"], "froc": r["froc"]["mean_sensitivity"],
            "volume_auc": r["volume_auc"], "lesions": r["lesions"], "detect_s": round(seconds, 1),
            "by_kind": {k: (round(kinds[k]["pointing_game"] * kinds[k]["lesions"]), kinds[k]["lesions"])
                        for k in KINDS if k in kinds}}


def table(rows: list[dict]) -> str:
    head = ("| model | phantom | pointing game | median distance | FROC mean | volume AUC | "
            + " | ".join(KINDS) + " | Detect s |")
    lines = [head, "|" + " --- |" * (7 + len(KINDS))]
    for r in rows:
        kinds = " | ".join("{} of {}".format(*r["by_kind"][k]) if k in r["by_kind"] else "–" for k in KINDS)
        lines.append(f"| {r['model']} | {r['phantom']} | {r['pointing']:.3f} | {r['distance_mm']:.1f} mm | "
                     f"{r['froc']:.3f} | {r['volume_auc']:.3f} | {kinds} | {r['detect_s']:.0f} |")
    return "\n".join(lines)


def add_cohort_options(p: argparse.ArgumentParser, patients: int) -> None:
    """The options every phantom-cohort benchmark here shares: seed, size, folders, device."""
    p.add_argument("--seed", type=int, default=11, help="phantom seed (not one the models were trained on)")
    p.add_argument("--patients", type=int, default=patients)
    p.add_argument("--out", type=Path, required=True, help="work folder (phantoms are kept and reused)")
    p.add_argument("--json", type=Path, help="write the rows here as JSON")
    p.add_argument("--device", default="auto")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", type=Path, nargs="+", help="model files or run folders")
    p.add_argument("--spacing", type=float, nargs=3, action="append", required=True, metavar=("SK", "SJ", "SI"),
                   help="another voxel size (mm, k j i); repeat for several")
    add_cohort_options(p, patients=40)
    args = p.parse_args(argv)

    c = DemoConfig()
    device = str(resolve_device(args.device))
    args.out.mkdir(parents=True, exist_ok=True)
    phantoms = [cohort_at(args.out, tuple(s), args.patients, args.seed, c)
                for s in [c.spacing, *map(tuple, args.spacing)]]
    names = [m.stem if m.is_file() else m.name for m in args.models]
    if len(set(names)) != len(names):
        raise SystemExit(f"models need distinct names, got {names}")
    rows = []
    for model, name in zip(args.models, names, strict=True):
        for phantom in phantoms:
            rows.append(score(model, name, phantom, args.out, c, device))
            print(f"{name} on {phantom.name}: pointing {rows[-1]['pointing']:.3f}, "
                  f"volume AUC {rows[-1]['volume_auc']:.3f}", flush=True)
    return report(rows, args.json)


def report(rows: list[dict], json_path: Path | None) -> int:
    """Print the rows' table, write them as JSON when asked; the exit status."""
    print("\n" + table(rows))
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
