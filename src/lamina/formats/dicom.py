"""DICOM WSI written by other systems (scanners, converters, PACS): validated, repaired, copied.

Frames are copied as stored when their transfer syntax is compressed; uncompressed frames are
re-encoded losslessly. Identity and UIDs are kept. What is safely repairable (a missing type 2
attribute, a photometric interpretation that contradicts the JPEG stream) is repaired by the
writer and reported; what is not (invalid UIDs, no ImageType, inconsistent frame counts) is
refused with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats import codec
from lamina.formats.dicom_frames import FrameSpan, locate_frames, read_span
from lamina.formats.source import (
    FrameEncoding,
    ImageFlavor,
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    TransferSyntax,
)
from lamina.formats.tiff_common import require_spacing
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: Frames in these transfer syntaxes are copied as stored: every WSI viewer decodes them.
_COPIED = {
    "1.2.840.10008.1.2.4.50": TransferSyntax.JPEG_BASELINE_8BIT,
    "1.2.840.10008.1.2.4.90": TransferSyntax.JPEG_2000_LOSSLESS,
    "1.2.840.10008.1.2.4.91": TransferSyntax.JPEG_2000,
}
#: Lossless encodings that OpenSlide and browsers do not read: decoded, re-encoded as
#: JPEG 2000 lossless (pixel for pixel the same).
_TRANSCODED = {
    "1.2.840.10008.1.2.4.80": TransferSyntax.JPEG_LS_LOSSLESS,
    "1.2.840.10008.1.2.4.201": TransferSyntax.HTJ2K_LOSSLESS,
}
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_LOSSY_TS = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91"}


def is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def check_uid(path: Path, keyword: str, value: Any) -> str:
    text = str(value or "")
    if not text:
        raise CorruptSourceError(path, f"{keyword} is missing; the file cannot be identified")
    if len(text) > 64 or not _UID.match(text):
        raise CorruptSourceError(
            path,
            f"{keyword} {text[:70]!r} is not a valid UID (at most 64 characters, digits and dots, "
            "no leading zeros); fix it at the source system and export again",
        )
    return text


class DicomImage(SourceImage):
    """One VL WSI instance of another system, read frame by frame from its file."""

    def __init__(self, path: Path, dataset: Dataset, spans: list[FrameSpan], spacing: SizeMm | None) -> None:
        self.path = path
        self.dataset = dataset
        self._spans = spans
        self._fd = os.open(path, os.O_RDONLY)
        image_type = list(dataset.ImageType)
        self.flavor = ImageFlavor(str(image_type[2]).upper())
        self.size = SizePx(int(dataset.TotalPixelMatrixColumns), int(dataset.TotalPixelMatrixRows))
        self.tile_size = SizePx(int(dataset.Columns), int(dataset.Rows))
        self.samples_per_pixel = int(dataset.SamplesPerPixel)
        self.pixel_spacing = spacing
        ts = str(dataset.file_meta.TransferSyntaxUID)
        self.source_lossy = ts in _LOSSY_TS or str(dataset.get("LossyImageCompression", "00")) == "01"
        if self.source_lossy and ts not in _LOSSY_TS:
            self.lossy_method, self.lossy_ratio = _lossy_history(dataset)
        self._order = self._tile_order()
        self._native = ts in _NATIVE
        self._stream = _COPIED.get(ts) or _TRANSCODED.get(ts)
        if ts in _COPIED:
            photometric = str(dataset.PhotometricInterpretation)
            if _COPIED[ts] is TransferSyntax.JPEG_BASELINE_8BIT:
                photometric = self._jpeg_photometric(photometric)
            self.encoding: FrameEncoding | None = FrameEncoding(
                _COPIED[ts],
                photometric,
                "ISO_10918_1" if ts.endswith(".50") else ("ISO_15444_1" if ts.endswith(".91") else None),
            )
        else:
            self.encoding = None

    def _jpeg_photometric(self, declared: str) -> str:
        info = codec.jpeg_info(read_span(self._fd, self._spans[0]))
        if len(info.components) == 1:
            return "MONOCHROME2"
        if info.adobe_transform is not None or info.rgb_coded or info.subsampled:
            if info.rgb_coded:
                return "RGB"
            return "YBR_FULL_422" if info.subsampled else "YBR_FULL"
        return declared

    def _tile_order(self) -> list[int | None]:
        """Frame index for each tile in TILED_FULL order (None where a sparse image has none)."""
        grid = self.grid
        count = len(self._spans)
        organisation = str(self.dataset.get("DimensionOrganizationType", "TILED_FULL"))
        if organisation != "TILED_SPARSE":
            if count != grid.area:
                raise CorruptSourceError(
                    self.path,
                    f"NumberOfFrames {count} does not match a TILED_FULL grid of {grid} tiles "
                    "(several focal planes or optical paths are not supported yet)",
                )
            return list(range(count))
        order: list[int | None] = [None] * grid.area
        per_frame = self.dataset.get("PerFrameFunctionalGroupsSequence")
        if per_frame is None or len(per_frame) != count:
            raise CorruptSourceError(
                self.path, "TILED_SPARSE without a PerFrameFunctionalGroupsSequence item per frame"
            )
        for index, item in enumerate(per_frame):
            position = item.PlanePositionSlideSequence[0]
            col = (int(position.ColumnPositionInTotalImagePixelMatrix) - 1) // self.tile_size.width
            row = (int(position.RowPositionInTotalImagePixelMatrix) - 1) // self.tile_size.height
            if not (0 <= col < grid.width and 0 <= row < grid.height):
                raise CorruptSourceError(self.path, f"frame {index + 1} lies outside the total pixel matrix")
            order[row * grid.width + col] = index
        return order

    @cached_property
    def _blank(self) -> bytes:
        assert self.encoding is not None
        white = np.full((self.tile_size.height, self.tile_size.width, self.samples_per_pixel), 255, np.uint8)
        if self.source_lossy:
            return codec.encode(white, codec.lossy_encoding(self.samples_per_pixel))
        return codec.encode(white, codec.lossless_encoding(self.samples_per_pixel))

    def read_frame(self, index: int) -> bytes:
        frame = self._order[index]
        if frame is None:
            return self._blank
        span = self._spans[frame]
        data = read_span(self._fd, span)
        if self.read_observer is not None and len(span.fragments) == 1:
            self.read_observer(self.path, span.fragments[0][0], data)
        return data

    def frame_lengths(self) -> Sequence[int] | None:
        if self.encoding is None or any(frame is None for frame in self._order):
            return None
        return [self._spans[frame].length for frame in self._order if frame is not None]

    def decode_tile(self, col: int, row: int) -> Pixels:
        index = row * self.grid.width + col
        shape = (self.tile_size.height, self.tile_size.width, self.samples_per_pixel)
        frame = self._order[index]
        if frame is None:
            return np.full(shape, 255, np.uint8)
        data = read_span(self._fd, self._spans[frame])
        if not self._native:
            assert self._stream is not None
            return codec.decode(
                data, FrameEncoding(self._stream, str(self.dataset.PhotometricInterpretation))
            )
        array = np.frombuffer(data, np.uint8)
        if self.samples_per_pixel > 1 and int(self.dataset.get("PlanarConfiguration", 0)) == 1:
            return array.reshape(self.samples_per_pixel, shape[0], shape[1]).transpose(1, 2, 0).copy()
        return array.reshape(shape)

    def close(self) -> None:
        os.close(self._fd)


class DicomSource(SlideSource):
    format_name = "dicom_wsi"
    display_name = "DICOM WSI"
    priority = 90

    @classmethod
    def detect(cls, path: Path) -> bool:
        return is_dicom(path)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._files = list(options.members) or [path]
        images = [self._open(member) for member in self._files]
        series = {str(image.dataset.SeriesInstanceUID) for image in images}
        if len(series) > 1:
            raise CorruptSourceError(path, f"files of {len(series)} series given as one slide")
        volumes = [image for image in images if image.flavor is ImageFlavor.VOLUME]
        if not volumes:
            raise UnsupportedFormatError(path, "the series has no VOLUME image (only associated images)")
        self._levels = sorted(volumes, key=lambda image: -image.size.area)
        self._associated = [image for image in images if image.flavor is not ImageFlavor.VOLUME]

    def _open(self, path: Path) -> DicomImage:
        try:
            with path.open("rb") as fp:
                dataset = pydicom.dcmread(fp, stop_before_pixels=True)
                tell = fp.tell()
                size = os.fstat(fp.fileno()).st_size
                return self._image(path, fp, dataset, tell, size)
        except (InvalidDicomError, OSError, EOFError, struct_error()) as exc:
            raise CorruptSourceError(path, f"not a readable DICOM file ({exc})") from exc

    def _image(self, path: Path, fp: Any, dataset: Dataset, tell: int, size: int) -> DicomImage:
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class != VL_WSI:
            raise UnsupportedFormatError(
                path, f"SOP class {sop_class or '(none)'} is not VL Whole Slide Microscopy Image"
            )
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            check_uid(path, keyword, dataset.get(keyword))
        if dataset.get("FrameOfReferenceUID"):
            check_uid(path, "FrameOfReferenceUID", dataset.FrameOfReferenceUID)
        image_type = dataset.get("ImageType")
        if not image_type or len(image_type) < 3:
            raise CorruptSourceError(
                path,
                "ImageType (0008,0008) is missing or has fewer than 3 values: cannot tell a "
                "pyramid level from a label or overview; set it at the source "
                "(e.g. ORIGINAL\\PRIMARY\\VOLUME\\NONE)",
            )
        if str(image_type[2]).upper() not in ImageFlavor.__members__:
            raise CorruptSourceError(
                path, f"ImageType value 3 {image_type[2]!r} is not VOLUME, LABEL, OVERVIEW or THUMBNAIL"
            )
        for keyword in (
            "Rows",
            "Columns",
            "TotalPixelMatrixColumns",
            "TotalPixelMatrixRows",
            "SamplesPerPixel",
        ):
            if dataset.get(keyword) in (None, "", 0):
                raise CorruptSourceError(path, f"{keyword} is missing")
        if int(dataset.get("BitsAllocated", 8)) != 8:
            raise UnsupportedFormatError(
                path, f"BitsAllocated {dataset.BitsAllocated}: lamina reads 8-bit slides"
            )
        if "PixelData" not in dataset and tell >= size:
            raise CorruptSourceError(path, "no Pixel Data: the file is truncated or holds no image")
        ts = str(dataset.file_meta.get("TransferSyntaxUID", ""))
        if ts not in _COPIED and ts not in _NATIVE and ts not in _TRANSCODED:
            raise UnsupportedFormatError(path, f"transfer syntax {ts} is not supported yet")
        frames = int(dataset.get("NumberOfFrames", 1))
        frame_size = int(dataset.Rows) * int(dataset.Columns) * int(dataset.SamplesPerPixel)
        try:
            spans = locate_frames(
                fp,
                tell,
                frames,
                ts not in _NATIVE,
                ts != "1.2.840.10008.1.2",
                frame_size,
                size,
                _extended_offsets(dataset),
            )
        except ValueError as exc:
            raise CorruptSourceError(path, str(exc)) from exc
        found = _dataset_spacing(dataset)
        spacing: SizeMm | None = found
        if str(image_type[2]).upper() == ImageFlavor.VOLUME:
            spacing = require_spacing(path, found, self.options, "no PixelMeasuresSequence")
        return DicomImage(path, dataset, spans, spacing)

    @property
    def files(self) -> Sequence[Path]:
        return self._files

    @cached_property
    def metadata(self) -> SlideMetadata:
        ds = self._levels[0].dataset
        specimen = ds.get("SpecimenDescriptionSequence")
        specimen_id = str(specimen[0].get("SpecimenIdentifier", "")) if specimen else ""
        versions = ds.get("SoftwareVersions")
        return SlideMetadata(
            manufacturer=str(ds.get("Manufacturer", "")) or None,
            model_name=str(ds.get("ManufacturerModelName", "")) or None,
            device_serial_number=str(ds.get("DeviceSerialNumber", "")) or None,
            software_versions=tuple(
                str(v)
                for v in (
                    versions
                    if isinstance(versions, Sequence) and not isinstance(versions, str)
                    else [versions]
                    if versions
                    else []
                )
            ),
            icc_profile=_icc(ds),
            identity=SlideIdentity(
                patient_id=str(ds.get("PatientID", "")) or None,
                patient_name=str(ds.get("PatientName", "")) or None,
                birth_date=str(ds.get("PatientBirthDate", "")) or None,
                sex=str(ds.get("PatientSex", "")) or None,
                accession_number=str(ds.get("AccessionNumber", "")) or None,
                specimen_id=specimen_id or None,
                container_id=str(ds.get("ContainerIdentifier", "")) or None,
            ),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        )

    def close(self) -> None:
        for image in [*self._levels, *self._associated]:
            if isinstance(image, DicomImage):
                image.close()


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def _lossy_history(dataset: Dataset) -> tuple[str | None, float | None]:
    """The first lossy compression a DICOM image records (LossyImageCompressionMethod/Ratio)."""
    methods = dataset.get("LossyImageCompressionMethod")
    ratios = dataset.get("LossyImageCompressionRatio")
    method = str(
        methods[0] if isinstance(methods, Sequence) and not isinstance(methods, str) else methods or ""
    )
    try:
        ratio = float(ratios[0] if isinstance(ratios, Sequence) and not isinstance(ratios, str) else ratios)
    except (TypeError, ValueError, IndexError):
        ratio = None
    return method or None, ratio


def _extended_offsets(dataset: Dataset) -> list[int] | None:
    table = dataset.get("ExtendedOffsetTable")
    if not table:
        return None
    return list(np.frombuffer(bytes(table), "<u8").astype(int))


def _dataset_spacing(dataset: Dataset) -> SizeMm | None:
    shared = dataset.get("SharedFunctionalGroupsSequence")
    try:
        spacing = shared[0].PixelMeasuresSequence[0].PixelSpacing
        row, column = float(spacing[0]), float(spacing[1])
        return SizeMm(column, row)
    except (AttributeError, IndexError, TypeError, ValueError, KeyError):
        pass
    width, height = dataset.get("ImagedVolumeWidth"), dataset.get("ImagedVolumeHeight")
    if width and height:
        return SizeMm(
            float(width) / int(dataset.TotalPixelMatrixColumns),
            float(height) / int(dataset.TotalPixelMatrixRows),
        )
    return None


def _icc(dataset: Dataset) -> bytes | None:
    paths = dataset.get("OpticalPathSequence")
    if paths and "ICCProfile" in paths[0]:
        return bytes(paths[0].ICCProfile)
    return None
