"""The end-to-end scenario shared by the module's Slicer self-test and the slicer-core tests.

Small phantom ABUS volumes (:mod:`blcam.phantom`) go into the scene with awkward geometry on
purpose: a beam axis that is not aligned with RAS, a mirrored lateral axis and a tilted
parent transform on some cases (and anisotropic spacing where a test asks for it). Each case
keeps its true lesion mask, so "is this candidate inside a lesion?" has an exact answer.

The cohort uses 0.3 mm voxels and 12 mm cysts: a lesion then spans ~40 voxels, 2.5 feature
cells of the network (total stride 16), so the localisation check tests the pipeline rather
than the CAM's resolution. The settings train a tiny network in well under a minute on two
idle CPU cores; they exercise the plumbing, not the paper's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from blcam.phantom import LesionSpec, make_volume

from .ColorTable import isInfernoColorNode
from .NodeIO import arrayToMatrix, ijkToRAS, worldIJKToRAS

SHAPE = (64, 96, 96)                  # k, j, i
SPACING_IJK = (0.3, 0.3, 0.3)         # mm: lateral, depth, slice
LESION_KIND, LESION_DIAMETER_MM = "cyst", 12.0
LESION_PATIENTS, HEALTHY_PATIENTS = 10, 6
EXPORT_ARGS = ("--patch", "24", "56", "56", "--negatives-per-volume", "3", "--test-fraction", "0.25",
               "--folds", "2", "--seed", "0")
TRAIN_SETTINGS = dict(arch="resnet10", epochs=10, batchSize=8, learningRate=3e-3, device="cpu",
                      extraArgs=("--stem", "paper", "--widen", "0.25", "--crop", "16", "40", "40",
                                 "--workers", "0", "--resident", "on", "--seed", "0"))
DETECT_ARGS: tuple = ()
TIMEOUT_S = 600


@dataclass
class PhantomCase:
    patient: str
    label: str                        # 'lesion' | 'healthy'
    volume: object                    # vtkMRMLScalarVolumeNode
    centres: object | None            # vtkMRMLMarkupsFiducialNode (lesion cases)
    mask: np.ndarray                  # (k, j, i) lesion labels on the volume's grid
    centresRAS: np.ndarray            # (N, 3) world RAS of the true lesion centres
    heldOut: bool = False             # not added to the dataset: Detect runs on it


def ijkToRASMatrix(flipI: bool = False, origin=(12.0, -40.0, 7.5), spacingIJK=SPACING_IJK) -> np.ndarray:
    """IJK→RAS with the beam (j) running inferior, slices (k) anterior, optional lateral mirror."""
    m = np.eye(4)
    m[:3, :3] = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]) @ np.diag(spacingIJK) @ np.diag(
        [-1.0 if flipI else 1.0, 1.0, 1.0])
    m[:3, 3] = origin
    return m


def addTransform(scene, name: str = "probe pose", shift=(5.0, -3.0, 12.0), angleDeg: float = 20.0):
    """A linear parent transform: rotation about S plus a shift."""
    t = np.eye(4)
    a = np.deg2rad(angleDeg)
    t[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    t[:3, 3] = shift
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(arrayToMatrix(t))
    return node


def addPhantomCase(scene, name: str, seed: int, lesions: int = 0, flipI: bool = False, transform=None,
                   patient: str | None = None, shape=SHAPE, spacingIJK=SPACING_IJK) -> PhantomCase:
    """One phantom volume in ``scene`` (and a fiducial per lesion centre when it has lesions)."""
    rng = np.random.default_rng(seed)
    specs = [LesionSpec(LESION_KIND, LESION_DIAMETER_MM) for _ in range(lesions)]
    spacingKJI = tuple(reversed(spacingIJK))
    image, mask, found = make_volume(rng, shape, spacingKJI, lesions=specs or 0, hard_negatives=0, ribs=False)
    volume = slicer.util.addVolumeFromArray(image, ijkToRASMatrix(flipI, spacingIJK=spacingIJK), name=name)
    if transform is not None:
        volume.SetAndObserveTransformNodeID(transform.GetID())
    world = worldIJKToRAS(volume)
    points = np.array([(world @ np.r_[lesion.centroid_ijk, 1.0])[:3] for lesion in found]).reshape(-1, 3)
    centres = None
    if lesions:
        centres = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{name} centres")
        centres.CreateDefaultDisplayNodes()
        for n, p in enumerate(points):
            centres.AddControlPointWorld(p.tolist(), f"lesion-{n + 1}")
    return PhantomCase(patient or name, "lesion" if lesions else "healthy", volume, centres, mask, points)


def addCohort(scene) -> list[PhantomCase]:
    """The training cohort plus one held-out lesion case (tilted, mirrored) for Detect."""
    tilt = addTransform(scene)
    cases = [addPhantomCase(scene, f"L{n:02d}", 100 + n, lesions=1, flipI=n % 2 == 1,
                            transform=tilt if n % 3 == 0 else None, patient=f"L{n:02d}")
             for n in range(LESION_PATIENTS)]
    cases += [addPhantomCase(scene, f"H{n:02d}", 200 + n, patient=f"H{n:02d}") for n in range(HEALTHY_PATIENTS)]
    held = addPhantomCase(scene, "Held-out", 999, lesions=1, flipI=True, transform=tilt, patient="T01")
    held.heldOut = True
    return cases + [held]


def rasToIJK(volumeNode, pointsRAS) -> np.ndarray:
    """World RAS → continuous (i, j, k) of the volume (through its parent transform)."""
    pts = np.asarray(pointsRAS, float).reshape(-1, 3)
    return (np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(worldIJKToRAS(volumeNode)).T)[:, :3]


def candidatesInLesions(case: PhantomCase, candidatesNode, top: int | None = None) -> list[bool]:
    """For each (of the ``top`` first) candidate: does it fall in the true lesion mask?"""
    from .NodeIO import controlPointsWorldRAS
    points = controlPointsWorldRAS(candidatesNode)[:top]
    inside = []
    for i, j, k in np.round(rasToIJK(case.volume, points)).astype(int):
        ok = 0 <= k < case.mask.shape[0] and 0 <= j < case.mask.shape[1] and 0 <= i < case.mask.shape[2]
        inside.append(bool(ok and case.mask[k, j, i] > 0))
    return inside


def checkDetection(case: PhantomCase, result) -> list[str]:
    """What is wrong with a Detect result on ``case`` (empty list: all good)."""
    problems = []
    heat, volume = result.heatmap, case.volume
    if not np.allclose(ijkToRAS(heat), ijkToRAS(volume), atol=1e-9):
        problems.append("heatmap IJK-to-RAS differs from the input's")
    if heat.GetTransformNodeID() != volume.GetTransformNodeID():
        problems.append("heatmap is not under the input's parent transform")
    if heat.GetImageData().GetDimensions() != volume.GetImageData().GetDimensions():
        problems.append("heatmap dimensions differ from the input's")
    values = slicer.util.arrayFromVolume(heat)
    if values.min() < 0 or values.max() > 1:
        problems.append(f"heatmap outside [0, 1]: {values.min()}..{values.max()}")
    display = heat.GetDisplayNode()
    if not isInfernoColorNode(display.GetColorNode()):
        problems.append("heatmap does not use an Inferno colour table")
    if (display.GetWindowLevelMin(), display.GetWindowLevelMax()) != (0.0, 1.0) or not display.GetApplyThreshold():
        problems.append("heatmap display is not window 0-1 with the lower threshold on")
    count = result.candidates.GetNumberOfControlPoints()
    lesions = len(case.centresRAS)
    if count == 0:
        problems.append("no candidates")
    elif not all(candidatesInLesions(case, result.candidates, top=min(lesions, count))):
        problems.append(f"top candidates not inside true lesions: {candidatesInLesions(case, result.candidates)}")
    if result.table.GetNumberOfRows() != count:
        problems.append("candidate table rows differ from the candidates")
    return problems
