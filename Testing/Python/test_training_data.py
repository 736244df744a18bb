"""Crops and flips: uniform positions, the right axes, reproducible, same on both data paths."""

import numpy as np
import pytest
import torch

from _training_fixtures import (
    CROP,
    blob_dataset,
    one_thread,  # noqa: F401 (autouse)
)
from blcam.errors import BlcamError
from blcam.patches.dataset import PatchDataset, load_dataset
from blcam.training.data import (
    STREAM_TRAIN,
    PatchSource,
    centre_offset,
    crop_array,
    crop_gather,
    crop_ranges,
    crop_slices,
    full_ranges,
    keep_lesion_inside,
    max_offsets,
    prefers_channels_last,
    random_params,
    to_network,
)


def test_crop_positions_uniform_and_reproducible():
    patch, crop = (6, 9, 7), (4, 5, 5)           # 3 × 5 × 3 = 45 possible positions
    idx = np.arange(9000)
    off, flips = random_params(7, STREAM_TRAIN, 3, idx, patch, crop, 0.5)
    assert off.min(0).tolist() == [0, 0, 0] and off.max(0).tolist() == [2, 4, 2]
    counts = np.bincount(np.ravel_multi_index(off.T, (3, 5, 3)), minlength=45)
    expected = len(idx) / 45
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 80, chi2                        # 44 dof: p ≈ 1e-3 threshold; a biased sampler fails
    assert abs(flips.mean(0) - 0.5).max() < 0.03
    again = random_params(7, STREAM_TRAIN, 3, idx[::-1], patch, crop, 0.5)
    assert np.array_equal(again[0][::-1], off)    # per-patch: independent of order/batching
    other = random_params(7, STREAM_TRAIN, 4, idx, patch, crop, 0.5)
    assert not np.array_equal(other[0], off)      # a new epoch, new crops


def test_flips_are_along_k_and_i_never_j():
    patch = np.arange(6 * 8 * 9, dtype=np.int64).reshape(6, 8, 9)
    for fk in (False, True):
        for fi in (False, True):
            c = crop_array(patch, (1, 2, 3), (fk, fi), (4, 5, 5))
            ref = patch[1:5, 2:7, 3:8]
            ref = ref[::-1] if fk else ref
            ref = ref[:, :, ::-1] if fi else ref
            assert np.array_equal(c, ref)
            assert (np.diff(c, axis=1) > 0).all()     # j (beam direction) keeps its order
            for cut in (crop_gather, crop_slices):       # the GPU kernel and the CPU path
                g = cut(torch.from_numpy(patch)[None], torch.tensor([0]), torch.tensor([[1, 2, 3]]),
                        torch.tensor([[fk, fi]]), (4, 5, 5))[0]
                assert np.array_equal(g.numpy(), c)


def test_centre_crop_keeps_the_lesion_centre_voxel():
    for patch, crop in [((28, 280, 280), (16, 160, 160)), ((27, 281, 280), (15, 160, 161)), ((12, 48, 48), CROP)]:
        off = centre_offset(patch, crop)
        assert (off + np.asarray(crop) // 2 == np.asarray(patch) // 2).all()
    with pytest.raises(BlcamError, match="does not fit"):
        max_offsets((12, 48, 48), (16, 32, 32))


def _record(start, volume):
    return {"start_k": start[0], "start_j": start[1], "start_i": start[2],
            "volume_k": volume[0], "volume_j": volume[1], "volume_i": volume[2]}


def test_crops_stay_inside_the_volume_part_of_padded_patches():
    """A patch reaching past its volume's border: crops avoid the padding where the in-volume
    part is as large as a crop, and cover all of it (least padding) where it is not."""
    ds = PatchDataset(None, {"settings": {"patch": [12, 48, 48]}}, [])
    crop = (8, 32, 32)
    records = [_record((4, 10, 10), (40, 90, 90)),      # fully inside
               _record((-3, -10, 60), (40, 90, 90)),    # k [3, 12) and j [10, 48) inside; i ends at 30
               _record((-5, 0, 0), (40, 90, 90)),       # k [5, 12): 7 slices, thinner than the crop
               _record((0, 0, 0), (40, 90, 90)),
               {"start_k": -5, "start_j": 0, "start_i": 0}]   # an older export: no volume shape
    ranges = crop_ranges(ds, records, crop)
    assert ranges[0].tolist() == [[0, 0, 0], [4, 16, 16]]
    assert ranges[1].tolist() == [[3, 10, 0], [4, 16, 0]]
    assert ranges[2].tolist() == [[4, 0, 0], [4, 16, 16]]
    assert ranges[4].tolist() == [[0, 0, 0], [4, 16, 16]]
    idx = np.arange(len(records))
    off = np.stack([random_params(3, STREAM_TRAIN, e, idx, ds.patch_size, crop, 0.5, ranges)[0]
                    for e in range(400)], 1)                              # (record, epoch, 3)
    for n, rec in enumerate(records[:4]):
        o = off[n]
        assert (o.min(0) == ranges[n, 0]).all() and (o.max(0) == ranges[n, 1]).all()   # every allowed start
        lo, hi = ds.valid_box(rec)
        centre = np.asarray(ds.patch_size) // 2
        assert ((o <= centre) & (o + crop > centre)).all()      # every crop still holds the lesion centre
        padded = ((o < lo) | (o + crop > hi)).any(1)
        assert padded.mean() == (0.0 if (hi - lo >= crop).all() else 1.0)
    plain, _ = random_params(3, STREAM_TRAIN, 1, idx, ds.patch_size, crop, 0.5)   # whole-patch ranges draw the same
    assert (plain == random_params(3, STREAM_TRAIN, 1, idx, ds.patch_size, crop, 0.5, ranges[[0] * 5])[0]).all()


def test_resident_and_loader_paths_give_identical_batches(tmp_path_factory):
    ds = load_dataset(blob_dataset(tmp_path_factory))
    recs = ds.select(split="train")
    order = np.random.default_rng(0).permutation(len(recs))[:20]
    off, flips = random_params(0, STREAM_TRAIN, 1, order, ds.patch_size, CROP, 0.5)
    dev = torch.device("cpu")
    resident = PatchSource(ds, recs, CROP, dev, resident="on")
    loader = PatchSource(ds, recs, CROP, dev, resident="off", workers=1)
    assert resident.resident and not loader.resident
    for _ in range(2):                            # second pass: persistent worker, new keys
        a = list(resident.batches(order, off, flips, 6))
        b = list(loader.batches(order, off, flips, 6))
        assert [len(x) for x, _, _ in a] == [6, 6, 6, 2]
        for (xa, ya, ra), (xb, yb, rb) in zip(a, b, strict=True):
            assert xa.dtype == torch.uint8 and xa.shape[1:] == CROP
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ra, rb)
    gpu_kernel = crop_gather(resident.bank, torch.as_tensor(order[:6]), torch.as_tensor(off[:6]),
                             torch.as_tensor(flips[:6]), CROP)
    assert torch.equal(gpu_kernel, a[0][0])
    full = next(resident.batches(order[:2], np.zeros((2, 3), int), np.zeros((2, 2), bool), 2, crop=ds.patch_size))
    assert torch.equal(full[0][0], torch.from_numpy(ds.load(recs[order[0]], mmap=False)))


def test_patches_load_from_many_threads_at_once(tmp_path):
    """The training bank loads patches on a thread pool; each load must give its own array
    (headers are parsed under a lock: CPython 3.11 < 3.11.8 races in ast.literal_eval)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from blcam.patches.dataset import PatchDataset
    arrays = {f"p{n}.npy": np.random.default_rng(n).random((6, 8, 10)).astype(np.float32) for n in range(16)}
    for name, arr in arrays.items():
        np.save(tmp_path / name, arr)
    ds = PatchDataset(tmp_path, {"settings": {"patch": [6, 8, 10]}}, [])
    names = list(arrays) * 25
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda n: ds.load_raw({"file": n}, mmap=False), names))
    assert all(np.array_equal(a, arrays[n]) for a, n in zip(loaded, names, strict=True))


def test_channels_last_changes_only_the_layout_of_a_training_step():
    """The CPU trains in channels_last_3d (1.4× faster, bench/train_layout.py): the same step in
    both layouts gives the same loss and gradients to float32 rounding. Bound: each of the
    network's ~12 accumulation stages sums at most 27 × 64 products, so a reordered sum differs
    by at most that many ulps (2⁻²³ each) relative to the sum of magnitudes, compounded per stage."""
    from blcam.cam.local_logits import LocalLogitNet
    from blcam.model import build_model

    assert prefers_channels_last(torch.device("cpu")) and prefers_channels_last(torch.device("cuda"))
    assert not prefers_channels_last(torch.device("mps"))
    x8 = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32), dtype=np.uint8))
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = build_model("resnet10", "paper", 0.25, 16)
        if channels_last:
            net = net.to(memory_format=torch.channels_last_3d)
        x = to_network(x8, channels_last)
        local = LocalLogitNet(net)(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(local, torch.zeros_like(local))
        loss.backward()
        results.append((local.detach(), torch.cat([p.grad.reshape(-1) for p in net.parameters()])))
    (a, ga), (b, gb) = results
    rel = 12 * 27 * 64 * 2.0 ** -23
    assert torch.allclose(a, b, rtol=rel, atol=rel * float(a.abs().max()))
    assert float((ga - gb).norm()) <= rel * float(ga.norm()) * 12


def test_lesion_margin_keeps_the_centre_inside_positive_crops_only():
    patch, crop = (28, 64, 96), (16, 32, 48)
    labels = [1, 0, 1]
    full = full_ranges(3, patch, crop)
    ranges = keep_lesion_inside(full, labels, patch, crop, 0.25)
    assert np.array_equal(ranges[1], full[1])                  # negatives: anywhere, as before
    many = keep_lesion_inside(full_ranges(4000, patch, crop), [1] * 4000, patch, crop, 0.25)
    off, _ = random_params(3, STREAM_TRAIN, 1, np.arange(4000), patch, crop, 0.5, many)
    pos = np.asarray(patch) // 2 - off                          # lesion centre in the crop
    margin = np.floor(0.25 * np.asarray(crop))
    assert (pos >= margin).all() and (pos <= np.asarray(crop) - 1 - margin).all()
    assert np.array_equal(pos.min(0), margin) and np.array_equal(pos.max(0), np.asarray(crop) - 1 - margin)
    unchanged = keep_lesion_inside(full, labels, patch, crop, 0.0)
    assert np.array_equal(unchanged, full)
    # A lesion at a volume border: its in-volume range cannot honour the margin, so the
    # allowed start nearest the centred crop is kept (the crop never reaches into padding).
    border = full.copy()
    border[0, :, 2] = (0, 2)                                    # only starts 0..2 along i stay inside
    narrowed = keep_lesion_inside(border, labels, patch, crop, 0.25)
    assert narrowed[0, :, 2].tolist() == [2, 2]
