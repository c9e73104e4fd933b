"""Where each frame of another system's DICOM WSI instance lies: tile, focal plane, optical path.

TILED_FULL frames are in the standard's order (PS3.3 C.7.6.17.3): column fastest, then row, then
focal plane, then optical path (the OpticalPathSequence's order). TILED_SPARSE frames say where
they lie in their PerFrameFunctionalGroupsSequence item: the tile in PlanePositionSlideSequence,
the focal plane by its ZOffsetInSlideCoordinateSystem (planes numbered from the lowest offset up),
the optical path by OpticalPathIdentificationSequence (per frame, or shared). Either becomes a
:class:`FrameLayout`: the stored frame of each tile in lamina's (TILED_FULL) order.

The channels and the distance between planes are read for :class:`SlideMetadata` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from lamina.errors import CorruptSourceError
from lamina.formats.source import OpticalPath
from lamina.model.geometry import SizePx

_DAMAGED = "the file is damaged: export it again from the source system"
#: IlluminationTypeCodeSequence's code of a fluorescence channel (DCM 111743).
_EPIFLUORESCENCE = "111743"


@dataclass(frozen=True)
class FrameLayout:
    """The stored frames of one instance in lamina's order."""

    focal_planes: int
    optical_paths: int
    #: The 0-based stored frame of each tile, in TILED_FULL order (``SourceImage.frame_index``);
    #: ``None`` where a sparse image has no frame (background).
    order: list[int | None]
    #: The planes' ZOffsetInSlideCoordinateSystem in µm, lowest first, where the frames give them.
    z_offsets_um: tuple[float, ...] = ()


def optical_path_ids(dataset: Dataset) -> list[str]:
    """The OpticalPathIdentifier of each OpticalPathSequence item, in order."""
    return [str(item.get("OpticalPathIdentifier", "")) for item in dataset.get("OpticalPathSequence") or []]


def tiled_full_layout(path: Path, count: int, grid: SizePx, planes: int, paths: int) -> FrameLayout:
    """A TILED_FULL instance: every tile of every plane and path stored, in the standard's order."""
    expected = grid.area * planes * paths
    if count != expected:
        raise CorruptSourceError(
            path,
            f"NumberOfFrames {count} does not match TILED_FULL: {grid.width}x{grid.height} tiles x "
            f"{planes} focal planes (TotalPixelMatrixFocalPlanes) x {paths} optical paths "
            f"(NumberOfOpticalPaths) make {expected} frames; {_DAMAGED}",
        )
    return FrameLayout(planes, paths, list(range(count)))


def tiled_sparse_layout(
    path: Path, dataset: Dataset, count: int, grid: SizePx, tile: SizePx, planes: int
) -> FrameLayout:
    """A TILED_SPARSE instance: each frame placed by its functional groups."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != count:
        raise CorruptSourceError(
            path, "TILED_SPARSE without a PerFrameFunctionalGroupsSequence item per frame"
        )
    shared = _shared(dataset)
    ids = optical_path_ids(dataset)
    places: list[tuple[int, int, float, int]] = []
    for index, item in enumerate(per_frame):
        try:
            position = item.PlanePositionSlideSequence[0]
            col = (int(position.ColumnPositionInTotalImagePixelMatrix) - 1) // tile.width
            row = (int(position.RowPositionInTotalImagePixelMatrix) - 1) // tile.height
            z = float(position.get("ZOffsetInSlideCoordinateSystem", 0.0) or 0.0)
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise CorruptSourceError(
                path,
                f"frame {index + 1} has no readable PlanePositionSlideSequence "
                f"(Column and Row Position In Total Image Pixel Matrix); {_DAMAGED}",
            ) from exc
        if not (0 <= col < grid.width and 0 <= row < grid.height):
            raise CorruptSourceError(path, f"frame {index + 1} lies outside the total pixel matrix")
        places.append((col, row, z, _path_index(path, index, item, shared, ids)))
    offsets = sorted({z for _, _, z, _ in places})
    if len(offsets) > planes:
        raise CorruptSourceError(
            path,
            f"the frames lie at {len(offsets)} Z offsets (ZOffsetInSlideCoordinateSystem), "
            f"TotalPixelMatrixFocalPlanes declares {planes} focal planes; {_DAMAGED}",
        )
    plane_of = {z: number for number, z in enumerate(offsets)}
    paths = max(1, len(ids))
    order: list[int | None] = [None] * (grid.area * len(offsets) * paths)
    for index, (col, row, z, c) in enumerate(places):
        order[col + row * grid.width + (plane_of[z] + c * len(offsets)) * grid.area] = index
    return FrameLayout(len(offsets), paths, order, tuple(offsets))


def _shared(dataset: Dataset) -> Dataset:
    shared = dataset.get("SharedFunctionalGroupsSequence")
    return shared[0] if shared else Dataset()


def _path_index(path: Path, index: int, item: Dataset, shared: Dataset, ids: list[str]) -> int:
    """The frame's optical path, as its place in the OpticalPathSequence (0 where there is one)."""
    identified = item.get("OpticalPathIdentificationSequence") or shared.get(
        "OpticalPathIdentificationSequence"
    )
    if not identified or len(ids) <= 1:
        return 0
    named = str(identified[0].get("OpticalPathIdentifier", ""))
    if named not in ids:
        raise CorruptSourceError(
            path,
            f"frame {index + 1} names optical path {named[:16]!r}, which the OpticalPathSequence does "
            f"not describe ({', '.join(ids)}); {_DAMAGED}",
        )
    return ids.index(named)


def optical_paths(dataset: Dataset) -> tuple[OpticalPath, ...]:
    """The channels of the OpticalPathSequence, in order; empty for one brightfield path."""
    found = tuple(_optical_path(item) for item in dataset.get("OpticalPathSequence") or [])
    return found if len(found) > 1 or any(channel.fluorescence for channel in found) else ()


def _optical_path(item: Dataset) -> OpticalPath:
    illumination = item.get("IlluminationTypeCodeSequence")
    code = str(illumination[0].get("CodeValue", "")) if illumination else ""
    try:
        wavelength: float | None = float(item.get("IlluminationWaveLength"))
    except (TypeError, ValueError):
        wavelength = None
    return OpticalPath(
        description=str(item.get("OpticalPathDescription", "")) or None,
        illumination_nm=wavelength or None,
        color=_palette_color(item),
        fluorescence=code == _EPIFLUORESCENCE,
    )


def _palette_color(item: Dataset) -> tuple[int, int, int] | None:
    """The colour a channel's palette ends on (its brightest entry, as 8 bits), if it has a
    readable one (a damaged palette is left out: the written instance keeps the source's item)."""
    color = []
    for name in ("Red", "Green", "Blue"):
        data = item.get(f"{name}PaletteColorLookupTableData")
        descriptor: Any = item.get(f"{name}PaletteColorLookupTableDescriptor")
        try:
            bits = int(descriptor[2]) if isinstance(descriptor, Sequence) and len(descriptor) == 3 else 16
            raw = bytes(data or b"")
            if bits == 8:
                color.append(int(np.frombuffer(raw, np.uint8)[-1]))
            else:
                color.append(int(np.frombuffer(raw[: len(raw) // 2 * 2], "<u2")[-1]) >> 8)
        except (IndexError, TypeError, ValueError):
            return None
    return color[0], color[1], color[2]


def focal_plane_spacing_mm(dataset: Dataset, z_offsets_um: Sequence[float] = ()) -> float | None:
    """SpacingBetweenSlices of the shared PixelMeasuresSequence (mm), or the mean distance between
    the planes' Z offsets (µm) where it is missing."""
    try:
        spacing = float(_shared(dataset).PixelMeasuresSequence[0].SpacingBetweenSlices)
        if spacing > 0:
            return spacing
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        pass
    if len(z_offsets_um) > 1:
        return (z_offsets_um[-1] - z_offsets_um[0]) / (len(z_offsets_um) - 1) / 1000.0
    return None


def complete_spacing_between_slices(dataset: Dataset, layout: FrameLayout) -> None:
    """Give a sparse z-stack whose shared PixelMeasuresSequence has no SpacingBetweenSlices the
    one its frames' Z offsets make (the standard requires it of several focal planes; the
    written instance keeps the source's pixel measures)."""
    if layout.focal_planes < 2 or len(layout.z_offsets_um) < 2:
        return
    try:
        measures = _shared(dataset).PixelMeasuresSequence[0]
    except (AttributeError, IndexError):
        return
    if "SpacingBetweenSlices" not in measures or not measures.SpacingBetweenSlices:
        spacing = focal_plane_spacing_mm(Dataset(), layout.z_offsets_um)
        measures.SpacingBetweenSlices = f"{spacing:.10g}"
