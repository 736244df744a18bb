"""``blcam phantom OUT``: write a synthetic ABUS cohort (volumes, markups, masks, CSVs).

The data every other command can be tried on without real patients: see
:mod:`blcam.phantom` for what is simulated and why. Options are checked by
:func:`blcam.phantom.cohort_writer.validate`, so a bad value is one clear line on stderr.
``--preset`` picks the geometry (:mod:`blcam.phantom.presets`); an explicit ``--shape``,
``--spacing`` or ``--direction`` overrides that value of the preset only.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """Write a synthetic automated-breast-ultrasound cohort to OUT:
cohort.csv (patient,volume,label,annotation,birads), volumes/*.nrrd (uint8 B-mode),
annotations/*.mrk.json (lesion centres, half in LPS and half in RAS), masks/*.nrrd
(lesion n = label n), lesions.csv and mimics.csv (ground truth, LPS mm).
The same --seed gives byte-identical files whatever --jobs is.
--preset abus writes volumes of a real ABUS scan's size (865x682x354 voxels of
0.2x0.073x0.476 mm, i j k; about 0.2 GB per volume, ~25 s and ~4 GB of memory each), with
an oblique, flipped direction; --preset demo (the default) is the small, fast size."""

# The names of blcam.phantom.presets.PRESETS, here so that registering the command does not
# import numpy and SimpleITK (a test checks that the two agree).
PRESET_NAMES = ("demo", "abus")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="write a synthetic ABUS cohort with known lesions",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    parser.add_argument("--patients", type=int, default=20, metavar="N",
                        help="number of patients, 1-2 volumes each (default: 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; patient p depends only on (S, p) (default: 0)")
    parser.add_argument("--jobs", type=int, default=1, metavar="J",
                        help="patients made in parallel processes (default: 1)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help="volume geometry: demo (48 320 320 voxels of 1.0 0.15 0.2 mm, "
                             "random flips and 90° rotations) or abus (354 682 865 voxels of "
                             "0.476 0.073 0.2 mm, oblique and flipped) (default: demo)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("K", "J", "I"),
                        help="volume size: slices K, depth J (along the beam), lateral I "
                             "(default: the preset's)")
    parser.add_argument("--spacing", type=float, nargs=3, default=None,
                        metavar=("SK", "SJ", "SI"),
                        help="voxel size in mm in the same k j i order (default: the preset's)")
    parser.add_argument("--direction", type=float, nargs=9, default=None, metavar="D",
                        help="one direction matrix for every volume: 9 numbers, row-major "
                             "(columns = LPS directions of i, j, k, as SimpleITK stores it), "
                             "orthonormal within 1e-6 (a flip is allowed) (default: the "
                             "preset's)")
    parser.add_argument("--lesion-fraction", type=float, default=0.5, metavar="F",
                        help="share of patients with lesions, 0-1 (default: 0.5)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..phantom import make_cohort
    from ..phantom.presets import resolve

    geometry = resolve(args.preset, args.shape, args.spacing, args.direction)
    csv_path = make_cohort(args.out, patients=args.patients, seed=args.seed, jobs=args.jobs,
                           shape=geometry.shape, spacing=geometry.spacing,
                           lesion_fraction=args.lesion_fraction, progress=not args.no_progress,
                           direction=geometry.direction)
    print(f"wrote {csv_path}")
    return 0
