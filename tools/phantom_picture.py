"""Draw ``Resources/phantom_slices.png``: B-mode slices of a few phantom volumes.

One panel per finding: the three lesion kinds (mask outline in red, annotated centre as a
red dot, as in the paper's Fig. 3) and the two hard-negative kinds (outlined in dashed
cyan: they carry no label). Depth runs down the image and both axes are in millimetres,
so the picture shows the physical proportions a radiologist would see.

Usage: ``python tools/phantom_picture.py [OUT.png] [--seed S]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from blcam.phantom import LesionSpec, annotate, simulate_volume  # noqa: E402
from blcam.phantom.shapes import box_around, ellipsoid_distance  # noqa: E402

PANELS = [  # (title, lesion kinds, hard negatives, which finding to show, ribs)
    ("irregular mass: posterior shadow", [LesionSpec("irregular", 14.0)], 0, "irregular", False),
    ("oval circumscribed mass", [LesionSpec("oval", 13.0)], 0, "oval", None),
    ("cyst: posterior enhancement", [LesionSpec("cyst", 9.0)], 0, "cyst", False),
    ("healthy: fat lobule (hard negative)", [], 5, "fat_lobule", None),
    ("healthy: shadow without mass", [], 4, "shadow", None),
    ("healthy: ribs and pectoral muscle", [], 0, None, True),
]


def _finding(vol, kind):
    """The largest lesion or mimic of ``kind`` in ``vol`` (None if there is none)."""
    items = [item for item in vol.lesions + vol.mimics if item.kind == kind]
    return max(items, key=lambda item: item.diameter_mm) if items else None


def draw(out: Path, seed: int) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4), facecolor="black")
    for n, (ax, (title, kinds, negatives, show, ribs)) in enumerate(zip(axes.flat, PANELS, strict=True)):
        rng = np.random.default_rng([seed, n])
        for _ in range(20):          # redraw until the wanted finding is there, 7 mm or more
            vol = simulate_volume(rng, lesions=kinds, hard_negatives=negatives, ribs=ribs)
            item = _finding(vol, show) if show else None
            if (item is not None and item.diameter_mm >= 7.0) if show else (vol.has_ribs or not ribs):
                break
        spacing = (1.0, 0.15, 0.2)
        item = _finding(vol, show) if show else None
        k = int(round(item.center_kji[0])) if item else vol.image.shape[0] // 2
        J, I = vol.image.shape[1:]
        extent = (0, I * spacing[2], J * spacing[1], 0)
        ax.imshow(vol.image[k], cmap="gray", vmin=0, vmax=255, extent=extent,
                  interpolation="bilinear")
        yy = (np.arange(J) + 0.5) * spacing[1]
        xx = (np.arange(I) + 0.5) * spacing[2]
        if item is not None and item.id:
            ax.contour(xx, yy, vol.mask[k] == item.id, [0.5], colors="red", linewidths=0.8)
            c = annotate(rng, vol.mask, item, spacing)
            ax.plot(c[2] * spacing[2], c[1] * spacing[1], "o", color="red", ms=3)
        elif item is not None:
            box = box_around(item.center_kji, item.ellipsoid.half_extent_mm(1.2, 1.0),
                             spacing, vol.image.shape)
            sd, _, _ = ellipsoid_distance(item.ellipsoid, box)
            inside = np.zeros(vol.image.shape[1:], bool)
            kk = k - box.slices[0].start
            if 0 <= kk < sd.shape[0]:
                inside[box.slices[1], box.slices[2]] = sd[kk] < 0
            ax.contour(xx, yy, inside, [0.5], colors="cyan", linewidths=0.8, linestyles="--")
        ax.set_title(f"{title}  (slice k={k})", color="white", fontsize=10)
        ax.tick_params(colors="gray", labelsize=7)
        ax.set_xlabel("lateral i (mm)", color="gray", fontsize=8)
        ax.set_ylabel("depth j (mm)", color="gray", fontsize=8)
    fig.suptitle("blcam phantom: synthetic ABUS B-mode slices (48×320×320, 1.0×0.15×0.2 mm)",
                 color="white")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor="black")
    print(f"wrote {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "Resources" / "phantom_slices.png"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    draw(Path(args.out), args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
