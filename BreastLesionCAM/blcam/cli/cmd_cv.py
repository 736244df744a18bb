"""``blcam cv PATCHES --out CVDIR``: k-fold cross-validation by patient plus the test row."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation import cross_validate
from . import positive_int
from .cmd_train import add_train_options, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation by patient and the test-set model (paper, Table 2)",
                       description="Train one model per fold (validated on that fold) and one on all training "
                       "folds (scored on the test split); write CVDIR/cv.json and cv.md with mean ± sd over "
                       "folds and the test row. Rerunning continues an interrupted cross-validation.")
    p.add_argument("patches", help="patch dataset folder written by 'blcam export'")
    p.add_argument("--out", required=True, help="folder for the fold runs and the report")
    p.add_argument("--folds", type=positive_int, default=None,
                   help="number of folds; must match the export, which fixed them (default: the export's)")
    p.add_argument("--ensemble", action="store_true",
                   help="also write the fold models as one ensemble, CVDIR/ensemble.safetensors (the mean of their "
                   "logits; 'blcam detect' takes it like any model), scored on the test split as a row of its own "
                   "(default: off; it holds every fold's weights)")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = cross_validate(args.patches, args.out, config_from_args(args), folds=args.folds, progress=True,
                            ensemble=args.ensemble)
    print((Path(args.out) / "cv.md").read_text(encoding="utf-8"))
    if args.ensemble:
        print(f"fold models as one ensemble: {report['ensemble']}")
    return 0
