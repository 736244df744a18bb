"""``blcam ensemble MODEL MODEL... --out ENSEMBLE.safetensors``: models trained alike, as one
model file whose answer is the mean of theirs (:mod:`blcam.ensemble`)."""

from __future__ import annotations

import argparse

from ..ensemble import write_ensemble


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="combine models trained alike into one model file (the mean of their logits)",
                       description="Write several models trained alike (the same architecture, crop, patch and "
                       "voxel size: different seeds, or the fold models of 'blcam cv') as one model file. "
                       "Detect, evaluate, calibrate and the Slicer module use it like any model: its lesion map "
                       "and scores are the mean of its members' local logits. Detect takes the members' time "
                       "added up. On the phantom, two seeds missed the same lesions and their ensemble pointed "
                       "like the weaker one (bench/RESULTS.md). "
                       "The members' score calibration is dropped: calibrate the ensemble itself.")
    p.add_argument("models", nargs="+", help="run folders or .safetensors model files (2 to 16)")
    p.add_argument("--out", required=True, metavar="ENSEMBLE.safetensors", help="model file to write")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out file (default: refuse, so no model is overwritten by mistake)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = write_ensemble(args.models, args.out, replace=args.force)
    print(f"wrote {out}: an ensemble of {len(args.models)} models")
    return 0
