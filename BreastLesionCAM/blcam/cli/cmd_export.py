"""``blcam export COHORT.csv --out PATCHES``: the patch dataset for training."""

from __future__ import annotations

import argparse

from ..axes import Float3, int3
from ..cohort import read_cohort
from ..errors import BlcamError
from ..io.resample import check_spacing, mm_to_voxels
from ..patches.export import ExportSettings, export_dataset, resolve_spacing
from . import fraction, positive_int
from .progress import ProgressEmitter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="cut lesion-centred and healthy patches from a cohort",
                       description="Cut one patch per annotated lesion centre and K random patches per "
                       "volume of a healthy patient; assign patients to test split and folds.")
    p.add_argument("cohort", help="cohort CSV (patient,volume,label,annotation)")
    p.add_argument("--out", required=True, help="dataset folder to write (resumes if it holds the same export)")
    p.add_argument("--patch", type=positive_int, nargs=3, default=[28, 280, 280], metavar=("K", "J", "I"),
                   help="patch size in voxels, k j i order (default: 28 280 280)")
    p.add_argument("--patch-mm", type=float, nargs=3, default=None, metavar=("K", "J", "I"),
                   help="patch size in mm instead of voxels (k j i), at the export's spacing; not with "
                   "--spacing native")
    p.add_argument("--spacing", nargs="+", default=["auto"], metavar="MM",
                   help="the training voxel size, recorded in the dataset and the model so that Detect "
                   "resamples its inputs to it: three sizes in mm, i j k order as SimpleITK and Slicer "
                   "write it (volumes are resampled linearly, physical points unchanged); 'auto': the "
                   "cohort's median voxel size, so a one-scanner cohort is cut from its own voxels; "
                   "'native': each volume's own voxels and no recorded size, as the paper (default: auto)")
    p.add_argument("--negatives-per-volume", type=int, default=4, metavar="K",
                   help="random patches per volume of a healthy patient (default: 4)")
    p.add_argument("--test-fraction", type=fraction, default=0.3,
                   help="share of patients held out as test set, per class (default: 0.3)")
    p.add_argument("--folds", type=positive_int, default=None,
                   help="cross-validation folds; each must get a training patient of each class "
                   "(default: 5, or fewer when a class has fewer training patients)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits and negative positions (default: 0)")
    p.add_argument("--jobs", type=positive_int, default=1, help="volumes processed in parallel (default: 1)")
    p.add_argument("--progress-json", action="store_true",
                   help="print progress as JSON lines on stdout (blcam.cli.progress; for the Slicer module)")
    p.set_defaults(func=run)


def spacing_from_args(values: list[str]) -> Float3 | str | None:
    if values == ["native"]:
        return None
    if values == ["auto"]:
        return "auto"
    try:
        return check_spacing([float(v) for v in values])
    except ValueError:
        raise BlcamError(f"--spacing must be three sizes in mm (i j k), 'auto' or 'native', "
                         f"got {' '.join(values)}") from None


def run(args: argparse.Namespace) -> int:
    spacing = spacing_from_args(args.spacing)
    patch = int3(args.patch)             # three by argparse (nargs=3)
    if args.patch_mm is not None:
        if spacing is None:
            raise BlcamError("--patch-mm needs a training spacing ('auto' or sizes in mm), not 'native': "
                             "millimetres become voxels only at one fixed voxel size")
        spacing = resolve_spacing(spacing, read_cohort(args.cohort))   # a triple now: not native
        patch = mm_to_voxels(args.patch_mm, spacing, "--patch-mm")
    settings = ExportSettings(patch, args.negatives_per_volume, args.test_fraction, args.folds, args.seed,
                              spacing=spacing)
    emitter = ProgressEmitter(args.progress_json)

    def on_progress(done: int, total: int) -> None:
        emitter.progress("export", done / max(total, 1), done=done, total=total)

    manifest = export_dataset(args.cohort, args.out, settings, jobs=args.jobs, progress=not args.progress_json,
                              on_progress=on_progress if args.progress_json else None)
    if args.progress_json:
        emitter.done(manifest=str(manifest))
    else:
        print(f"wrote {manifest}")
    return 0
