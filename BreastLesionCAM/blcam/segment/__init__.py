"""A Detect candidate's lesion as a region: its mask and its size, for the Segment Editor and a report.

``region`` (:func:`segment_candidate`: the heatmap's hot region around a candidate, capped and
delimited by the image's dark region) and ``measure`` (:func:`measure_region`: volume and
principal diameters in mm through the volume's geometry). No torch, no Slicer: the module's
Logic uses it on the arrays of MRML nodes, even before PyTorch is installed.
"""

from .measure import RegionMeasurements, measure_region
from .region import LesionRegion, RegionRule, segment_candidate

__all__ = ["LesionRegion", "RegionMeasurements", "RegionRule", "measure_region", "segment_candidate"]
