"""``blcam pictures DETECTIONS VOLUME_OR_COHORT... [--only NAME...]``: overlays drawn after Detect."""

from __future__ import annotations

from ..detect.pipeline import DetectSettings
from ..detect.redraw import redraw_pictures


def register(sub) -> None:
    p = sub.add_parser("pictures", help="draw overlay PNGs and contact sheets of volumes Detect has processed",
                       description="Draw the overlay PNGs and the contact sheet of volumes that 'blcam detect' "
                       "processed (e.g. with --no-pictures, which is twice as fast on small volumes), from the "
                       "files it wrote: each volume's heatmap and candidates, drawn over the volume itself.")
    p.add_argument("detections", metavar="DETECTIONS", help="the folder 'blcam detect --out' wrote")
    p.add_argument("inputs", nargs="+", metavar="VOLUME_OR_COHORT",
                   help="the volumes and/or cohort CSVs given to 'blcam detect' (a cohort also gives the annotated "
                   "centres, drawn as red dots)")
    p.add_argument("--only", nargs="+", default=[], metavar="NAME",
                   help="draw only these volumes (their names in DETECTIONS/detections.csv) (default: all)")
    p.add_argument("--overlays", type=int, default=DetectSettings().overlays,
                   help=f"candidates per volume that get an overlay PNG (default: {DetectSettings().overlays})")
    p.set_defaults(func=run)


def run(args) -> int:
    drawn = redraw_pictures(args.detections, args.inputs, args.only, args.overlays)
    print(f"drew the pictures of {len(drawn)} volume(s) in {args.detections}")
    return 0
