"""``blcam evaluate-detection DETECTIONS COHORT.csv``: pointing game, distance, FROC, volume AUC."""

from __future__ import annotations

from pathlib import Path

from ..detect.scoring import evaluate_detection


def register(sub) -> None:
    p = sub.add_parser("evaluate-detection", help="localisation metrics of a 'blcam detect' output folder",
                       description="Score the candidates of a 'blcam detect' folder against the cohort's lesion "
                       "centres (and masks where known): pointing game, peak-to-centre distance, FROC (sensitivity "
                       "at 0.125-8 false positives per volume) and volume-level AUC. Only the cohort's volumes "
                       "that were detected are scored.")
    p.add_argument("detections", help="output folder of 'blcam detect' (holds detections.csv)")
    p.add_argument("cohort", help="cohort CSV with the lesion annotations (optional 'mask' column)")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="folder of lesion label maps named like the volumes, e.g. a phantom's masks/ "
                   "(default: the cohort's 'mask' column, else centres only)")
    p.add_argument("--hit-mm", type=float, default=10.0,
                   help="without a mask, a candidate within this distance of a centre hits the lesion (default: 10)")
    p.add_argument("--out", default=None, metavar="metrics.json",
                   help="JSON to write; .md and _froc.png go beside it (default: DETECTIONS/localisation.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out) if args.out else Path(args.detections) / "localisation.json"
    r = evaluate_detection(args.detections, args.cohort, out, args.masks, args.hit_mm)
    print(f"pointing game {r['pointing_game']:.3f}, median distance {r['distance_mm_median']:.2f} mm, "
          f"FROC mean sensitivity {r['froc']['mean_sensitivity']:.3f}, volume AUC {r['volume_auc']:.3f}")
    print(f"wrote {out}")
    return 0
