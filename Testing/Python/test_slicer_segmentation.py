"""Segment candidate (issue 12, point 7) on real MRML (slicer-core): the heatmap around a
candidate becomes a segment on the input's own grid, in world RAS, measured for a report.

The input is a phantom cyst on an oblique, mirrored, anisotropic grid under a tilted parent
transform; the heatmap and candidates come in through the same loaders Detect's results use.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkStringArray
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from _segment_fixtures import GEOMETRY, gradcam_like_heatmap, outer_layer, phantom_lesion
from blcam.errors import BlcamError
from blcam.io.points import write_markups
from blcam.io.volume import write_volume
from BreastLesionCAMLib import Scenario
from BreastLesionCAMLib.Logic import BreastLesionCAMLogic
from BreastLesionCAMLib.NodeIO import RAS_TO_LPS, geometryOf, ijkToRAS, matrixToArray, worldIJKToRAS
from BreastLesionCAMLib.Results import loadCandidates, loadHeatmap
from BreastLesionCAMLib.Segmentation import TAG, checkSameGrid


@pytest.fixture
def case(headless, tmp_path):
    """Input volume, Detect-like heatmap and candidates in the scene, set as the current result."""
    image, mask, centroid = phantom_lesion(0)
    lps_matrix = np.eye(4)
    lps_matrix[:3, :3] = np.asarray(GEOMETRY.direction).reshape(3, 3) @ np.diag(GEOMETRY.spacing)
    lps_matrix[:3, 3] = GEOMETRY.origin
    volume = slicer.util.addVolumeFromArray(image, RAS_TO_LPS @ lps_matrix, name="Oblique case")
    volume.SetAndObserveTransformNodeID(Scenario.addTransform(headless.scene).GetID())
    world = geometryOf(volume)                                    # LPS through the parent transform
    write_volume(tmp_path / "case_heatmap.nrrd", gradcam_like_heatmap(mask), world)
    heat = loadHeatmap(volume, tmp_path / "case_heatmap.nrrd", world)
    centre_lps = world.index_to_lps(centroid[::-1])
    write_markups(tmp_path / "case_candidates.mrk.json", [centre_lps, centre_lps + [1.5, 0.0, 0.0]],
                  labels=["lesion-1", "lesion-2"])
    candidates = loadCandidates(volume, tmp_path / "case_candidates.mrk.json")
    logic = BreastLesionCAMLogic()
    p = logic.getParameterNode()
    p.heatmapVolume, p.candidates = heat, candidates
    return logic, volume, heat, candidates, mask


def _exported(segmentation, segmentId, volume) -> tuple[np.ndarray, object]:
    """The segment as a labelmap on ``volume``'s grid, through Slicer's own export."""
    labelmap = volume.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtkStringArray()
    ids.InsertNextValue(segmentId)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
    return slicer.util.arrayFromVolume(labelmap) > 0, labelmap


def test_the_segment_is_on_the_inputs_grid_in_world_ras_and_inside_the_lesion(case):
    logic, volume, _, _, mask = case
    result = logic.segmentCandidate(0)
    segmentation, region = result.segmentation, result.region
    assert segmentation.IsA("vtkMRMLSegmentationNode")
    assert segmentation.GetTransformNodeID() == volume.GetTransformNodeID() is not None
    segment = segmentation.GetSegmentation().GetSegment(result.segmentId)
    assert segment.GetName() == "lesion-1"
    # The segment's own binary labelmap lies on the input's lattice (its voxel axes, shifted by
    # whole voxels) and holds the core library's mask voxel for voxel: nothing was resampled.
    labelmap = segment.GetRepresentation("Binary labelmap")
    imageToWorld = vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(imageToWorld)
    toVolumeIJK = np.linalg.inv(ijkToRAS(volume)) @ matrixToArray(imageToWorld)
    np.testing.assert_allclose(toVolumeIJK[:3, :3], np.eye(3), atol=1e-9)
    shift = toVolumeIJK[:3, 3]
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-6)
    extent = np.asarray(labelmap.GetExtent()).reshape(3, 2)
    stored = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(tuple(extent[::-1, 1] - extent[::-1, 0] + 1))
    start_kji = (extent[:, 0] + np.round(shift).astype(int))[::-1]
    whole = np.zeros(mask.shape, bool)
    whole[tuple(slice(a, a + n) for a, n in zip(start_kji, stored.shape, strict=True))] = stored > 0
    np.testing.assert_array_equal(whole, region.full(mask.shape))
    exported, labelNode = _exported(segmentation, result.segmentId, volume)
    np.testing.assert_allclose(ijkToRAS(labelNode), ijkToRAS(volume), atol=1e-9)
    np.testing.assert_array_equal(exported, region.full(mask.shape))
    # In world RAS (through the tilted parent transform) it sits on the true lesion.
    ijk = np.argwhere(exported)[:, ::-1]
    seg_ras = (worldIJKToRAS(volume) @ np.c_[ijk, np.ones(len(ijk))].T)[:3].mean(axis=1)
    lesion_ijk = np.argwhere(mask)[:, ::-1]
    lesion_ras = (worldIJKToRAS(volume) @ np.c_[lesion_ijk, np.ones(len(lesion_ijk))].T)[:3].mean(axis=1)
    assert np.linalg.norm(seg_ras - lesion_ras) < 0.5
    np.testing.assert_allclose(np.asarray(region.measurements.centroid_lps) * [-1, -1, 1], seg_ras, atol=1e-6)
    # Acceptance: inside the lesion (its outer voxel layer at most, see test_segment.py) and
    # its volume within 30 % of the lesion's.
    assert not (exported & ~outer_layer(mask)).any()
    assert 0.7 * mask.sum() <= exported.sum() <= 1.3 * mask.sum()
    assert region.refined and "outlined by the image" in result.describe()


def test_measurements_go_to_segment_tags_and_a_table_and_survive_a_seg_nrrd(case, tmp_path):
    logic, volume, _, _, _ = case
    first = logic.segmentCandidate(0)
    m = first.region.measurements
    segment = first.segmentation.GetSegmentation().GetSegment(first.segmentId)
    table = first.table
    assert table.GetNumberOfRows() == 1 and table.GetCellText(0, 0) == "lesion-1"
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns[:4] == ["Segment", "Volume (mm³)", "Diameter 1 (mm)", "Diameter 2 (mm)"]
    assert float(table.GetCellText(0, 1)) == pytest.approx(m.volume_mm3, rel=1e-5)
    assert float(table.GetCellText(0, 2)) == pytest.approx(m.diameters_mm[0], rel=1e-5)
    assert table.GetCellText(0, columns.index("Outlined by the image")) == "yes"
    # Segmenting again replaces the candidate's segment; another candidate adds one, same node.
    again = logic.segmentCandidate(0)
    second = logic.segmentCandidate(1)
    assert again.segmentation is first.segmentation is second.segmentation
    segments = first.segmentation.GetSegmentation()
    assert [segments.GetNthSegment(n).GetName() for n in range(segments.GetNumberOfSegments())] == \
        ["lesion-1", "lesion-2"]
    assert second.table is table and table.GetNumberOfRows() == 2
    # The tags are stored in the .seg.nrrd the scene saves.
    scene = volume.GetScene()
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(tmp_path / "lesions.seg.nrrd"))
    assert storage.WriteData(first.segmentation)
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(tmp_path / "lesions.seg.nrrd"))
    assert reader.ReadData(loaded)
    reloaded = loaded.GetSegmentation().GetSegment(loaded.GetSegmentation().GetSegmentIdBySegmentName("lesion-1"))
    from vtkmodules.vtkCommonCore import reference
    value = reference("")
    assert reloaded.GetTag(TAG + "VolumeMm3", value) and float(str(value)) == pytest.approx(m.volume_mm3, rel=1e-5)
    assert segment.GetTag(TAG + "Candidate", value) and str(value) == "lesion-1"


def test_segmenting_refuses_what_it_cannot_do_with_a_clear_message(case):
    logic, _, heat, _, _ = case
    with pytest.raises(BlcamError, match="candidate 3 does not exist: '.*' has 2"):
        logic.segmentCandidate(2)
    other = slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.float32), name="Other")
    with pytest.raises(BlcamError, match="heatmap '.*' is not on the grid of 'Other'"):
        logic.segmentCandidate(0, volumeNode=other)
    with pytest.raises(BlcamError, match="is not on the grid"):
        checkSameGrid(other, heat)
    p = logic.getParameterNode()
    p.heatmapVolume = None
    with pytest.raises(BlcamError, match="no Detect result to segment"):
        logic.segmentCandidate(0)
