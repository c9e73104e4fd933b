"""OME-TIFF pyramids (Bio-Formats, QuPath, scanners' OME export): read as tiled TIFF.

An RGB OME-TIFF (one ``YXS`` plane per level, or an 8-bit grey ``YX`` one) is read by the generic
tiled-TIFF reader (SubIFD pyramid, PhysicalSizeX/Y, ``label`` and ``macro`` images). An OME-TIFF
of channels (C) and focal planes (Z), 8 or 16 bits, becomes levels of several optical paths and
focal planes (:mod:`lamina.formats.ome_planes`), described by its OME-XML. Signed or float
samples and time series are refused with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cached_property
from pathlib import Path
from typing import cast

import numpy as np
import tifffile

from lamina.errors import CorruptSourceError, SourceError, UnsupportedFormatError
from lamina.formats.codec import damage
from lamina.formats.ome_planes import OmePixels, OmePlanesLevel, read_ome_pixels
from lamina.formats.source import OpticalPath, ReadObserver, SlideMetadata, SourceOptions
from lamina.formats.tiff import TiledTiffSource
from lamina.formats.tiff_common import (
    check_tiles_inside,
    level_spacing,
    reading_page,
    require_spacing,
    resolution_spacing,
    sniff_tiff,
)
from lamina.model.geometry import SizePx

_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"


class OmeTiffSource(TiledTiffSource):
    format_name = "ome_tiff"
    display_name = "OME-TIFF"
    priority = 20
    suffixes = (".ome.tif", ".ome.tiff", ".ome.tf2", ".ome.tf8", ".ome.btf")

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: bool(tiff.is_ome), cls)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        #: The metadata of a file of channels or focal planes (None: an RGB one, the tiled TIFF's).
        self._planes_metadata: SlideMetadata | None = None
        super().__init__(path, options)

    def _open(self, path: Path, options: SourceOptions) -> None:
        try:
            series = self._tiff.series[0]
            axes, dtype = series.axes, np.dtype(series.dtype)
        except Exception:
            super()._open(path, options)  # says what is damaged
            return
        if axes == "YXS" or (axes == "YX" and dtype == np.uint8):
            super()._open(path, options)
            return
        try:
            self._open_planes(path, options, series, axes, dtype)
        except SourceError:
            raise
        except Exception as exc:  # tifffile on damaged directories: anything
            raise CorruptSourceError(
                path, f"its OME image series cannot be read: {damage(exc)}; {_DAMAGED}"
            ) from exc

    def _open_planes(
        self, path: Path, options: SourceOptions, series: tifffile.TiffPageSeries, axes: str, dtype: np.dtype
    ) -> None:
        shape = dict(zip(axes, (int(n) for n in series.shape), strict=True))
        _check_samples(path, series, dtype)
        if shape.get("T", 1) > 1:
            raise UnsupportedFormatError(
                path,
                f"a time series of {shape['T']} time points (axes {axes}, shape {tuple(series.shape)}): "
                "DICOM WSI holds one; export one time point (e.g. bfconvert -timepoint 0)",
            )
        _check_axes(path, series, axes, shape)
        xml = self._tiff.ome_metadata or ""
        ome = read_ome_pixels(xml)
        keyframe, base_pages = _plane_pages(path, series.levels[0], axes, shape)
        found = ome.spacing or resolution_spacing(keyframe)
        spacing = require_spacing(path, found, options, "no OME PhysicalSizeX/Y nor resolution tags")
        bits = _bits_stored(dtype)
        base_size = SizePx(int(keyframe.imagewidth), int(keyframe.imagelength))
        planes = shape.get("Z", 1)
        self._levels = []
        for number, level in enumerate(series.levels):
            key, pages = (keyframe, base_pages) if number == 0 else _plane_pages(path, level, axes, shape)
            size = SizePx(int(key.imagewidth), int(key.imagelength))
            with reading_page(path, key, f"level {number}"):
                for page in pages:
                    # a frame has the offsets and counts that this reads
                    check_tiles_inside(path, self._tiff, cast(tifffile.TiffPage, page))
                self._levels.append(
                    OmePlanesLevel(
                        self._tiff, key, pages, planes, level_spacing(spacing, base_size, size), bits
                    )
                )
        self._levels.sort(key=lambda image: -image.size.area)
        self._associated = self._associated_images(path)
        self._planes_metadata = _metadata(ome, shape.get("C", 1), int(keyframe.samplesperpixel))

    @cached_property
    def metadata(self) -> SlideMetadata:
        if self._planes_metadata is not None:
            return self._planes_metadata
        return super().metadata

    def observe_reads(self, observer: ReadObserver) -> None:
        super().observe_reads(observer)
        for image in self._levels:
            if isinstance(image, OmePlanesLevel):
                image.set_observer(observer)


def _check_samples(path: Path, series: tifffile.TiffPageSeries, dtype: np.dtype) -> None:
    where = f"(axes {series.axes}, shape {tuple(series.shape)})"
    if dtype.kind == "i":
        raise UnsupportedFormatError(
            path,
            f"{dtype} samples {where}: DICOM WSI holds unsigned samples; re-export the image with "
            "unsigned samples (uint8 or uint16), e.g. in Fiji or with bfconvert -pixeltype",
        )
    if dtype.kind == "f":
        raise UnsupportedFormatError(
            path,
            f"{dtype} samples {where}: DICOM WSI holds integer samples; lamina reads uint8 and uint16 "
            "OME-TIFFs, not float (processed or unmixed) images",
        )
    if dtype not in (np.uint8, np.uint16):
        raise UnsupportedFormatError(
            path, f"{dtype} samples {where}: lamina reads uint8 and uint16 OME-TIFFs"
        )


def _check_axes(path: Path, series: tifffile.TiffPageSeries, axes: str, shape: dict[str, int]) -> None:
    outer = axes.removesuffix("S").removesuffix("YX")
    rgb = axes.endswith("YXS")
    known = set(outer) <= {"C", "Z"} and (axes.endswith("YX") or rgb)
    if not known or (rgb and ("C" in outer or shape["S"] != 3)):
        raise UnsupportedFormatError(
            path,
            f"image of shape {tuple(series.shape)} (axes {axes}) is not a whole-slide image lamina "
            "reads: channels (C) and focal planes (Z) of grey planes, or focal planes of RGB ones",
        )


def _plane_pages(
    path: Path, level: tifffile.TiffPageSeries, axes: str, shape: dict[str, int]
) -> tuple[tifffile.TiffPage, list[tifffile.TiffPage | tifffile.TiffFrame]]:
    """The level's keyframe and its page of every (z, c) in frame order: the planes of channel 0,
    then 1..."""
    outer = [axis for axis in axes if axis not in "YXS"]
    dims = [shape[axis] for axis in outer]
    pages = [page for page in level.pages if page is not None]
    keyframe = level.keyframe
    if len(pages) != math.prod(dims) or keyframe is None:
        raise CorruptSourceError(
            path,
            f"the OME-XML lists {math.prod(dims)} planes (axes {axes}) but the TIFF holds "
            f"{len(pages)} of them at this level; {_DAMAGED}",
        )
    found: list[tifffile.TiffPage | tifffile.TiffFrame] = []
    for c in range(shape.get("C", 1)):
        for z in range(shape.get("Z", 1)):
            where = {"C": c, "Z": z}
            index = int(np.ravel_multi_index([where[axis] for axis in outer], dims)) if dims else 0
            found.append(pages[index])
    return keyframe, found


def _bits_stored(dtype: np.dtype) -> int:
    """8 or 16: the WSI Image module's BitsStored is enumerated as equal to BitsAllocated (PS3.3
    C.8.12.4; dciodvfy refuses 12), so OME's SignificantBits (12 of a camera's 16) is not kept."""
    return 8 if dtype == np.uint8 else 16


def _metadata(ome: OmePixels, channels: int, samples: int) -> SlideMetadata:
    paths: tuple[OpticalPath, ...] = ()
    if samples == 1:
        # the OME Channels, when they are one per C; else channels described by nothing
        found = ome.channels if len(ome.channels) == channels else (OpticalPath(),) * channels
        fluorescence = ome.fluorescence or channels > 1
        paths = tuple(dataclasses.replace(path, fluorescence=fluorescence) for path in found)
    return SlideMetadata(
        manufacturer=ome.manufacturer,
        model_name=ome.model_name,
        software_versions=(ome.creator[:64],) if ome.creator else (),
        acquisition_datetime=ome.acquired,
        objective_power=ome.objective_power,
        optical_paths=paths,
        focal_plane_spacing_mm=ome.z_spacing_mm,
    )
