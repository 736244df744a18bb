"""``blcam evaluate-detection DETECTIONS COHORT.csv [--pictures N]``: pointing game, distance, FROC,
volume AUC, per-kind and per-size breakdown (lesion table), calibration of the scores, and the
contact sheets of the volumes worth a look (:mod:`blcam.evaluation.showcase`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..detect.redraw import redraw_pictures
from ..errors import BlcamError
from ..evaluation.detection import evaluate_detection, figure_paths
from ..evaluation.showcase import by_score, hits_and_misses, link_pictures, names_of
from . import add_hit_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-detection", help="localisation metrics of a 'blcam detect' output folder",
                       description="Score the candidates of a 'blcam detect' folder against the cohort's lesion "
                       "centres (and masks where known): pointing game, peak-to-centre distance, FROC (sensitivity "
                       "at 0.125-8 false positives per volume), volume-level AUC and the calibration of the scores "
                       "(reliability diagram, ECE, Brier). With a lesion table (kind, diameter) the metrics are "
                       "also given per lesion kind and size. Only the cohort's volumes that were detected are "
                       "scored.")
    p.add_argument("detections", help="output folder of 'blcam detect' (holds detections.csv)")
    p.add_argument("cohort", help="cohort CSV with the lesion annotations (optional 'mask' column)")
    add_hit_options(p)
    p.add_argument("--lesions", default=None, metavar="CSV",
                   help="lesion table for the per-kind and per-size breakdown: columns volume (the volume file's "
                   "stem), x,y,z (LPS mm), optional kind and diameter_mm (default: lesions.csv beside the "
                   "cohort CSV if it has them, as 'blcam phantom' writes)")
    p.add_argument("--pictures", type=int, default=0, metavar="N",
                   help="also draw the contact sheets of the volumes worth a look, N of each kind: the lesion "
                   "volumes scored highest and lowest, the healthy volumes scored highest (false alarms), lesion "
                   "volumes all hit and with a missed lesion; drawn from Detect's files (it may have run with "
                   "--no-pictures) into DETECTIONS and linked from the Markdown report (default: 0, none)")
    p.add_argument("--out", default=None, metavar="metrics.json",
                   help="JSON to write; .md, _froc.png, _calibration.png and (with kinds) _froc_by_kind.png "
                   "go beside it (default: DETECTIONS/localisation.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.detections) / "localisation.json"
    if args.pictures < 0:
        raise BlcamError(f"--pictures must be 0 or more, got {args.pictures}")
    r = evaluate_detection(args.detections, args.cohort, out, args.masks, args.hit_mm, args.lesions)
    print(f"pointing game {r['pointing_game']:.3f}, median distance {r['distance_mm_median']:.2f} mm, "
          f"FROC mean sensitivity {r['froc']['mean_sensitivity']:.3f}, volume AUC {r['volume_auc']:.3f}")
    cal = r["calibration"]
    print(f"calibration: candidates ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}; "
          f"volumes ECE {cal['volume']['ece']:.3f}, Brier {cal['volume']['brier']:.3f}")
    if "breakdown" in r:
        b = r["breakdown"]
        groups = "; ".join(f"{name} {len(b[name])} groups" for name in ("kind", "size") if name in b)
        print(f"breakdown from {b['lesion_table']}: {groups or 'no kind or diameter_mm column'}; "
              f"{b['unmatched']} of {r['lesions']} lesions unmatched (group 'unknown')")
    if args.pictures:
        picked = by_score(args.detections, args.pictures, args.pictures, args.pictures)
        picked += hits_and_misses(args.detections, r, args.pictures)
        drawn = redraw_pictures(args.detections, [args.cohort], names_of(picked), overlays=0)
        link_pictures(out.with_suffix(".md"), args.detections, picked)
        print(f"drew the contact sheets of {len(drawn)} volume(s) worth a look in {args.detections}")
    print(f"wrote {out} and {out.with_suffix('.md').name}")
    for path in figure_paths(out).values():
        if path.is_file():
            print(f"wrote {path}")
    return 0
