"""Focal planes stored as images of their own, joined into one z-stack image per level.

A Hamamatsu NDPI z-stack keeps a whole pyramid per focal plane: one TIFF page per level and plane,
each tagged with its Z offset. :class:`FocalStack` joins the images of one level, ordered by their
Z offset (lowest first), into one :class:`~lamina.formats.source.SourceImage` whose frames are in
DICOM's TILED_FULL order: the frames of plane 0, then those of plane 1... Each plane's frames are
what its image hands over (copied tiles stay copied). DICOM's TILED_FULL holds one distance
between planes (SpacingBetweenSlices), so :func:`plane_spacing_mm` refuses planes that are not
evenly spaced.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

from lamina.errors import UnsupportedFormatError
from lamina.formats.planes import JoinedFrames
from lamina.formats.source import Buffer, Pixels, ReadObserver, SourceImage

#: How far a step between planes may stray from the mean step and still count as even (µm):
#: the tags hold whole nanometres.
_TOLERANCE_UM = 0.002


def _um(value: float) -> str:
    return f"{value:g}"


def plane_spacing_mm(path: Path, offsets_um: Sequence[float]) -> float:
    """The distance between neighbouring focal planes, in mm, of planes at ``offsets_um``
    (distinct, lowest first); refuses planes that are not evenly spaced, naming their offsets."""
    steps = [b - a for a, b in itertools.pairwise(offsets_um)]
    mean = (offsets_um[-1] - offsets_um[0]) / len(steps)
    if any(abs(step - mean) > max(_TOLERANCE_UM, 0.01 * mean) for step in steps):
        raise UnsupportedFormatError(
            path,
            f"its focal planes lie at Z offsets {', '.join(_um(z) for z in offsets_um)} µm, not evenly "
            "spaced: DICOM's TILED_FULL holds one spacing between planes",
        )
    return mean / 1000.0


class FocalStack(SourceImage):
    """The single-plane images of one level (lowest Z offset first) as one image of several planes.

    The images must agree on size, tiles and samples; their frames are joined when they share one
    encoding, and decoded and re-encoded by the writer otherwise."""

    def __init__(self, planes: Sequence[SourceImage]) -> None:
        first = planes[0]
        for plane in planes:
            same = (plane.size, plane.tile_size, plane.samples_per_pixel, plane.bits_stored) == (
                first.size,
                first.tile_size,
                first.samples_per_pixel,
                first.bits_stored,
            )
            if not same or plane.focal_planes != 1 or plane.optical_paths != 1:
                raise ValueError("the planes of a focal stack are single-plane images of one geometry")
        self._planes = tuple(planes)
        self._frames = JoinedFrames(self._planes)
        self.flavor = first.flavor
        self.size = first.size
        self.tile_size = first.tile_size
        self.samples_per_pixel = first.samples_per_pixel
        self.pixel_spacing = first.pixel_spacing
        encodings = {plane.encoding for plane in planes}
        self.encoding = first.encoding if len(encodings) == 1 else None
        self.source_lossy = any(plane.source_lossy for plane in planes)
        self.lossy_method = first.lossy_method
        self.lossy_ratio = first.lossy_ratio
        self.focal_planes = len(planes)
        self.bits_stored = first.bits_stored

    @property
    def read_observer(self) -> ReadObserver | None:
        return self._planes[0].read_observer

    @read_observer.setter
    def read_observer(self, observer: ReadObserver | None) -> None:
        for plane in self._planes:
            plane.read_observer = observer

    def read_frame(self, index: int) -> bytes:
        return self._frames.read_frame(index, self.grid.area)

    def frame_lengths(self) -> Sequence[int] | None:
        return self._frames.frame_lengths()

    def iter_frames(self) -> Iterator[bytes]:
        return self._frames.iter_frames()

    def iter_frame_parts(self) -> Iterator[Sequence[Buffer]]:
        return self._frames.iter_frame_parts()

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        if c != 0 or not 0 <= z < self.focal_planes:
            raise IndexError(f"focal plane {z}, optical path {c} of {self.focal_planes} planes and 1 path")
        return self._planes[z].decode_tile(col, row)
