"""Patch-export time against the time merely to read the same volumes once.

Usage: python bench/export.py [COHORT.csv] [--patients 20] [--jobs 1]
Without a cohort, a phantom cohort is generated first (not timed). Prints one ratio measured
in one run (these machines are noisy: compare ratios, not seconds). Goal: export ≤ 1.5× read.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "BreastLesionCAM"))

from blcam.cohort import read_cohort  # noqa: E402
from blcam.io.volume import read_volume  # noqa: E402
from blcam.patches.export import ExportSettings, export_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", nargs="?", help="cohort CSV (default: a generated phantom cohort)")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="blcam-bench-export-"))
    try:
        cohort = Path(args.cohort) if args.cohort else _phantom(work, args.patients)
        rows = read_cohort(cohort).rows
        for r in rows:  # warm the page cache so both timings read from memory alike
            read_volume(r.volume)
        t0 = time.perf_counter()
        for r in rows:
            read_volume(r.volume)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        export_dataset(cohort, work / "patches", ExportSettings(), jobs=args.jobs, progress=False)
        export_s = time.perf_counter() - t0
        n = len(list((work / "patches" / "patches").glob("*.npy")))
        print(f"volumes: {len(rows)}   patches: {n} of 28x280x280   jobs: {args.jobs}")
        print(f"read once: {read_s:.2f} s   export: {export_s:.2f} s")
        print(f"export / read = {export_s / read_s:.2f}x   (goal <= 1.5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _phantom(work: Path, patients: int) -> Path:
    from blcam.phantom import make_cohort
    print(f"generating a {patients}-patient phantom cohort (not timed)...", flush=True)
    make_cohort(work / "cohort", patients=patients, seed=0, jobs=2)
    return work / "cohort" / "cohort.csv"


if __name__ == "__main__":
    main()
