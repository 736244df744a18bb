"""Draw the Sample Data thumbnails ``BreastLesionCAM/Resources/Icons/SamplePhantom{Lesion,Healthy}.png``.

Each is one B-mode slice (depth down, lateral across, in physical proportions) of exactly
the volume the Sample Data entry generates (:mod:`BreastLesionCAMLib.SamplePhantom`): through
the first lesion's centre for the lesion sample, the middle slice for the healthy one. The
size, 260×280 pixels, is what Slicer's module template asks of a sample thumbnail.

Usage: ``python tools/sample_thumbnails.py [CACHE_FOLDER]`` (default: a temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from blcam.io.atomic import atomic_path  # noqa: E402
from blcam.io.volume import read_volume  # noqa: E402
from BreastLesionCAMLib.SamplePhantom import ICONS, SAMPLES, generateSample  # noqa: E402

SIZE_PX = (260, 280)   # width, height


def draw(sample, cache: Path) -> Path:
    row = generateSample(cache, sample.label)
    image, geometry = read_volume(row.volume)                       # (k, j, i)
    if len(row.centres_lps):
        k = int(round(geometry.lps_to_index(row.centres_lps[:1])[0][2]))
    else:
        k = image.shape[0] // 2
    plane = image[min(max(k, 0), image.shape[0] - 1)]                # (j depth, i lateral)
    sj, si = geometry.spacing[1], geometry.spacing[0]
    fig = plt.figure(figsize=(SIZE_PX[0] / 100, SIZE_PX[1] / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(plane, cmap="gray", vmin=0, vmax=255, aspect=sj / si, interpolation="bilinear")
    ax.set_xlim(0, plane.shape[1] - 1)
    ax.set_ylim(plane.shape[0] - 1, 0)
    ax.set_axis_off()
    fig.patch.set_facecolor("black")
    out = ICONS / sample.thumbnail
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, facecolor="black")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cache = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="blcam-thumbnails-"))
    for sample in SAMPLES:
        print(draw(sample, cache))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
