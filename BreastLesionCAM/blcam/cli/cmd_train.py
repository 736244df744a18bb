"""``blcam train PATCHES --out RUN``: train the patch classifier (``--recipe paper``: the paper's method).

Also the worker the Slicer module launches: with ``--progress-json`` every epoch is one
``{"event": "progress", "stage": "epoch", "fraction": ..., <the epoch's history row>}``
line, then ``{"event": "done", "model": PATH}`` (:mod:`blcam.cli.progress`). With
``--calibrate``, Detect on the validation fold's volumes follows as ``"stage": "calibrate"``
records, and ``done`` also holds ``calibration``: what the fit did.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from ..device import device_name
from ..errors import BlcamError
from ..io.resample import mm_to_voxels
from ..model import ARCHS, OUTPUT_STRIDES, STEMS
from ..recipes import RECIPES, recipe_config
from ..training import TrainConfig, train_model
from ..training.config import LR_SCHEDULES, MONITORS, PRECISIONS, RESIDENT
from . import positive_int
from .progress import ProgressEmitter

_D = TrainConfig()


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``cv`` (defaults: the recipe's, see :mod:`blcam.recipes`)."""
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                   help="'default': crops inside the volume + point supervision of the lesion map (Detect points "
                   "at lesions); 'paper': the paper's method exactly (padded crops, classification loss only). "
                   "Options given explicitly override the recipe (default: default)")
    p.add_argument("--arch", choices=sorted(ARCHS), default=_D.arch,
                   help=f"MONAI 3D ResNet depth (default: {_D.arch})")
    p.add_argument("--stem", choices=list(STEMS), default=_D.stem,
                   help="first convolution: 'paper' = MONAI's full-resolution 7x7x7 (finest CAM); 'fast' = "
                   "in-plane stride 2, ~3x faster training, half the map's in-plane resolution; 'compact' = "
                   f"full-resolution 3x3x3, 1.4x faster training on a CPU (default: {_D.stem})")
    p.add_argument("--widen", type=float, default=_D.widen, metavar="F",
                   help=f"channel width factor (MONAI widen_factor; default: {_D.widen})")
    p.add_argument("--width", type=float, dest="widen", help=argparse.SUPPRESS)   # the old spelling
    p.add_argument("--epochs", type=positive_int, default=_D.epochs, help=f"epochs (default: {_D.epochs})")
    p.add_argument("--batch-size", type=positive_int, default=_D.batch_size,
                   help=f"patches per optimizer step, over all processes (default: {_D.batch_size})")
    p.add_argument("--lr", type=float, default=_D.lr, help=f"Adam learning rate (default: {_D.lr:g})")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="'cosine': anneal the rate to zero over the epochs; 'constant': the paper's "
                   f"(recipes: default {_D.lr_schedule}, paper constant)")
    p.add_argument("--crop", type=positive_int, nargs=3, default=list(_D.crop), metavar=("K", "J", "I"),
                   help=f"random crop taken inside each stored patch, k j i (default: {' '.join(map(str, _D.crop))})")
    p.add_argument("--crop-mm", type=float, nargs=3, default=None, metavar=("K", "J", "I"),
                   help="crop size in mm instead of voxels (k j i); the dataset must be exported with --spacing")
    p.add_argument("--flip-p", type=float, default=_D.flip_p,
                   help=f"probability of a flip along k and, independently, along i (default: {_D.flip_p})")
    p.add_argument("--padded-crops", action="store_true", default=None,
                   help="take crops anywhere in the patch, as the paper does, even where a patch reaches past "
                   "its volume's border and is padded (default recipe: crops stay inside the volume wherever the "
                   "patch allows; padding only occurs beside lesions, so it would leak the label)")
    p.add_argument("--point-loss", type=float, default=None, metavar="W",
                   help="weight of the point-supervision loss that teaches the local-logit map to peak on the "
                   f"clicked lesion centre; 0 turns it off (recipes: default {_D.point_loss:g}, paper 0)")
    p.add_argument("--hard-negatives", type=int, default=None, metavar="ROUNDS",
                   help="rounds of hard-negative mining: Detect on the training patients' healthy volumes, their "
                   f"strongest false alarms become negatives (recipes: default {_D.hard_negatives}, paper 0)")
    p.add_argument("--hard-negatives-per-volume", type=positive_int, default=_D.hard_negatives_per_volume,
                   metavar="K", help=f"candidates mined per volume and round (default: {_D.hard_negatives_per_volume})")
    p.add_argument("--hard-negatives-min-score", type=float, default=_D.hard_negatives_min_score, metavar="P",
                   help="mine only candidates the network scores at least this probable "
                   f"(default: {_D.hard_negatives_min_score})")
    p.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=None,
                   help="input voxels per lesion-map voxel: 16 = MONAI's network (the paper); 8 = layer4 without "
                   f"its stride, a twice finer map for ~25%% more compute (default: {_D.output_stride})")
    p.add_argument("--positive-fraction", type=_fraction_or_as_exported, default=None, metavar="F",
                   help="share of each epoch's crops drawn from lesion patches (repeated, each with its own "
                   "crop), the rest from a random subset of the healthy ones; 'as-exported' trains on every "
                   "patch once, as the paper does (default: as-exported; 0.5 did not help on the validation "
                   "cohort, bench/RESULTS.md)")
    p.add_argument("--point-sigma", type=float, default=None, metavar="S",
                   help=f"width of the point targets in feature spacings (default: {_D.point_sigma})")
    p.add_argument("--focal-gamma", type=float, default=None, metavar="G",
                   help="focal loss exponent: each crop's and feature voxel's BCE is weighted by the network's "
                   f"error on it to the power G, so hard examples weigh more; 0 is plain BCE, the paper's "
                   f"(default: {_D.focal_gamma:g})")
    p.add_argument("--lesion-margin", type=float, default=None, metavar="M",
                   help="keep each lesion crop's centre at least M × the crop size inside every face of the crop, "
                   "so a lesion is never cut in half yet labelled positive; 0 lets it sit on a face "
                   f"(default: {_D.lesion_margin:g}; the paper's 28→16 and 280→160 proportions keep it 6–12 %% "
                   "inside by themselves)")
    p.add_argument("--zoom", type=float, default=None, metavar="Z",
                   help="magnify each training crop by a random factor in [1, 1 + Z] about the clicked centre "
                   "(a random place in healthy crops): more lesion sizes from the same clicks; 0 is the paper's "
                   f"flips only (default: {_D.zoom:g})")
    p.add_argument("--appearance", type=float, default=None, metavar="P",
                   help="change each training crop's look, as another scanner or voxel size would: a blur, a "
                   "coarser resolution, a contrast and a gamma change, each with probability P (nnU-Net's "
                   f"ranges); 0 is the paper's flips only (default: {_D.appearance:g})")
    p.add_argument("--device", type=device_name, default=_D.device,
                   help="where to train: auto, cpu, cuda, cuda:N or mps; auto picks cuda, then mps, then cpu "
                   "(default: auto)")
    p.add_argument("--seed", type=int, default=_D.seed,
                   help=f"seed of initial weights, patch order, crops and flips (default: {_D.seed})")
    p.add_argument("--workers", type=int, default=_D.workers,
                   help=f"DataLoader processes when patches are not held in memory (default: {_D.workers})")
    p.add_argument("--resident", choices=RESIDENT, default=_D.resident,
                   help="hold all patches in the training device's memory and crop there; auto: if they take "
                   "at most a quarter of free memory (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default=_D.precision,
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere (default: auto)")
    p.add_argument("--val-every", type=positive_int, default=_D.val_every,
                   help=f"validate every N epochs, and after the last (default: {_D.val_every})")
    p.add_argument("--monitor", choices=MONITORS, default=_D.monitor,
                   help="which epoch becomes model.safetensors: 'auto' (default) picks the best val_auc "
                        "with --fold K and keeps the last epoch otherwise (the held-out patches "
                        "are then the test split, never used to choose); 'last'; or a metric, "
                        "which needs --fold")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA; default: off)")


# None unless given: the recipe decides.
RECIPE_OPTIONS = ("padded_crops", "point_loss", "point_sigma", "hard_negatives", "output_stride", "positive_fraction",
                  "lr_schedule", "focal_gamma", "lesion_margin", "zoom",
                  "appearance")
AS_EXPORTED = "as-exported"


def _fraction_or_as_exported(text: str):
    if text == AS_EXPORTED:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.5, or '{AS_EXPORTED}', got {text!r}") from None


def _crop_from_mm(args) -> tuple[int, int, int]:
    """``--crop-mm`` in voxels at the dataset's spacing (recorded by ``export --spacing``)."""
    from ..patches.dataset import load_dataset
    spacing = load_dataset(args.patches).spacing
    if spacing is None:
        raise BlcamError(f"--crop-mm: {args.patches} was exported at each volume's own voxel size; give --crop "
                         "in voxels, or export with --spacing")
    return mm_to_voxels(args.crop_mm, spacing, "--crop-mm")


def config_from_args(args, fold=None) -> TrainConfig:
    """The run's :class:`TrainConfig`: the recipe, then every option of the same name as a
    field (recipe options only where given, :data:`RECIPE_OPTIONS`)."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    given = {k: v for k, v in given.items() if k not in RECIPE_OPTIONS or v is not None}
    if given.get("positive_fraction") == AS_EXPORTED:
        given["positive_fraction"] = None
    given["crop"] = tuple(args.crop) if getattr(args, "crop_mm", None) is None else _crop_from_mm(args)
    given["fold"] = fold
    return recipe_config(args.recipe, **given)


def register(sub) -> None:
    p = sub.add_parser("train", help="train the 3D ResNet patch classifier",
                       description="Train on random crops (with flips) of the exported patches; validate on "
                       "the centred crops of held-out patches; write model.safetensors (see --monitor), last.pt "
                       "(resumable), history.csv/.jsonl and curves.png into RUN. Runs unchanged under "
                       "torchrun --nproc_per_node N (see training/README.md).")
    p.add_argument("patches", help="patch dataset folder written by 'blcam export'")
    p.add_argument("--out", required=True, help="run folder to create (or continue with --resume)")
    p.add_argument("--fold", type=int, default=None, metavar="K",
                   help="train on the training folds except K and validate on fold K (default: train on all "
                   "training folds, validate on the test split)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--calibrate", action="store_true",
                   help="with --fold K: after training, run Detect on fold K's volumes (patients the model never "
                   "trained on) and calibrate its scores on them, as 'blcam calibrate' does; outputs in "
                   "RUN/calibration (default: off)")
    p.add_argument("--progress-json", action="store_true",
                   help="print progress as JSON lines on stdout, one per epoch (blcam.cli.progress; for the "
                   "Slicer module)")
    add_train_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    config = config_from_args(args, fold=args.fold)
    config.resolved_monitor()          # refuse selection on the test split before any work
    if args.calibrate and args.fold is None:
        raise BlcamError("--calibrate needs --fold K: it calibrates on fold K's patients, which the model does not "
                         "train on (without a fold every non-test patient is a training patient)")
    emitter = ProgressEmitter(args.progress_json)

    def on_epoch(record: dict) -> None:
        emitter.progress("epoch", record["epoch"] / max(record["epochs"], 1), **record)

    model = train_model(args.patches, args.out, config, progress=not args.progress_json,
                        on_epoch=on_epoch if args.progress_json else None, resume=args.resume)
    calibration = None
    if args.calibrate and os.environ.get("RANK", "0") == "0":
        calibration = _calibrate(args, config, emitter)
    if args.progress_json:
        emitter.done(model=str(model), **({"calibration": calibration} if calibration else {}))
    elif os.environ.get("RANK", "0") == "0":
        print(f"wrote {model}")
    return 0


def _calibrate(args, config: TrainConfig, emitter: ProgressEmitter) -> dict:
    """``--calibrate``: fit the score maps on fold K's volumes; returns what the ``done``
    record says about it (a GUI shows it), and follows Detect on those volumes as the
    ``calibrate`` stage of the progress records."""
    from ..device import resolve_device
    from ..evaluation.recalibration import calibrate_on_fold, fit_summary

    def on_progress(record: dict) -> None:
        emitter.progress("calibrate", record["fraction"], step=record.get("stage"), volume=record.get("volume"),
                         volumes=record.get("volumes"), fold=args.fold)

    try:
        fit = calibrate_on_fold(args.out, str(resolve_device(config.device)), progress=not args.progress_json,
                                on_progress=on_progress if args.progress_json else None)
    except BlcamError as err:        # the training is done and kept: say so, then why the fit failed
        raise BlcamError(f"the model in {args.out} is trained, but its scores could not be calibrated on fold "
                         f"{args.fold}: {err}") from err
    summary = {"fold": args.fold, **fit_summary(fit)}
    if not args.progress_json:
        print(f"calibrated on fold {args.fold}: candidate ECE {summary['candidate_ece_raw']:.3f} → "
              f"{summary['candidate_ece']:.3f} on its volumes")
    return summary
