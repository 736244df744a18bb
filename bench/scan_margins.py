"""Scan margins: does Detect keep its figures on volumes padded or masked outside the scan?

Datasets pad volumes to a common size, and exports mask what lies outside the field of view,
with 0 or NaN. The phantom has neither, so this writes one phantom cohort (the demo's field of
view) four ways, with the lesion masks to match, and runs Detect on each:

* ``as-is``: the phantom;
* ``planes``: ``--margin-mm`` of zeros padded onto both lateral faces (``i``), origin moved so
  every voxel keeps its LPS position: Detect peels such planes off (``blcam.io.padding``);
* ``curve-nan`` / ``curve-zero``: the two upper corners (shallow ``j``, outer ``i``) cut
  away along a parabola, as outside a convex probe's field of view, plus a thin rim at both
  lateral faces, written as NaN and as 0. NaN voxels are always left out; zeros only with
  ``--no-data-value 0`` (its own row).

``--as-before`` adds each variant's row with the padding and NaN shown to the network as
black, as Detect did before ``blcam.io.padding``. The corner cut removes some tissue (and may
cut a lesion), so compare the curve rows with each other, the planes row with ``as-is``::

    python bench/scan_margins.py BreastLesionCAM/Resources/Models/PhantomDemo.safetensors \\
        --seed 11 --patients 30 --out /tmp/margins --as-before
"""

from __future__ import annotations

import argparse
import shutil
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))
sys.path.insert(0, str(ROOT / "bench"))

from spacing_shift import add_cohort_options, cohort_at, report, score  # noqa: E402

import blcam.detect.pipeline as detect_pipeline  # noqa: E402
from blcam.demo.pipeline import DemoConfig  # noqa: E402
from blcam.training.distributed import resolve_device  # noqa: E402


def _rewrite(src: Path, dst: Path, change) -> Path:
    """``src``'s phantom cohort into ``dst``, each volume and mask through ``change(array, image,
    is_mask) -> (array, image geometry source)``; kept once written (reruns reuse it)."""
    if (dst / "cohort.csv").is_file():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    for sub in ("volumes", "masks"):
        (dst / sub).mkdir(parents=True)
        for path in sorted((src / sub).glob("*.nrrd")):
            image = sitk.ReadImage(str(path))
            array, origin = change(sitk.GetArrayFromImage(image), image, sub == "masks")
            out = sitk.GetImageFromArray(array)
            out.SetSpacing(image.GetSpacing())
            out.SetDirection(image.GetDirection())
            out.SetOrigin(origin)
            sitk.WriteImage(out, str(dst / sub / path.name), True)
    shutil.copytree(src / "annotations", dst / "annotations")
    for name in ("lesions.csv", "cohort.csv"):                 # cohort.csv last: it marks the folder done
        shutil.copy(src / name, dst / name)
    return dst


def padded_planes(array: np.ndarray, image: sitk.Image, pad: int):
    out = np.pad(array, ((0, 0), (0, 0), (pad, pad)))
    return out, image.TransformContinuousIndexToPhysicalPoint((-pad, 0, 0))


def corner_mask(shape: tuple[int, ...], depth_fraction: float = 0.4) -> np.ndarray:
    """Upper corners beyond 60 % of the half-width, down to ``depth_fraction`` of the depth at
    the faces along a parabola, and a rim of 3 % of the width at each lateral face."""
    _, j, i = np.indices(shape)
    u = np.abs(i - (shape[2] - 1) / 2) / ((shape[2] - 1) / 2)
    return (j < depth_fraction * shape[1] * np.clip((u - 0.6) / 0.4, 0, 1) ** 2) | (u > 0.97)


def curve(array: np.ndarray, image: sitk.Image, is_mask: bool, value: float):
    if is_mask:
        return array, image.GetOrigin()
    out = array.astype(np.float32) if np.isnan(value) else array.copy()
    out[corner_mask(array.shape)] = value
    return out, image.GetOrigin()


@contextmanager
def as_before():
    """Detect as before ``blcam.io.padding``: the whole volume mapped, NaN voxels black."""
    saved = detect_pipeline.data_box, detect_pipeline.missing_voxels
    detect_pipeline.data_box = lambda volume: tuple(slice(0, n) for n in volume.shape)
    detect_pipeline.missing_voxels = lambda volume: None
    try:
        yield
    finally:
        detect_pipeline.data_box, detect_pipeline.missing_voxels = saved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model file or run folder")
    p.add_argument("--margin-mm", type=float, default=5.0, help="padding on each lateral face (default: 5)")
    p.add_argument("--as-before", action="store_true", help="also run each variant as Detect did before")
    add_cohort_options(p, patients=30)
    args = p.parse_args(argv)

    c = DemoConfig()
    device = str(resolve_device(args.device))
    args.out.mkdir(parents=True, exist_ok=True)
    base = cohort_at(args.out, tuple(c.spacing), args.patients, args.seed, c)
    pad = int(round(args.margin_mm / c.spacing[2]))
    variants = {"as-is": base,
                "planes": _rewrite(base, args.out / "planes", lambda a, im, m: padded_planes(a, im, pad)),
                "curve-nan": _rewrite(base, args.out / "curve-nan", lambda a, im, m: curve(a, im, m, np.nan)),
                "curve-zero": _rewrite(base, args.out / "curve-zero", lambda a, im, m: curve(a, im, m, 0.0))}
    name = args.model.stem if args.model.is_file() else args.model.name
    default = c.detect_settings()
    runs = [(label, folder, default) for label, folder in variants.items()]
    runs.append(("curve-zero --no-data-value 0", variants["curve-zero"],
                 replace(default, no_data_value=0.0)))
    rows = []
    for label, folder, settings in runs:
        for before in ((False, True) if args.as_before and label != "as-is" and "--no-data" not in label
                       else (False,)):
            tag = f"{name}-{label.replace(' ', '')}{'-before' if before else ''}"
            with as_before() if before else nullcontext():
                row = score(args.model, tag, folder, args.out, c, device, settings)
            row.update(model=name, phantom=label + (" (as before)" if before else ""))
            rows.append(row)
            print(f"{row['phantom']}: pointing {row['pointing']:.3f}, FROC {row['froc']:.3f}, "
                  f"volume AUC {row['volume_auc']:.3f}", flush=True)
    return report(rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
