"""How far apart does the phantom draw its oval masses and its fat lobules? A separability probe.

Every Detect experiment of issue 10 found cysts and irregular masses and missed the oval
masses. This script asks whether that is the detector's fault or the data's: it simulates
many demo-sized volumes (each with one oval mass and several look-alikes), takes the
objects themselves (so position is not the problem) and measures how well the best tools at
hand tell an oval mass from a fat lobule, and from a random place in the gland:

* **oracle features**: grey-level statistics inside, on the rim of and around the object and
  behind it, computed with the object's *true* ellipsoid (no segmentation error), one AUC per
  feature and a cross-validated logistic regression on all of them;
* **a small 3D CNN** trained on thousands of training-crop-sized crops centred (±2 voxels) on
  the objects: far more oval masses than any cohort holds, so a low AUC is not scarcity.

If an oracle-fed classifier cannot separate the two kinds, no detector trained on this
phantom can put an oval mass above the fat lobules of its volume, and the pointing game is
bounded by the share of the other kinds. Prints one table; ``--json`` saves it.

    python bench/oval_separability.py --volumes 1500 --json /tmp/ovals.json
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool

import numpy as np
import torch
from torch import nn

from blcam.intensity import network_input, normalise_volume
from blcam.patches.extract import extract_box
from blcam.phantom.volume import simulate_volume

# The demo's and the validation cohorts' volumes and the demo's training crop, in mm (k, j, i)
FIELD_MM, CROP_MM, DEMO_SPACING = (24.0, 48.0, 80.0), (8.0, 16.0, 24.0), (0.5, 0.5, 0.5)


def set_grid(spacing_kji) -> None:
    """Simulate on this voxel grid (``--spacing``): the same field of view and crop in mm,
    so only the resolution at which the phantom draws the objects changes. Sets ``SPACING``,
    ``SHAPE`` (48×96×160 at the demo's 0.5 mm) and ``CROP`` (16×32×48 there)."""
    global SHAPE, SPACING, CROP
    SPACING = tuple(float(v) for v in spacing_kji)
    SHAPE = tuple(int(round(f / s)) for f, s in zip(FIELD_MM, SPACING, strict=True))
    CROP = tuple(int(round(c / s)) for c, s in zip(CROP_MM, SPACING, strict=True))


set_grid(DEMO_SPACING)

FEATURES = ("inside", "inside_std", "rim", "around", "contrast", "rim_contrast", "behind")


def rotated_offsets(centre, theta, shape, half_mm):
    """Offsets (mm) of a box's voxels from ``centre`` in the object's frame (u lateral, v
    elevational, dj along the beam) and the box slices; like ``ellipsoid_distance``."""
    sl, off = [], []
    for ax in range(3):
        h = half_mm[ax] / SPACING[ax]
        lo, hi = int(max(0, np.floor(centre[ax] - h))), int(min(shape[ax], np.ceil(centre[ax] + h) + 1))
        sl.append(slice(lo, hi))
        off.append((np.arange(lo, hi) - centre[ax]) * SPACING[ax])
    dk, dj, di = np.ix_(*off)
    c, s = np.cos(theta), np.sin(theta)
    return tuple(sl), c * di + s * dk, c * dk - s * di, dj


def object_features(image: np.ndarray, ell) -> dict:
    """Grey-level statistics of one object from its true ellipsoid (normalised radius r)."""
    ak, aj, ai = ell.semi_mm
    reach = max(ell.semi_mm) * 2.2 + 2.0
    sl, u, v, dj = rotated_offsets(ell.center_kji, ell.theta, image.shape, (reach, reach + 6.0, reach))
    img = image[sl].astype(np.float32)
    r = np.sqrt((u / ai) ** 2 + (v / ak) ** 2 + (dj / aj) ** 2)
    r = np.broadcast_to(r, img.shape)
    inside, rim, around = img[r < 0.7], img[(r > 0.85) & (r < 1.15)], img[(r > 1.4) & (r < 2.0)]
    lateral = np.broadcast_to((u / ai) ** 2 + (v / ak) ** 2, img.shape)
    dj_b = np.broadcast_to(dj, img.shape)
    below = img[(lateral < 0.36) & (dj_b > aj * 1.2) & (dj_b < aj * 1.2 + 4.0)]
    beside = img[(lateral > 2.25) & (lateral < 6.25) & (dj_b > aj * 1.2) & (dj_b < aj * 1.2 + 4.0)]
    f = dict(inside=inside.mean(), inside_std=inside.std(), rim=rim.mean(), around=around.mean())
    f["contrast"] = f["inside"] - f["around"]
    f["rim_contrast"] = f["rim"] - 0.5 * (f["inside"] + f["around"])
    f["behind"] = (below.mean() - beside.mean()) if below.size and beside.size else 0.0
    return {k: float(x) for k, x in f.items()}


def crop_at(image: np.ndarray, centre) -> np.ndarray:
    """A training-sized crop centred on ``centre`` (zero-padded at the volume's faces)."""
    start = np.round(np.asarray(centre, float)).astype(int) - np.asarray(CROP) // 2
    return extract_box(image, start, CROP)[0]


def gland_place(rng, vol, objects) -> tuple | None:
    """A random centre in the gland zone, away from every lesion and look-alike."""
    s = vol.surfaces
    for _ in range(50):
        k, i = rng.uniform(4, SHAPE[0] - 4), rng.uniform(8, SHAPE[2] - 8)
        top = float(s["fat_bottom"][int(k), 0, int(i)]) / SPACING[1]
        bottom = float(s["gland_bottom"][int(k), 0, int(i)]) / SPACING[1]
        if bottom - top < 4:
            continue
        c = np.array([k, rng.uniform(top + 2, bottom - 2), i])
        if all(np.linalg.norm((c - o.center_kji) * SPACING) > max(o.ellipsoid.semi_mm) + 6.0 for o in objects):
            return tuple(c)
    return None


def simulate(seed: int) -> list[tuple[str, dict, np.ndarray]]:
    """One volume with one oval mass and 3-5 look-alikes: (kind, features, crop) per object."""
    rng = np.random.default_rng(seed)
    vol = simulate_volume(rng, SHAPE, SPACING, lesions=["oval"], hard_negatives=int(rng.integers(3, 6)))
    image = normalise_volume(vol.image)
    rows = []
    objects = list(vol.lesions) + list(vol.mimics)
    for obj in objects:
        if obj.kind in ("oval", "fat_lobule"):
            jitter = rng.integers(-2, 3, 3)
            rows.append((obj.kind, object_features(image, obj.ellipsoid),
                         crop_at(image, np.asarray(obj.center_kji) + jitter)))
    place = gland_place(rng, vol, objects)
    if place is not None:
        rows.append(("gland", {}, crop_at(image, place)))
    return rows


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> nn.Linear:
    """An L2-regularised logistic regression (LBFGS) on already standardised features."""
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    lin = nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(lin(xt)[:, 0], yt) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lin


def logistic_cv(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUC of a logistic regression on standardised features."""
    order = np.random.default_rng(seed).permutation(len(y))
    scores = np.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        lin = fit_logistic((x[train] - mu) / sd, y[train])
        with torch.no_grad():
            scores[test] = lin(torch.tensor((x[test] - mu) / sd, dtype=torch.float32))[:, 0].numpy()
    return auc(scores, y)


def small_cnn() -> nn.Module:
    def block(i, o):
        return [nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(1, 16), nn.MaxPool3d((1, 2, 2)), *block(16, 32), nn.MaxPool3d(2),
                         *block(32, 64), nn.MaxPool3d(2), *block(64, 64),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, 1))


def split(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed 30 % / 70 % test / training split of ``y``'s indices."""
    order = np.random.default_rng(seed).permutation(len(y))
    return order[: len(y) * 3 // 10], order[len(y) * 3 // 10:]


def cnn_auc(crops: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
            train: np.ndarray | None = None, steps: int | None = None) -> tuple[float, float]:
    """Held-out (30 %) and training AUC of a small 3D CNN trained with the demo's flips;
    ``train`` narrows the training indices and ``steps`` fixes the number of batches."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    test, full = split(y, seed)
    train = full if train is None else train
    x = network_input(torch.from_numpy(crops).float())[:, None]
    yt = torch.from_numpy(y).float()
    net = small_cnn()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    steps = steps if steps is not None else epochs * max(1, len(train) // 32)
    net.train()
    for _ in range(steps):
        b = np.random.choice(train, min(32, len(train)), replace=False)
        xb = x[b]
        if np.random.rand() < 0.5:
            xb = xb.flip(2)
        if np.random.rand() < 0.5:
            xb = xb.flip(4)
        loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], yt[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        s = torch.cat([net(x[b])[:, 0] for b in np.array_split(np.arange(len(y)), max(1, len(y) // 64))]).numpy()
    return auc(s[test], y[test]), auc(s[train], y[train])


def learning_curve(crops: np.ndarray, kinds: np.ndarray, sizes: list[int], epochs: int) -> dict:
    """Held-out AUC of oval mass vs gland when only ``n`` oval masses (and every training
    gland crop) are seen, for the same number of steps: is scarcity what the cohorts lack?"""
    sel = (kinds == "oval") | (kinds == "gland")
    crops, y = crops[sel], (kinds[sel] == "oval").astype(int)
    _, full = split(y)
    ovals, gland = full[y[full] == 1], full[y[full] == 0]
    steps = epochs * max(1, len(full) // 32)
    out = {}
    print("\n| oval masses seen in training (with all gland crops) | held-out AUC oval vs gland |")
    print("| --- | --- |")
    for n in sizes:
        held, _ = cnn_auc(crops, y, epochs, train=np.concatenate([ovals[:n], gland]), steps=steps)
        out[n] = held
        print(f"| {n} | {held:.3f} |")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volumes", type=int, default=1500)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--curve", type=int, nargs="*", default=[],
                   help="oval-mass counts for a learning curve (oval vs gland), e.g. 25 100 400")
    p.add_argument("--no-pairs", action="store_true", help="skip the three pairwise CNN rows")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SK", "SJ", "SI"), default=DEMO_SPACING,
                   help="voxel size (mm, k j i) the volumes are drawn at; field of view and crop stay the same "
                   "in mm (default: the demo's 0.5 0.5 0.5)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    set_grid(args.spacing)
    torch.set_num_threads(args.jobs)
    t0 = time.perf_counter()
    with Pool(args.jobs) as pool:
        rows = [r for rs in pool.map(simulate, range(args.seed, args.seed + args.volumes), chunksize=20) for r in rs]
    t_sim = time.perf_counter() - t0
    kinds = np.array([r[0] for r in rows])
    crops = np.stack([r[2] for r in rows])
    counts = {k: int((kinds == k).sum()) for k in ("oval", "fat_lobule", "gland")}
    print(f"{args.volumes} volumes of {' x '.join(map(str, SHAPE))} voxels at {' x '.join(f'{v:g}' for v in SPACING)} "
          f"mm in {t_sim:.0f} s: {counts}")
    obj = kinds != "gland"
    feats = np.array([[r[1][f] for f in FEATURES] for r in rows if r[0] != "gland"])
    y_obj = (kinds[obj] == "oval").astype(int)
    result: dict = {"counts": counts, "feature_auc": {}, "volumes": args.volumes, "seed": args.seed,
                    "spacing_kji": list(SPACING)}
    print("\n| oracle feature (true ellipsoid) | mean oval | mean fat lobule | AUC oval vs fat lobule |")
    print("| --- | --- | --- | --- |")
    for n, f in enumerate(FEATURES):
        a = auc(feats[:, n], y_obj)
        result["feature_auc"][f] = a
        print(f"| {f} | {feats[y_obj == 1, n].mean():.1f} | {feats[y_obj == 0, n].mean():.1f} | {max(a, 1 - a):.3f} |")
    result["logistic_cv_auc"] = logistic_cv(feats, y_obj)
    print(f"\nlogistic regression on all {len(FEATURES)} oracle features, 5-fold CV AUC: "
          f"{result['logistic_cv_auc']:.3f}")
    print("\n| small 3D CNN on centred crops | held-out AUC | training AUC | crops |")
    print("| --- | --- | --- | --- |")
    pairs = (("oval vs fat lobule", "oval", "fat_lobule"), ("oval vs gland", "oval", "gland"),
             ("fat lobule vs gland", "fat_lobule", "gland"))
    for name, a, b in () if args.no_pairs else pairs:
        sel = (kinds == a) | (kinds == b)
        t1 = time.perf_counter()
        held, fit = cnn_auc(crops[sel], (kinds[sel] == a).astype(int), args.epochs)
        result[f"cnn {name}"] = {"held_out_auc": held, "training_auc": fit, "seconds": time.perf_counter() - t1}
        print(f"| {name} | {held:.3f} | {fit:.3f} | {int(sel.sum())} |")
    if args.curve:
        result["learning_curve"] = learning_curve(crops, kinds, args.curve, args.epochs)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
