"""Overlay pictures in the paper's style: 0.3 × colour-mapped heatmap + 0.7 × grey image.

Each candidate gets one PNG with the three orthogonal slices through it (voxel axes: the
``k`` slice is the scanner's B-mode plane, depth × lateral; the ``j`` plane is the ABUS
"coronal" view at the candidate's depth; the ``i`` plane is slices × depth), drawn with the
physical aspect ratio so anisotropic voxels (0.476 × 0.073 × 0.2 mm for ABUS) do not
distort lesions. The candidate is circled; an annotated lesion centre, where one is known,
is a small red dot as in the paper's Fig. 3. A contact sheet shows the top candidates of a
volume on one page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

from ..axes import Floats, PathLike

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io.atomic import atomic_path  # noqa: E402
from ..io.volume import Geometry  # noqa: E402
from .candidates import Candidate  # noqa: E402
from .outputs import VolumeOutputs  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HEAT_WEIGHT = 0.3
COLORMAP = "jet"
VIEWS = (("k", "slice k={} (depth × lateral)", (1, 2)),
         ("j", "depth j={} (slices × lateral)", (0, 2)),
         ("i", "lateral i={} (slices × depth)", (0, 1)))


def blend(image_u8: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """RGB in [0, 1]: ``0.3 · colormap(heat) + 0.7 · grey`` (the paper's overlay)."""
    grey = np.repeat((np.asarray(image_u8, np.float32) / 255.0)[..., None], 3, axis=-1)
    colour = plt.get_cmap(COLORMAP)(np.clip(heat, 0, 1))[..., :3]
    return HEAT_WEIGHT * colour + (1 - HEAT_WEIGHT) * grey


def _draw_view(ax: Axes, volume: np.ndarray, heat: np.ndarray, spacing_kji: Floats, index_kji: Floats, axis: int,
               title: str, rows_cols: tuple[int, int],
               marker_mm: float, truth_kji: Sequence[Floats] = ()) -> None:
    centre = np.clip(np.floor(np.asarray(index_kji) + 0.5).astype(int), 0, np.asarray(volume.shape) - 1)
    sl = [slice(None)] * 3
    sl[axis] = centre[axis]
    r, c = rows_cols
    sr, sc = spacing_kji[r], spacing_kji[c]
    image = blend(volume[tuple(sl)], heat[tuple(sl)])
    ax.imshow(image, extent=(0, image.shape[1] * sc, image.shape[0] * sr, 0), interpolation="bilinear")
    y, x = (index_kji[r] + 0.5) * sr, (index_kji[c] + 0.5) * sc
    if marker_mm > 0:
        ax.add_patch(plt.Circle((x, y), marker_mm, fill=False, color="white", lw=1.2))
    for t in truth_kji:
        if abs(t[axis] - centre[axis]) <= 0.5 * max(1.0, 2.0 / spacing_kji[axis]):
            ax.plot((t[c] + 0.5) * sc, (t[r] + 0.5) * sr, "o", color="red", ms=3)
    ax.set_title(title.format(centre[axis]), fontsize=8)
    ax.set_xlabel("mm", fontsize=7)
    ax.tick_params(labelsize=6)


def _fixed_layout(fig: Figure) -> None:
    """Margins in inches, the same for every figure size: ``tight_layout`` measured every
    text box and took about 40 % of a picture's time (a contact sheet and an overlay per
    volume), for margins that barely change from one volume to the next."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.15 / width, bottom=0.45 / height, top=1 - 0.55 / height,
                        wspace=0.22, hspace=0.3)


def _save(fig: Figure, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def candidate_figure(path: PathLike, volume_u8: np.ndarray, heat: np.ndarray, spacing_kji: Floats, cand: Candidate,
                     label: str,
                     truth_kji: Sequence[Floats] = ()) -> None:
    """One PNG: the three slices through a candidate, blended, candidate circled."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    marker = max(2.0, 0.5 * max(cand.size_mm_ijk))
    for ax, (axis_name, title, rc) in zip(axes, VIEWS):
        _draw_view(ax, volume_u8, heat, spacing_kji, cand.index_kji, "kji".index(axis_name), title, rc,
                   marker, truth_kji)
    fig.suptitle(f"{label}: lesion probability {cand.score:.3f}, size (i, j, k) "
                 f"{cand.size_mm_ijk[0]:.1f} × {cand.size_mm_ijk[1]:.1f} × {cand.size_mm_ijk[2]:.1f} mm", fontsize=10)
    _fixed_layout(fig)
    _save(fig, path)


def contact_sheet(path: PathLike, volume_u8: np.ndarray, heat: np.ndarray, spacing_kji: Floats,
                  candidates: list[Candidate],
                  title: str, truth_kji: Sequence[Floats] = (), rows: int = 4) -> None:
    """The top ``rows`` candidates of a volume, one row each (centre slices when there are none)."""
    shown = candidates[:rows]
    n = max(1, len(shown))
    fig, axes = plt.subplots(n, 3, figsize=(12, 3.6 * n), squeeze=False)
    centre = tuple((s - 1) / 2 for s in volume_u8.shape)
    for row in range(n):
        cand = shown[row] if shown else None
        index = cand.index_kji if cand else centre
        for col, (axis_name, view_title, rc) in enumerate(VIEWS):
            label = f"lesion-{row + 1} p={cand.score:.2f}: " if cand else "no candidate: "
            _draw_view(axes[row, col], volume_u8, heat, spacing_kji, index, "kji".index(axis_name),
                       label + view_title, rc, max(2.0, 0.5 * max(cand.size_mm_ijk)) if cand else 0.0, truth_kji)
    fig.suptitle(title, fontsize=11)
    _fixed_layout(fig)
    _save(fig, path)


def volume_pictures(files: VolumeOutputs, overlays: int, volume_u8: np.ndarray, heat: np.ndarray, geometry: Geometry,
                    candidates: list[Candidate], volume_score: float, truth_lps: np.ndarray | None = None) -> None:
    """A volume's pictures, in place of any earlier ones: an overlay PNG for each of its best
    ``overlays`` candidates and its contact sheet, drawn on ``geometry`` (the grid of
    ``volume_u8`` and ``heat``), annotated centres ``truth_lps`` as red dots. Detect draws them
    as it goes, ``blcam pictures`` afterwards (:mod:`.redraw`); both call this, so the two give
    the same pictures."""
    files.remove_pictures()                 # e.g. a third overlay of an earlier --overlays 3
    spacing_kji = tuple(reversed(geometry.spacing))
    truth = [] if truth_lps is None else list(geometry.lps_to_index(truth_lps)[:, ::-1])
    for n, cand in enumerate(candidates[:overlays], 1):
        candidate_figure(files.overlay(n), volume_u8, heat, spacing_kji, cand, f"{files.name} lesion-{n}", truth)
    contact_sheet(files.contact, volume_u8, heat, spacing_kji, candidates,
                  f"{files.name}: volume score {volume_score:.3f}", truth)
