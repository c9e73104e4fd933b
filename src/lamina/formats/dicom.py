"""DICOM WSI written by other systems (scanners, converters, PACS): validated, repaired, copied.

Frames are copied as stored when their transfer syntax is compressed; uncompressed frames are
re-encoded losslessly. Focal planes (z-stacks) and optical paths (channels) are read from
TILED_FULL and TILED_SPARSE instances alike (see :mod:`lamina.formats.dicom_planes`), and grey
samples of up to 16 bits (BitsAllocated 16, MONOCHROME2). A level whose planes or channels are
split across several instances is refused, naming them. Identity and UIDs are kept. What is
safely repairable (a missing type 2 attribute, a photometric interpretation that contradicts the
JPEG stream) is repaired by the writer and reported; what is not (invalid UIDs, no ImageType,
inconsistent frame counts) is refused with the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import uid
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from lamina.errors import CodecError, CorruptSourceError, UnsupportedFormatError
from lamina.formats import codec
from lamina.formats.dicom_frames import FrameSpan, locate_frames, read_span
from lamina.formats.dicom_header import describe_tag, read_header
from lamina.formats.dicom_planes import (
    FrameLayout,
    complete_spacing_between_slices,
    focal_plane_spacing_mm,
    optical_path_ids,
    optical_paths,
    tiled_full_layout,
    tiled_sparse_layout,
)
from lamina.formats.source import (
    FrameEncoding,
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    TransferSyntax,
)
from lamina.formats.tiff_common import require_spacing
from lamina.model.enums import (
    DimensionOrganizationTypeValues,
    ImageFlavorValues,
    LossyImageCompressionMethodValues,
    LossyImageCompressionValues,
    PatientSexValues,
    PhotometricInterpretationValues,
)
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

Photometric = PhotometricInterpretationValues
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: Frames in these transfer syntaxes are copied as stored: every WSI viewer decodes them.
_COPIED: dict[str, TransferSyntax] = {
    uid.JPEGBaseline8Bit: TransferSyntax.JPEG_BASELINE_8BIT,
    uid.JPEG2000Lossless: TransferSyntax.JPEG_2000_LOSSLESS,
    uid.JPEG2000: TransferSyntax.JPEG_2000,
}
#: Lossless encodings that OpenSlide and browsers do not read: decoded, re-encoded as
#: JPEG 2000 lossless (pixel for pixel the same).
_TRANSCODED: dict[str, TransferSyntax] = {
    uid.JPEGLSLossless: TransferSyntax.JPEG_LS_LOSSLESS,
    uid.HTJ2KLossless: TransferSyntax.HTJ2K_LOSSLESS,
}
_NATIVE = {uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian}
#: The copied syntaxes whose frames are lossy, and the method they record.
_LOSSY_TS: dict[str, LossyImageCompressionMethodValues] = {
    uid.JPEGBaseline8Bit: LossyImageCompressionMethodValues.ISO_10918_1,
    uid.JPEG2000: LossyImageCompressionMethodValues.ISO_15444_1,
}
_DAMAGED = "the file is damaged: export it again from the source system"


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
        try:
            self._describe(dataset, spacing)
        except BaseException:
            os.close(self._fd)
            raise

    def _describe(self, dataset: Dataset, spacing: SizeMm | None) -> None:
        image_type = list(dataset.ImageType)
        self.flavor = ImageFlavorValues(str(image_type[2]).upper())
        self.size = SizePx(
            _count(self.path, dataset, "TotalPixelMatrixColumns"),
            _count(self.path, dataset, "TotalPixelMatrixRows"),
        )
        self.tile_size = SizePx(_count(self.path, dataset, "Columns"), _count(self.path, dataset, "Rows"))
        self.samples_per_pixel = _count(self.path, dataset, "SamplesPerPixel")
        allocated = _count(self.path, dataset, "BitsAllocated", 8)
        self.bits_stored = min(_count(self.path, dataset, "BitsStored", allocated), allocated)
        self.pixel_spacing = spacing
        ts = str(dataset.file_meta.TransferSyntaxUID)
        marked = str(dataset.get("LossyImageCompression", "")) == LossyImageCompressionValues.LOSSY
        self.source_lossy = ts in _LOSSY_TS or marked
        if self.source_lossy and ts not in _LOSSY_TS:
            self.lossy_method, self.lossy_ratio = _lossy_history(dataset)
        self._photometric = _photometric(self.path, dataset)
        self.layout = self._layout()
        self.focal_planes = self.layout.focal_planes
        self.optical_paths = self.layout.optical_paths
        complete_spacing_between_slices(dataset, self.layout)
        self._order = self.layout.order
        self._native = ts in _NATIVE
        self._stream = _COPIED.get(ts) or _TRANSCODED.get(ts)
        self.encoding: FrameEncoding | None = None
        if ts in _COPIED:
            photometric = self._photometric
            if _COPIED[ts] is TransferSyntax.JPEG_BASELINE_8BIT:
                photometric = self._jpeg_photometric(photometric)
            self.encoding = FrameEncoding(_COPIED[ts], photometric, _LOSSY_TS.get(ts))

    def _jpeg_photometric(self, declared: Photometric) -> Photometric:
        try:
            info = codec.jpeg_info(read_span(self._fd, self._spans[0]))
        except CodecError as exc:
            raise CorruptSourceError(self.path, f"frame 1 is not a JPEG stream ({exc}); {_DAMAGED}") from exc
        if len(info.components) == 1:
            return Photometric.MONOCHROME2
        if info.adobe_transform is not None or info.rgb_coded or info.subsampled:
            if info.rgb_coded:
                return Photometric.RGB
            return codec.ycbcr_photometric()
        return codec.ycbcr_photometric() if declared is Photometric.YBR_FULL else declared

    def _layout(self) -> FrameLayout:
        """The stored frame of each tile of each focal plane and optical path, in TILED_FULL order."""
        dataset, count = self.dataset, len(self._spans)
        planes = _count(self.path, dataset, "TotalPixelMatrixFocalPlanes", 1)
        if str(dataset.get("DimensionOrganizationType", "")) == DimensionOrganizationTypeValues.TILED_SPARSE:
            return tiled_sparse_layout(self.path, dataset, count, self.grid, self.tile_size, planes)
        paths = _count(self.path, dataset, "NumberOfOpticalPaths", max(1, len(optical_path_ids(dataset))))
        return tiled_full_layout(self.path, count, self.grid, planes, paths)

    @property
    def _background(self) -> int:
        """What a tile a sparse image leaves out holds: white for brightfield, black for
        fluorescence (as the pyramid pads)."""
        return 0 if self.optical_paths > 1 or self.bits_stored > 8 else 255

    @cached_property
    def _blank(self) -> bytes:
        assert self.encoding is not None
        shape = (self.tile_size.height, self.tile_size.width, self.samples_per_pixel)
        blank = np.full(shape, self._background, self.dtype)
        return codec.encode_like(blank, self.encoding)

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

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        shape = (self.tile_size.height, self.tile_size.width, self.samples_per_pixel)
        frame = self._order[self.frame_index(col, row, z, c)]
        if frame is None:
            return np.full(shape, self._background, self.dtype)
        data = read_span(self._fd, self._spans[frame])
        if not self._native:
            assert self._stream is not None
            try:
                pixels = codec.decode(
                    data, FrameEncoding(self._stream, self._photometric), (shape[1], shape[0])
                )
            except CodecError as exc:
                raise CorruptSourceError(
                    self.path, f"frame {frame + 1} (tile {col}, {row}) cannot be decoded: {exc}; {_DAMAGED}"
                ) from exc
            if pixels.shape != shape:
                raise CorruptSourceError(
                    self.path,
                    f"frame {frame + 1} decodes to {pixels.shape[1]}x{pixels.shape[0]} pixels with "
                    f"{pixels.shape[2]} samples, not the {shape[1]}x{shape[0]}x{shape[2]} of Columns, "
                    f"Rows and SamplesPerPixel; {_DAMAGED}",
                )
            if pixels.dtype != self.dtype:
                raise CorruptSourceError(
                    self.path,
                    f"frame {frame + 1} decodes to {pixels.dtype} samples, BitsStored "
                    f"{self.bits_stored} makes them {np.dtype(self.dtype)}; {_DAMAGED}",
                )
            return pixels
        array = np.frombuffer(data, "<u2" if self.bits_stored > 8 else np.uint8)
        if self.samples_per_pixel > 1 and str(self.dataset.get("PlanarConfiguration", 0)) == "1":
            return array.reshape(self.samples_per_pixel, shape[0], shape[1]).transpose(1, 2, 0).copy()
        return array.reshape(shape)

    def close(self) -> None:
        os.close(self._fd)


class DicomSource(SlideSource):
    format_name = "dicom_wsi"
    display_name = "DICOM WSI"
    priority = 90
    suffixes = (".dcm", ".dicom")

    @classmethod
    def detect(cls, path: Path) -> bool:
        return is_dicom(path)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._files = list(options.members) or [path]
        images: list[DicomImage] = []
        try:
            for member in self._files:
                images.append(self._open(member))
            series = {str(image.dataset.SeriesInstanceUID) for image in images}
            if len(series) > 1:
                raise CorruptSourceError(path, f"files of {len(series)} series given as one slide")
            volumes = [image for image in images if image.flavor is ImageFlavorValues.VOLUME]
            if not volumes:
                raise UnsupportedFormatError(path, "the series has no VOLUME image (only associated images)")
            _refuse_split_levels(path, volumes)
        except BaseException:
            for image in images:
                image.close()
            raise
        self._levels = sorted(volumes, key=lambda image: -image.size.area)
        self._associated = [image for image in images if image.flavor is not ImageFlavorValues.VOLUME]

    def _open(self, path: Path) -> DicomImage:
        try:
            with path.open("rb") as fp:
                dataset = read_header(path, fp)
                tell = fp.tell()
                size = os.fstat(fp.fileno()).st_size
                return self._image(path, fp, dataset, tell, size)
        except OSError as exc:
            raise CorruptSourceError(path, f"cannot be read ({exc.strerror})") from exc

    def _image(self, path: Path, fp: Any, dataset: Dataset, tell: int, size: int) -> DicomImage:
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class != uid.VLWholeSlideMicroscopyImageStorage:
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
        if str(image_type[2]).upper() not in ImageFlavorValues.__members__:
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
            _count(path, dataset, keyword)
        sample_bytes = _sample_bytes(path, dataset)
        if "PixelData" not in dataset and tell >= size:
            raise CorruptSourceError(path, "no Pixel Data: the file is truncated or holds no image")
        ts = str(dataset.file_meta.get("TransferSyntaxUID", ""))
        if ts not in _COPIED and ts not in _NATIVE and ts not in _TRANSCODED:
            raise UnsupportedFormatError(path, f"transfer syntax {ts} is not supported yet")
        if sample_bytes > 1 and ts == uid.JPEGBaseline8Bit:
            raise CorruptSourceError(
                path, f"BitsAllocated 16 in JPEG baseline frames, which hold 8; {_DAMAGED}"
            )
        frames = _count(path, dataset, "NumberOfFrames", 1)
        frame_size = (
            _count(path, dataset, "Rows")
            * _count(path, dataset, "Columns")
            * _count(path, dataset, "SamplesPerPixel")
            * sample_bytes
        )
        try:
            spans = locate_frames(
                fp,
                tell,
                frames,
                ts not in _NATIVE,
                ts != uid.ImplicitVRLittleEndian,
                frame_size,
                size,
                _extended_offsets(path, dataset),
            )
        except ValueError as exc:
            raise CorruptSourceError(path, str(exc)) from exc
        found = _dataset_spacing(dataset)
        spacing: SizeMm | None = found
        if str(image_type[2]).upper() == ImageFlavorValues.VOLUME:
            spacing = require_spacing(path, found, self.options, "no PixelMeasuresSequence")
        return DicomImage(path, dataset, spans, spacing)

    @property
    def files(self) -> Sequence[Path]:
        return self._files

    @cached_property
    def metadata(self) -> SlideMetadata:
        base = self._levels[0]
        assert isinstance(base, DicomImage)
        ds = base.dataset
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
                sex=_sex(ds.get("PatientSex")),
                accession_number=str(ds.get("AccessionNumber", "")) or None,
                specimen_id=specimen_id or None,
                container_id=str(ds.get("ContainerIdentifier", "")) or None,
            ),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
            optical_paths=optical_paths(ds),
            focal_plane_spacing_mm=(
                focal_plane_spacing_mm(ds, base.layout.z_offsets_um) if base.focal_planes > 1 else None
            ),
        )

    def close(self) -> None:
        for image in [*self._levels, *self._associated]:
            if isinstance(image, DicomImage):
                image.close()


def _refuse_split_levels(path: Path, volumes: Sequence[DicomImage]) -> None:
    """Refuse a series that stores one pyramid level in several instances (one per focal plane or
    optical path, as some converters write): lamina keeps one instance per level."""
    by_size: dict[SizePx, list[DicomImage]] = {}
    for image in volumes:
        by_size.setdefault(image.size, []).append(image)
    for size, images in by_size.items():
        if len(images) > 1:
            names = ", ".join(
                f"{image.path.name} ({image.focal_planes} focal planes, {image.optical_paths} optical paths, "
                f"SOPInstanceUID {image.dataset.SOPInstanceUID})"
                for image in images
            )
            raise UnsupportedFormatError(
                path,
                f"the level of {size} pixels is stored in {len(images)} instances: {names}; lamina "
                "does not merge focal planes or optical paths split across instances yet: export "
                "the level as one instance holding all of them",
            )


def _sample_bytes(path: Path, dataset: Dataset) -> int:
    """Bytes per sample: 1 (BitsAllocated 8), or 2 for unsigned grey samples of 9 to 16 bits."""
    allocated = _count(path, dataset, "BitsAllocated", 8)
    if allocated == 8:
        return 1
    stored = _count(path, dataset, "BitsStored", allocated)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    signed = str(dataset.get("PixelRepresentation", 0)) == "1"
    if allocated != 16 or not 8 < stored <= 16 or photometric != Photometric.MONOCHROME2 or signed:
        raise UnsupportedFormatError(
            path,
            f"BitsAllocated {allocated}, BitsStored {stored}, {photometric or 'no photometric'}"
            f"{', signed' if signed else ''}: lamina reads 8-bit samples, or unsigned MONOCHROME2 samples "
            "of up to 16 bits",
        )
    return 2


def _lossy_history(dataset: Dataset) -> tuple[LossyImageCompressionMethodValues | None, float | None]:
    """The first lossy compression a DICOM image records (LossyImageCompressionMethod/Ratio); a
    method that is not one of the standard's defined terms is left out (the writer's default)."""
    method = _first(dataset.get("LossyImageCompressionMethod"))
    try:
        ratio: float | None = float(_first(dataset.get("LossyImageCompressionRatio")))
    except (TypeError, ValueError):
        ratio = None
    try:
        return LossyImageCompressionMethodValues(method.strip()), ratio
    except ValueError:
        return None, ratio


def _first(value: object) -> str:
    """The first of a multi-valued attribute's values, as text ("" when it has none)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return str(value[0]) if len(value) else ""
    return "" if value is None else str(value)


def _sex(value: object) -> PatientSexValues | None:
    """PatientSex as the catalog keeps it; a value outside M, F, O (e.g. "U") is not kept there
    (the instances keep the source's own value)."""
    try:
        return PatientSexValues(str(value or "").strip().upper())
    except ValueError:
        return None


def _count(path: Path, dataset: Dataset, keyword: str, default: int | None = None) -> int:
    """A positive integer attribute (Rows, NumberOfFrames...), or a reason naming it."""
    value = dataset.get(keyword, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number <= 0:
        shown = "missing" if value in (None, "") else f"{str(value)[:20]!r}, not a positive whole number"
        raise CorruptSourceError(
            path, f"{describe_tag(tag_for_keyword(keyword) or 0)} is {shown}; {_DAMAGED}"
        )
    return number


def _photometric(path: Path, dataset: Dataset) -> PhotometricInterpretationValues:
    value = str(dataset.get("PhotometricInterpretation", "")).strip()
    try:
        return PhotometricInterpretationValues(value)
    except ValueError:
        known = ", ".join(PhotometricInterpretationValues)
        raise UnsupportedFormatError(
            path,
            f"PhotometricInterpretation {value[:20]!r} is not one a VL Whole Slide Microscopy "
            f"image uses ({known})",
        ) from None


def _extended_offsets(path: Path, dataset: Dataset) -> list[int] | None:
    table = dataset.get("ExtendedOffsetTable")
    if not table:
        return None
    data = bytes(table)
    if len(data) % 8:
        raise CorruptSourceError(
            path, f"ExtendedOffsetTable (7FE0,0001) holds {len(data)} bytes, not 8 per frame; {_DAMAGED}"
        )
    return [int(offset) for offset in np.frombuffer(data, "<u8")]


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
