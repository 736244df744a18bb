"""``blcam demo [--out DIR]``: phantom → export → train → Table 2 → calibrate → Detect → metrics → report."""

from __future__ import annotations

import argparse

from ..demo import DemoConfig, run_demo
from ..device import device_name
from . import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = sub.add_parser("demo", help="the whole pipeline on a synthetic cohort, with an HTML/Markdown report",
                       description="Make a phantom cohort, export patches, train a small model with the paper's "
                       "recipe, score Table 2 on the held-out patches, calibrate its scores on phantom "
                       "patients set aside, run Detect on the held-out volumes, "
                       "measure localisation (pointing game, distance, FROC, volume AUC) and write "
                       "DIR/index.html and DIR/report.md. Sized for a 2-core CPU (under 15 minutes); an "
                       "interrupted demo resumes where it stopped.")
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--patients", type=positive_int, default=d.patients,
                   help=f"phantom patients, 1-2 volumes each (default: {d.patients})")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"training epochs (default: {d.epochs})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of cohort, splits and training (default: {d.seed})")
    p.add_argument("--device", type=device_name, default=d.device,
                   help=f"where the network runs: auto, cpu, cuda, cuda:N or mps (default: {d.device})")
    p.add_argument("--calibration-patients", type=int, default=d.calibration_patients, metavar="N",
                   help="further phantom patients (another seed, never trained or tested on) whose detections "
                   f"calibrate the scores; 0 leaves them the network's raw sigmoid (default: "
                   f"{d.calibration_patients})")
    p.add_argument("--jobs", type=positive_int, default=d.jobs,
                   help=f"processes for phantom and export (default: {d.jobs})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = DemoConfig(patients=args.patients, epochs=args.epochs, seed=args.seed, device=args.device,
                        jobs=args.jobs, calibration_patients=args.calibration_patients)
    run_demo(args.out, config)
    return 0
