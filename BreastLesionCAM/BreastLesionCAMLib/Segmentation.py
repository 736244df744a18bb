"""A Detect candidate's lesion as a Segmentation: edit it in the Segment Editor, measure it for a report.

:func:`segmentCandidate` cuts the region around one candidate out of the heatmap (and the
image, to outline a hypoechoic lesion) with :func:`blcam.segment.segment_candidate`, whose
docstring gives the rule, and puts it in the scene:

* one segmentation node per input volume, tagged like Detect's result nodes (so segmenting
  again reuses it), under the input's parent transform, with the input as its reference
  geometry: the Segment Editor edits it voxel for voxel on the input's grid;
* one segment per candidate, named after it (``lesion-1``, ...); segmenting a candidate again
  replaces its segment's voxels. The binary labelmap goes in through a temporary labelmap
  volume cropped to the region's box: the input's own lattice shifted by whole voxels, so
  nothing is resampled;
* the measurements (volume, principal diameters in mm, equivalent diameter, the thresholds
  used) as segment tags, which a ``.seg.nrrd`` keeps, and as a table node with one row per
  measured segment, for the report. They describe the region as it was cut: after editing it,
  Slicer's Segment Statistics module measures the edited segment.

``slicer.modules`` does not exist without the Slicer application, but the Segmentations
module's logic class does (in Slicer and in ``slicer-core``): its static methods do the import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
from vtkmodules.vtkCommonCore import reference, vtkDoubleArray, vtkStringArray

from blcam.errors import BlcamError

from .NodeIO import RAS_TO_LPS, arrayToMatrix, geometryOf, ijkToRAS
from .Results import SOURCE_ATTRIBUTE, _resultNode

TAG = "BreastLesionCAM."                     # prefix of the segment tags written here
MEASURED = (("VolumeMm3", "Volume (mm³)"), ("Diameter1Mm", "Diameter 1 (mm)"), ("Diameter2Mm", "Diameter 2 (mm)"),
            ("Diameter3Mm", "Diameter 3 (mm)"), ("EquivalentDiameterMm", "Equivalent diameter (mm)"),
            ("HeatThreshold", "Heat threshold"))
SEGMENT_COLOR = (0.2, 0.9, 0.3)              # green: apart from the inferno heatmap and cyan candidates


@dataclass
class CandidateSegment:
    segmentation: object     # vtkMRMLSegmentationNode
    segmentId: str
    region: object           # blcam.segment.LesionRegion (mask, thresholds, measurements)
    table: object            # vtkMRMLTableNode

    def describe(self) -> str:
        """One line for the panel's log."""
        m = self.region.measurements
        name = self.segmentation.GetSegmentation().GetSegment(self.segmentId).GetName()
        how = "outlined by the image" if self.region.refined else "heatmap only (not darker than its surroundings)"
        capped = "; reached the size cap" if self.region.capped else ""
        return (f"{name}: {m.volume_mm3:.0f} mm³, diameters " + " × ".join(f"{d:.1f}" for d in m.diameters_mm)
                + f" mm ({how}{capped})")


def segmentCandidate(heatmapNode, candidatesNode, index: int, volumeNode=None, rule=None) -> CandidateSegment:
    """Segment candidate ``index`` of ``candidatesNode`` from ``heatmapNode`` (Detect's, on the
    input's grid). ``volumeNode``: the input (default: the volume Detect ran on); ``rule``: a
    :class:`blcam.segment.RegionRule` (default: the documented defaults)."""
    from blcam.segment import RegionRule, segment_candidate  # needs scipy: installed after the module loads

    if heatmapNode is None or candidatesNode is None:
        raise BlcamError("no Detect result to segment: run Detect (or load its results) first")
    scene = heatmapNode.GetScene()
    volumeNode = volumeNode or scene.GetNodeByID(heatmapNode.GetAttribute(SOURCE_ATTRIBUTE) or "")
    if volumeNode is None:
        raise BlcamError(f"'{heatmapNode.GetName()}': the volume it was computed on is not in the scene")
    checkSameGrid(volumeNode, heatmapNode)
    count = candidatesNode.GetNumberOfControlPoints()
    if not 0 <= int(index) < count:
        raise BlcamError(f"candidate {int(index) + 1} does not exist: '{candidatesNode.GetName()}' has {count}")
    label = candidatesNode.GetNthControlPointLabel(int(index)) or f"lesion-{int(index) + 1}"
    position = [0.0, 0.0, 0.0]
    candidatesNode.GetNthControlPointPositionWorld(int(index), position)
    geometry = geometryOf(volumeNode)
    index_kji = geometry.lps_to_index(np.asarray(position) * RAS_TO_LPS.diagonal()[:3])[::-1]
    region = segment_candidate(slicer.util.arrayFromVolume(heatmapNode), geometry, index_kji,
                               slicer.util.arrayFromVolume(volumeNode), rule or RegionRule())
    segmentation = _segmentationNode(volumeNode)
    segmentId = _importRegion(segmentation, volumeNode, region, label)
    segment = segmentation.GetSegmentation().GetSegment(segmentId)
    m = region.measurements
    values = (m.volume_mm3, *m.diameters_mm, m.equivalent_diameter_mm, region.level)
    for (key, _), value in zip(MEASURED, values):
        segment.SetTag(TAG + key, f"{value:.6g}")
    segment.SetTag(TAG + "Refined", "true" if region.refined else "false")
    segment.SetTag(TAG + "Capped", "true" if region.capped else "false")
    segment.SetTag(TAG + "Candidate", label)
    return CandidateSegment(segmentation, segmentId, region, measurementTable(volumeNode, segmentation))


def checkSameGrid(volumeNode, heatmapNode) -> None:
    """The heatmap's voxels must be the input's voxels (Detect's results are)."""
    same = (heatmapNode.GetImageData() is not None and volumeNode.GetImageData() is not None
            and heatmapNode.GetImageData().GetDimensions() == volumeNode.GetImageData().GetDimensions()
            and np.allclose(ijkToRAS(heatmapNode), ijkToRAS(volumeNode), atol=1e-6)
            and heatmapNode.GetTransformNodeID() == volumeNode.GetTransformNodeID())
    if not same:
        raise BlcamError(f"heatmap '{heatmapNode.GetName()}' is not on the grid of '{volumeNode.GetName()}'; "
                         "segment with the heatmap Detect made for this volume")


def _segmentationNode(volumeNode):
    node = _resultNode(volumeNode, "segmentation", "vtkMRMLSegmentationNode", f"{volumeNode.GetName()} lesions")
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _importRegion(segmentation, volumeNode, region, name: str) -> str:
    """Put ``region`` into the segment called ``name`` (created if new); returns its ID."""
    scene = volumeNode.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("segment-import"))
    try:
        shift = np.eye(4)
        shift[:3, 3] = region.offset_kji[::-1]                  # voxel (0, 0, 0) of the box, as (i, j, k)
        labelmap.SetIJKToRASMatrix(arrayToMatrix(ijkToRAS(volumeNode) @ shift))
        slicer.util.updateVolumeFromArray(labelmap, region.mask.astype(np.uint8))
        labelmap.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        segments = segmentation.GetSegmentation()
        segmentId = segments.GetSegmentIdBySegmentName(name)
        if not segmentId:
            segmentId = segments.AddEmptySegment("", name, SEGMENT_COLOR)
        ids = vtkStringArray()
        ids.InsertNextValue(segmentId)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
            raise BlcamError(f"could not put the region of {name} into '{segmentation.GetName()}'")
    finally:
        scene.RemoveNode(labelmap)
    return segmentId


def measurementTable(volumeNode, segmentation):
    """A table node (one row per segment measured here) rebuilt from the segments' tags."""
    table = _resultNode(volumeNode, "measurements", "vtkMRMLTableNode", f"{volumeNode.GetName()} lesion measurements")
    table.RemoveAllColumns()
    names = vtkStringArray()
    names.SetName("Segment")
    columns = []
    for _, title in MEASURED:
        column = vtkDoubleArray()
        column.SetName(title)
        columns.append(column)
    outlined = vtkStringArray()
    outlined.SetName("Outlined by the image")
    segments = segmentation.GetSegmentation()
    for n in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(n)
        if not segment.HasTag(TAG + "VolumeMm3"):          # drawn by hand: Segment Statistics measures it
            continue
        names.InsertNextValue(segment.GetName())
        for (key, _), column in zip(MEASURED, columns):
            column.InsertNextValue(float(_tag(segment, TAG + key)))
        outlined.InsertNextValue("yes" if _tag(segment, TAG + "Refined") == "true" else "no")
    for column in (names, *columns, outlined):
        table.AddColumn(column)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)
    return table


def _tag(segment, key: str) -> str:
    holder = reference("")
    return str(holder) if segment.GetTag(key, holder) else ""
