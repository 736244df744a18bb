"""Volumes in and out through SimpleITK, with the geometry that makes overlays line up.

Arrays are always in SimpleITK/NumPy order ``(k, j, i)``; physical points are LPS
millimetres and go through the image's origin, spacing *and direction*, never an assumed
identity. Everything that can be checked from the header alone is checked before pixel
data are read, so a bad cohort fails fast and before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike

from ..axes import PathLike, float3, int3
from ..errors import BlcamError
from .atomic import atomic_path


@dataclass(frozen=True)
class Geometry:
    """Where a voxel array sits in LPS space (SimpleITK conventions, sizes in ``(i, j, k)``)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image_or_reader: sitk.Image | sitk.ImageFileReader) -> Geometry:
        obj = image_or_reader
        return cls(int3(obj.GetSize()), float3(obj.GetSpacing()), float3(obj.GetOrigin()),
                   tuple(obj.GetDirection()))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(k, j, i)``."""
        i, j, k = self.size
        return k, j, i

    def _matrix(self) -> np.ndarray:
        return np.asarray(self.direction, float).reshape(3, 3) @ np.diag(self.spacing)

    def index_to_lps(self, index_ijk: ArrayLike) -> np.ndarray:
        """Continuous voxel index ``(i, j, k)`` (one or many rows) to LPS millimetres."""
        idx = np.asarray(index_ijk, float)
        return idx @ self._matrix().T + np.asarray(self.origin)

    def lps_to_index(self, points_lps: ArrayLike) -> np.ndarray:
        """LPS millimetres (one or many rows) to continuous voxel index ``(i, j, k)``."""
        pts = np.asarray(points_lps, float)
        return (pts - np.asarray(self.origin)) @ np.linalg.inv(self._matrix()).T

    def sub_box(self, box: Sequence[slice]) -> Geometry:
        """The grid of ``array[box]`` (slices ``(k, j, i)``): same spacing and direction, the
        origin moved to the box's first voxel, so every voxel keeps its LPS position."""
        start_ijk = [s.start for s in reversed(box)]
        size = int3(s.stop - s.start for s in reversed(box))
        return Geometry(size, self.spacing, float3(self.index_to_lps(start_ijk)), self.direction)

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


# File names a folder listing treats as volumes (lower case; a DICOM series is a folder).
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def _reader_for(path: Path) -> sitk.ImageFileReader | sitk.ImageSeriesReader:
    """A SimpleITK reader for a file or for a DICOM series folder."""
    if path.is_dir():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not ids:
            raise BlcamError(f"{path}: folder holds no DICOM series")
        if len(ids) > 1:
            raise BlcamError(f"{path}: folder holds {len(ids)} DICOM series; give one series per folder")
        series = sitk.ImageSeriesReader()
        series.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))
        return series
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return reader


def _check_scalar_3d(path: PathLike, dimension: int, components: int, size: Sequence[int]) -> None:
    if dimension != 3:
        raise BlcamError(f"{path}: volume is {dimension}D (size {tuple(size)}); a 3D volume is needed")
    if components != 1:
        raise BlcamError(f"{path}: volume has {components} components per voxel (RGB or vector); "
                         "a single-channel greyscale volume is needed")
    if min(size) < 2:
        raise BlcamError(f"{path}: volume size {tuple(size)} is degenerate; a 3D volume is needed")


def read_geometry(path: str | os.PathLike) -> Geometry:
    """Read only the header and check the volume is a 3D scalar image."""
    path = Path(path)
    if not path.exists():
        raise BlcamError(f"{path}: file not found")
    reader = _reader_for(path)
    try:
        if isinstance(reader, sitk.ImageSeriesReader):
            image = reader.Execute()  # series headers need a full read; folders are rare
            _check_scalar_3d(path, image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize())
            return Geometry.of(image)
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise BlcamError(f"{path}: cannot read volume ({_first_line(exc)})") from None
    _check_scalar_3d(path, reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize())
    return Geometry.of(reader)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read a 3D scalar volume: its ``(k, j, i)`` array and its geometry."""
    path = Path(path)
    if not path.exists():
        raise BlcamError(f"{path}: file not found")
    try:
        image = _reader_for(path).Execute()
    except RuntimeError as exc:
        raise BlcamError(f"{path}: cannot read volume ({_first_line(exc)})") from None
    _check_scalar_3d(path, image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize())
    return sitk.GetArrayViewFromImage(image).copy(), Geometry.of(image)


def write_volume(path: str | os.PathLike, array: np.ndarray, geometry: Geometry,
                 compress: bool = True) -> None:
    """Write ``array`` (``(k, j, i)``) with ``geometry``, atomically."""
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape}")
    image = geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array)))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages put the useful sentence last ("... Could not create IO object ...").
    return lines[-1] if lines else type(exc).__name__
