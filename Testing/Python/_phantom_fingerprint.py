"""A phantom folder's fingerprint that is the same on every CPU, for "output unchanged" tests.

A SHA-256 over the B-mode voxels is not: the image is formed in float32 (speckle, filters,
log compression) and rounded to uint8 at the end, and numpy dispatches its float32 kernels
per instruction set (AVX2, AVX-512, ...), which may differ in the last bit. A last-bit
difference changes a voxel only where the value lies within that bit of a rounding
boundary, and then by one grey level: forcing numpy's baseline kernels on an AVX2 machine
changed 3 in a million voxels of the default phantom, each by 1, and nothing else (masks,
tables, markups and geometry stayed byte-identical, as they come from float64 geometry and
the random streams, not from SIMD float32 kernels).

So the fingerprint keeps a SHA-256 over everything but the B-mode voxels, and for each
B-mode volume the mean grey value of each block of a coarse grid (blocks of at least
:data:`BLOCK` voxels). Two folders match when
the digest is equal and no block mean differs by more than :data:`BLOCK_MEAN_TOLERANCE`:
1/256 of a grey level, i.e. up to one voxel in 256 of a block off by one level, far above
the rounding flips (3e-6) and far below what a changed phantom does (a different random
stream or model moves block means by whole grey levels).

Regenerate the stored fingerprints only when the phantom is meant to change:
``python Testing/Python/_phantom_fingerprint.py`` (after checking the reason).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

STORED = Path(__file__).with_name("phantom_fingerprints.json")
BLOCK_MEAN_TOLERANCE = 1.0 / 256
BLOCK = (8, 32, 32)                # voxels per block (k, j, i): 8192, so the tolerance allows 32 flips;
                                   # a thinner volume gets fewer, larger blocks (at least one)


def _is_bmode(rel: Path) -> bool:
    return rel.parts[0] == "volumes" and rel.suffix == ".nrrd"


def _block_means(image: np.ndarray) -> list[float]:
    means = []
    grid = [max(1, n // b) for n, b in zip(image.shape, BLOCK, strict=True)]
    for slab in np.array_split(image.astype(np.float64), grid[0], axis=0):
        for row in np.array_split(slab, grid[1], axis=1):
            for block in np.array_split(row, grid[2], axis=2):
                means.append(round(float(block.mean()), 5))
    return means


def fingerprint(folder: Path) -> dict:
    """``{"digest": sha256 of all but the B-mode voxels, "blocks": {file: block means}}``."""
    h = hashlib.sha256()
    blocks = {}
    for p in sorted(Path(folder).rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(folder)
        h.update(rel.as_posix().encode())
        if p.suffix == ".nrrd":      # by voxels and geometry, not by gzip bytes (zlib-dependent)
            img = sitk.ReadImage(str(p))
            h.update(repr((img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection(),
                           img.GetPixelIDTypeAsString())).encode())
            voxels = sitk.GetArrayViewFromImage(img)
            if _is_bmode(rel):
                blocks[rel.as_posix()] = _block_means(voxels)
            else:
                h.update(voxels.tobytes())
        elif p.name == "phantom.json":   # without the generator's version line
            meta = json.loads(p.read_text(encoding="utf-8"))
            meta.pop("generator")
            h.update(json.dumps(meta, sort_keys=True).encode())
        else:
            h.update(p.read_bytes())
    return {"digest": h.hexdigest(), "blocks": blocks}


def mismatches(got: dict, expected: dict) -> list[str]:
    """What differs beyond the rounding tolerance (empty when the folders match)."""
    out = []
    if got["digest"] != expected["digest"]:
        out.append(f"digest of masks, tables, markups and geometry: {got['digest']} != {expected['digest']}")
    if sorted(got["blocks"]) != sorted(expected["blocks"]):
        out.append(f"B-mode volumes {sorted(got['blocks'])} != {sorted(expected['blocks'])}")
        return out
    for name, means in got["blocks"].items():
        diff = np.abs(np.asarray(means) - np.asarray(expected["blocks"][name]))
        if len(means) != len(expected["blocks"][name]) or diff.max() > BLOCK_MEAN_TOLERANCE:
            out.append(f"{name}: block means differ by up to {diff.max():.4f} grey levels "
                       f"(tolerance {BLOCK_MEAN_TOLERANCE:.4f})")
    return out


def stored(name: str) -> dict:
    return json.loads(STORED.read_text(encoding="utf-8"))[name]


def _write_stored() -> None:
    """Recompute the stored fingerprints with the current code (see the module docstring)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "BreastLesionCAM"))
    from blcam.cli import main
    from blcam.phantom import make_cohort

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        default, small = Path(tmp, "default"), Path(tmp, "small")
        main(["phantom", str(default), "--patients", "1", "--no-progress"])
        out["default_cli"] = fingerprint(default)
        make_cohort(small, patients=3, seed=5, shape=(8, 48, 48), spacing=(1, 0.4, 0.4), progress=False,
                    direction=None)
        out["small_no_direction"] = fingerprint(small)
    STORED.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {STORED}")


if __name__ == "__main__":
    _write_stored()
