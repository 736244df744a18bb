"""MRML nodes to files and back, in the world frame the CLI sees.

The CLI knows nothing about Slicer transforms, so a volume under a (linear) parent transform
is written with that transform *hardened* into its geometry: the file holds where the voxels
really are. Results come back in the same world frame, and :mod:`.Results` puts them under
the input's parent transform again, so they move with the input when the transform changes.

Volumes are written through :func:`blcam.io.volume.write_volume` (SimpleITK, which Slicer
ships) from the voxel array and the world IJK-to-RAS matrix; that keeps the array order
exactly as Slicer holds it, so the heatmap can be given the input's exact IJK-to-RAS matrix
on the way back (Slicer would otherwise flip the k axis of a left-handed file on load).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from blcam.errors import BlcamError
from blcam.io.points import write_markups
from blcam.io.volume import Geometry, write_volume

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def matrixToArray(matrix: vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def arrayToMatrix(array) -> vtkMatrix4x4:
    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def parentToWorld(node) -> np.ndarray:
    """4×4 parent-transform-to-world of a transformable node (identity without a parent)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise BlcamError(f"'{node.GetName()}' is under the non-linear transform '{parent.GetName()}'; "
                         "harden it (Data module, right-click → Harden transform) before running")
    matrix = vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return matrixToArray(matrix)


def ijkToRAS(volumeNode) -> np.ndarray:
    """The volume's own (local) IJK-to-RAS matrix."""
    matrix = vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def worldIJKToRAS(volumeNode) -> np.ndarray:
    """IJK to world RAS: the parent transform hardened into the geometry."""
    return parentToWorld(volumeNode) @ ijkToRAS(volumeNode)


def geometryOf(volumeNode, ijkToRASMatrix: np.ndarray | None = None) -> Geometry:
    """The LPS :class:`Geometry` of ``volumeNode`` (world frame unless a matrix is given)."""
    m = RAS_TO_LPS @ (worldIJKToRAS(volumeNode) if ijkToRASMatrix is None else ijkToRASMatrix)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise BlcamError(f"'{volumeNode.GetName()}' has a degenerate IJK-to-RAS matrix")
    direction = m[:3, :3] / spacing
    dims = volumeNode.GetImageData().GetDimensions()
    return Geometry(tuple(int(d) for d in dims), tuple(float(s) for s in spacing),
                    tuple(float(o) for o in m[:3, 3]), tuple(float(d) for d in direction.ravel()))


def ijkToRASOf(geometry: Geometry) -> np.ndarray:
    """The IJK-to-RAS matrix of an LPS :class:`Geometry` (a volume file's): the inverse of
    :func:`geometryOf`, so a node built from a file's array sits exactly on the file's grid."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(geometry.direction, float).reshape(3, 3) * np.asarray(geometry.spacing, float)
    m[:3, 3] = geometry.origin
    return RAS_TO_LPS @ m                      # diag(-1, -1, 1, 1) is its own inverse


def writeVolumeNode(volumeNode, path, compress: bool = True) -> Geometry:
    """Write a scalar volume (world geometry) to ``path``; returns the geometry written.

    ``compress=False`` for throw-away inputs of a background job: writing a raw NRRD of a
    full ABUS volume takes a fraction of a second, compressing it several seconds of frozen GUI."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise BlcamError("no input volume selected, or the volume has no voxels")
    if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
        raise BlcamError(f"'{volumeNode.GetName()}' is a colour/vector volume; a greyscale volume is needed")
    geometry = geometryOf(volumeNode)
    write_volume(path, slicer.util.arrayFromVolume(volumeNode), geometry, compress=compress)
    return geometry


def controlPointsWorldRAS(markupsNode) -> np.ndarray:
    """Defined control points of a markups node, world RAS, ``(N, 3)``."""
    points = []
    if markupsNode is None:
        return np.zeros((0, 3))
    for n in range(markupsNode.GetNumberOfControlPoints()):
        if markupsNode.GetNthControlPointPositionStatus(n) != markupsNode.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPositionWorld(n, position)
        points.append(position)
    return np.asarray(points, float).reshape(-1, 3)


def writeCentres(markupsNode, path) -> np.ndarray:
    """Write the node's lesion centres as an LPS ``.mrk.json``; returns them in LPS."""
    ras = controlPointsWorldRAS(markupsNode)
    return writePointsRAS(ras, path, [markupsNode.GetNthControlPointLabel(n) or f"lesion-{n + 1}"
                                      for n in range(len(ras))])


def writePointsRAS(pointsRAS: np.ndarray, path, labels: list[str]) -> np.ndarray:
    """Write world RAS points as an LPS ``.mrk.json`` (what the CLI reads); returns them in LPS."""
    lps = np.asarray(pointsRAS, float).reshape(-1, 3) * RAS_TO_LPS.diagonal()[:3]
    write_markups(path, lps, labels=labels)
    return lps


def readMarkupsJson(path, scene, name: str):
    """Load a ``.mrk.json`` (LPS or RAS, as declared) into a new fiducial node via its storage node."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    storage.SetFileName(str(Path(path)))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise BlcamError(f"{path}: cannot read this markups file")
    node.SetName(name)
    return node


def readVolumeFile(path, scene, name: str):
    """Load a scalar volume file into a new node via its storage node (Slicer's own reader:
    a left-handed file gets its k axis flipped as when the user loads it; positions are kept)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(Path(path)))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not Path(path).is_file() or not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise BlcamError(f"{path}: cannot read this volume file")
    node.SetName(name)
    node.CreateDefaultDisplayNodes()
    return node
