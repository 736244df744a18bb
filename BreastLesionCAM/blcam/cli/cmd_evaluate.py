"""``blcam evaluate RUN_OR_MODEL PATCHES``: the paper's Table 2 for one model on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..device import device_name
from ..evaluation import evaluate_model
from ..model import resolve_model_path
from . import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="AUC/accuracy/sensitivity/specificity in the paper's three input modes",
                       description="Score a split's patches as (a) the full stored patch, (b) the centred crop, "
                       "(c) a seeded random crop; write JSON, a Markdown table laid out like the paper's "
                       "Table 2, and an ROC plot.")
    p.add_argument("model", metavar="RUN_OR_MODEL", help="run folder (uses its model.safetensors) or model file")
    p.add_argument("patches", help="patch dataset folder written by 'blcam export'")
    p.add_argument("--split", default="test", help="'test' or 'fold:K' (default: test)")
    p.add_argument("--out", default=None, metavar="metrics.json",
                   help="JSON to write; .md and _roc.png go beside it (default: evaluation_<split>.json "
                   "next to the model)")
    p.add_argument("--device", type=device_name, default="auto",
                   help="where to run the network: auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--batch-size", type=positive_int, default=14, help="crops per forward pass (default: 14)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-crop positions (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = resolve_model_path(args.model)
    out = Path(args.out) if args.out else model.parent / f"evaluation_{args.split.replace(':', '-')}.json"
    evaluate_model(model, args.patches, split=args.split, out=out, device=args.device,
                   batch_size=args.batch_size, seed=args.seed)
    print(out.with_suffix(".md").read_text(encoding="utf-8"))
    print(f"wrote {out}, {out.with_suffix('.md').name}, {out.stem}_roc.png")
    return 0
