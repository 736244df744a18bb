"""Candidate refinement: ask the network itself, at a few voxels' spacing, where the lesion centre is.

The lesion map lives on the last block's feature grid (16 voxels with the paper's stem), so
a candidate found on it can be half a feature off the lesion, which misses a small lesion.
Training taught the network two things it can be asked at any position, not only on that
grid:

* a point-supervised model (``point_loss > 0``, :mod:`blcam.training.point_supervision`)
  learned a *local logit* that is highest at the feature voxel on the lesion centre. A
  training-sized crop placed so that a feature voxel sits exactly at position ``p`` gives the
  local logit at ``p`` (mode ``"local"``);
* any model, the paper's included, learned a crop logit that is highest for crops centred on
  the lesion (positives were lesion-centred crops). A crop centred at ``p`` gives it
  (mode ``"crop"``).

Either value is sampled at ``p`` and ``p ± h`` along each axis (one batch of six crops); the
vertices of the three parabolas move ``p`` (at most ``h`` per axis) if the network's value
there is higher, and the search repeats with ``h`` halved: 15 crop-sized forward passes per
candidate for two rounds, listed separately in Detect's timings.

Where a crop reaches past the volume it is cut with zero padding (the stored value of
padding). The paper's recipe trained on such crops beside border lesions; the default recipe
kept every training crop inside the volume (``padded_crops=False``), so its network never saw
padding, and answers there are not evidence: on the demo, refined candidates walked into the
volume's first slices and top rows, where no lesion was. With ``inside=True`` a move may not
take the crop further outside the volume than the starting position's crop already was
(:meth:`CandidateRefiner.limits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..cam.local_logits import feature_positions, local_logit_net
from ..intensity import network_input
from ..model import Network
from ..patches.extract import extract_box

MODES = ("local", "crop")


def default_mode(meta: dict) -> str:
    """``local`` for point-supervised models, ``crop`` (the classifier) for the paper's."""
    return "local" if float(meta.get("training", {}).get("point_loss", 0) or 0) > 0 else "crop"


def trained_inside(meta: dict) -> bool:
    """Whether the model's training crops stayed inside the volume (the default recipe)."""
    return not meta.get("training", {}).get("padded_crops", True)


class CandidateRefiner:
    """Moves candidate positions ``(k, j, i)`` (voxels) to where the network answers best."""

    def __init__(self, model: Network, crop: Sequence[int], stride: Sequence[int], device: str | torch.device,
                 mode: str = "local", steps: int = 2, inside: bool = False):
        self.crop = np.asarray(crop, int)
        self.mode, self.steps, self.device, self.inside = mode, steps, torch.device(device), inside
        self.net = (local_logit_net(model) if mode == "local" else model).eval()
        positions = feature_positions(crop, stride)
        # The feature voxel nearest the crop centre (local mode); ``anchor`` is where in the crop
        # the queried position goes: that feature voxel, or the crop's centre (crop mode).
        self.centre_feature = tuple(int(np.argmin(np.abs(p - (n - 1) / 2))) for p, n in zip(positions, crop))
        self.anchor = (np.array([p[f] for p, f in zip(positions, self.centre_feature)]) if mode == "local"
                       else (self.crop - 1) / 2)
        # First step: a quarter of the feature spacing (at least one voxel), halved each round.
        self.first = np.maximum(np.asarray(stride, float) / 4, 1.0)

    def _values(self, stored: np.ndarray, points: np.ndarray) -> np.ndarray:
        starts = np.floor(points - self.anchor + 0.5).astype(int)
        batch = np.stack([extract_box(stored, s, self.crop)[0] for s in starts])
        x = network_input(torch.from_numpy(batch).to(self.device).float())[:, None]
        with torch.inference_mode():
            out = self.net(x)
        centre = (slice(None), *self.centre_feature)
        out = out[centre] if self.mode == "local" else out.reshape(-1)
        return out.float().cpu().numpy()

    def limits(self, shape: Sequence[int], start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest position (per axis) a candidate starting at ``start`` may move to.

        Always inside the volume. With ``inside``, also where the queried crop stays inside
        the volume (the ``anchor`` from its low end, the rest of the crop to its high end),
        widened to ``start`` itself where the map's own position already needs padding, and
        along an axis where the volume is thinner than a crop, the whole axis (every crop pads).
        """
        top = np.asarray(shape, float) - 1
        if not self.inside:
            return np.zeros(3), top
        fits = np.asarray(shape) >= self.crop
        lo = np.where(fits, self.anchor, 0.0)
        hi = np.where(fits, top - (self.crop - 1 - self.anchor), top)
        return np.minimum(lo, start), np.maximum(hi, start)

    def __call__(self, stored: np.ndarray, index_kji: Sequence[float] | np.ndarray) -> tuple[np.ndarray, float]:
        """The refined position (continuous voxels) and the network's value there."""
        p = np.asarray(index_kji, float).copy()
        low, high = self.limits(stored.shape, p)
        h = self.first.copy()
        best = float(self._values(stored, p[None])[0])
        for _ in range(self.steps):
            steps = np.diag(h)
            around = self._values(stored, np.concatenate([p - steps, p + steps]))   # one batch of 6
            fm, fp = around[:3], around[3:]
            curv = fm - 2 * best + fp
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(curv < 0, 0.5 * (fm - fp) / curv, np.sign(fp - fm))
            t = np.clip(np.nan_to_num(t), -1.0, 1.0)
            moved = np.clip(p + t * h, low, high)
            value = float(self._values(stored, moved[None])[0])
            if value > best:                        # keep the move only where the network agrees
                p, best = moved, value
            h = h / 2
        return p, best
