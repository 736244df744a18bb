"""``blcam calibrate MODEL DETECTIONS COHORT.csv``: make a model's scores probabilities, fitted on
validation volumes (:mod:`blcam.evaluation.recalibration`)."""

from __future__ import annotations

import argparse

from ..evaluation.recalibration import calibrate_model, fit_summary
from . import add_hit_options
from .progress import ProgressEmitter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit a model's score calibration on detections of validation volumes",
                       description="Turn a model's candidate and volume scores into probabilities: fit Platt "
                       "scaling of the network's logits to the outcomes of 'blcam detect' on volumes of patients "
                       "the model never trained on (a validation fold, or patients set aside), and store the maps "
                       "in the model file. Rankings do not change (FROC, volume AUC and the pointing game are the "
                       "same); a candidate's score then estimates the chance that it hits a lesion, and the volume "
                       "score the chance that the volume holds one. Volumes of the model's training patients are "
                       "refused.")
    p.add_argument("model", help="run folder or .safetensors model file that made the detections")
    p.add_argument("detections", help="output folder of 'blcam detect' on the validation volumes")
    p.add_argument("cohort", help="cohort CSV of those volumes, with their lesion annotations (optional 'mask' "
                   "column)")
    p.add_argument("--out", default=None, metavar="MODEL.safetensors",
                   help="write the calibrated model here (default: rewrite the model file in place; its weights "
                   "are unchanged)")
    add_hit_options(p)
    p.add_argument("--report", default=None, metavar="calibration.json",
                   help="fit report to write; .md and _calibration.png go beside it "
                   "(default: DETECTIONS/calibration.json)")
    p.add_argument("--progress-json", action="store_true",
                   help="print the result as a JSON 'done' record on stdout instead of text (blcam.cli.progress; for "
                   "the Slicer module; default: off)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fit = calibrate_model(args.model, args.detections, args.cohort, args.out, args.masks, args.hit_mm, args.report)
    if args.progress_json:
        ProgressEmitter(True).done(model=fit["model"], calibration=fit_summary(fit))
        return 0
    rec, rel = fit["calibration"], fit["reliability"]
    print(f"calibrated {fit['model']} on {rec['volumes']} volumes ({rec['candidates']} candidates, "
          f"{rec['hits']} hits)")
    print(f"candidates: ECE {rel['raw']['candidate']['ece']:.3f} → {rel['ece']:.3f}; volumes: ECE "
          f"{rel['raw']['volume']['ece']:.3f} → {rel['volume']['ece']:.3f} (on these volumes)")
    return 0
