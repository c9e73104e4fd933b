"""DICOM WSI sample written by a third-party writer (wsidicom).

The series imitates DICOM from another system: the pixels come from
:mod:`lamina.sample.content`, but the datasets, the frames and the files are
made by wsidicom's own metadata schema and file writer. One folder holds one
VL Whole Slide Microscopy Image file per level (levels downsampled by 2 until
the short side is at most one tile), a LABEL and an OVERVIEW instance. Levels
are TILED_FULL, 256x256 frames, JPEG baseline (YBR_FULL_422), with a basic
offset table. Patient, study, accession number, container identifier
(specimen ID), specimen description (organ, stain) and label text carry the
sample's identity. UIDs are derived from the seed, so a rerun gives the same
file names and UIDs.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image as Pillow
from pydicom.sr.coding import Code
from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid
from wsidicom import WsiDicom
from wsidicom.codec import Encoder, JpegSettings, LossyCompressionIsoStandard
from wsidicom.conceptcode import SpecimenStainsCode
from wsidicom.geometry import Point, PointMm, Size, SizeMm
from wsidicom.graphical_annotations import AnnotationInstance
from wsidicom.instance import ImageData, WsiDataset, WsiInstance
from wsidicom.instance.pillow_image_data import PillowImageData
from wsidicom.metadata import (
    Equipment,
    Image,
    ImageCoordinateSystem,
    ImageType,
    Label,
    LossyCompression,
    OpticalPath,
    Overview,
    Patient,
    PatientSex,
    Pyramid,
    Series,
    Slide,
    SlideSample,
    Staining,
    Study,
    WsiMetadata,
)
from wsidicom.metadata.schema.dicom import WsiMetadataDicomSchema
from wsidicom.source import Source

from lamina.sample.content import BACKGROUND, SlideContent, pyramid, srgb_profile
from lamina.sample.identity import LAB_NAME, ORGAN_SNOMED, Identity

__all__ = ["MPP", "TILE", "write_dicom_wsi"]

TILE = 256
MPP = 0.25
QUALITY = 85
_STAINS = {
    "HE": ("hematoxylin stain", "water soluble eosin stain"),
    "PAS": ("periodic acid Schiff stain",),
    "Masson trichrome": ("trichrome stain",),
}
_SCANNED = datetime.datetime(2026, 11, 28, 9, 14, 2)


class _ArrayImageData(ImageData):  # type: ignore[misc]  # wsidicom is untyped
    """One pyramid level held in memory as a numpy array, served tile by tile."""

    def __init__(self, pixels: NDArray[np.uint8], mpp: float) -> None:
        super().__init__(Encoder.create_for_settings(JpegSettings(quality=QUALITY)))
        self._pixels = pixels
        self._mpp = mpp

    transfer_syntax = JPEGBaseline8Bit
    samples_per_pixel = 3
    bits = 8
    photometric_interpretation = "YBR_FULL_422"
    thread_safe = True
    transcoder = None

    @property
    def image_size(self) -> Size:
        return Size(self._pixels.shape[1], self._pixels.shape[0])

    @property
    def tile_size(self) -> Size:
        return Size(TILE, TILE)

    @property
    def pixel_spacing(self) -> SizeMm:
        return SizeMm(self._mpp / 1000, self._mpp / 1000)

    @property
    def imaged_size(self) -> SizeMm:
        return SizeMm(self.image_size.width * self._mpp / 1000, self.image_size.height * self._mpp / 1000)

    @property
    def image_coordinate_system(self) -> ImageCoordinateSystem:
        return ImageCoordinateSystem(origin=PointMm(20.0, 10.0), rotation=0.0)

    @property
    def lossy_compression(self) -> list[LossyCompression]:
        """JPEG, with the compression ratio of the central tile as the estimate."""
        centre = Point(self.tiled_size.width // 2, self.tiled_size.height // 2)
        ratio = TILE * TILE * 3 / len(self.get_encoded_tile(centre, 0.0, "0"))
        return [LossyCompression(LossyCompressionIsoStandard.JPEG_LOSSY, round(ratio, 2))]

    def get_decoded_tile(self, tile_point: Point, z: float, path: str) -> Pillow.Image:
        top, left = tile_point.y * TILE, tile_point.x * TILE
        block = self._pixels[top : top + TILE, left : left + TILE]
        if block.shape[:2] != (TILE, TILE):
            padded = np.empty((TILE, TILE, 3), dtype=np.uint8)
            padded[...] = BACKGROUND
            padded[: block.shape[0], : block.shape[1]] = block
            block = padded
        return Pillow.fromarray(np.ascontiguousarray(block))

    def get_encoded_tile(self, tile: Point, z: float, path: str) -> bytes:
        return bytes(self.encoder.encode(self.get_decoded_tile(tile, z, path)))


class _MemorySource(Source):  # type: ignore[misc]
    """wsidicom source of in-memory instances."""

    def __init__(
        self,
        levels: list[WsiInstance],
        labels: list[WsiInstance],
        overviews: list[WsiInstance],
    ) -> None:
        super().__init__()
        self._levels, self._labels, self._overviews = levels, labels, overviews

    @property
    def base_dataset(self) -> WsiDataset:
        return self._levels[0].dataset

    @property
    def level_instances(self) -> list[WsiInstance]:
        return self._levels

    @property
    def label_instances(self) -> list[WsiInstance]:
        return self._labels

    @property
    def overview_instances(self) -> list[WsiInstance]:
        return self._overviews

    @property
    def thumbnail_instances(self) -> list[WsiInstance]:
        return []

    @property
    def annotation_instances(self) -> list[AnnotationInstance]:
        return []

    def close(self) -> None:
        """Release nothing: everything is in memory."""


def _uids(seed: int, identity: Identity) -> Iterator[UID]:
    counter = 0
    while True:
        counter += 1
        yield generate_uid(entropy_srcs=["lamina-sample", str(seed), identity.specimen_id, str(counter)])


def _metadata(identity: Identity, uids: Iterator[UID]) -> WsiMetadata:
    year, month, day = (int(identity.birth_date[i:j]) for i, j in ((0, 4), (4, 6), (6, 8)))
    organ = Code(ORGAN_SNOMED.get(identity.organ, "91723000"), "SCT", identity.organ)
    sample = SlideSample(
        identifier=identity.specimen_id,
        anatomical_sites=[organ],
        uid=next(uids),
        short_description=f"{identity.organ}, {identity.stain}",
    )
    stains = _STAINS.get(identity.stain, ("hematoxylin stain",))
    paths = [OpticalPath(identifier="0", description="Brightfield", icc_profile=srgb_profile())]
    return WsiMetadata(
        study=Study(
            uid=next(uids),
            identifier=identity.accession_number,
            date=_SCANNED.date(),
            time=_SCANNED.time(),
            accession_number=identity.accession_number,
            description=f"Histopathology {identity.organ}",
        ),
        series=Series(uid=next(uids), number=1, description="Whole slide image"),
        patient=Patient(
            name=identity.patient_name,
            identifier=identity.patient_id,
            birth_date=datetime.date(year, month, day),
            sex=PatientSex[identity.sex],
        ),
        equipment=Equipment(
            manufacturer="Lamina Sample Scanners",
            model_name="SYN-1",
            device_serial_number="SYN0001",
            software_versions=["wsidicom sample 1.0"],
        ),
        slide=Slide(
            identifier=identity.specimen_id,
            stainings=[Staining(substances=[SpecimenStainsCode(stain) for stain in stains])],
            samples=[sample],
        ),
        pyramid=Pyramid(
            uid=next(uids),
            image=Image(acquisition_datetime=_SCANNED),
            optical_paths=paths,
        ),
        label=Label(
            text=f"{LAB_NAME} {identity.accession_number} {identity.specimen_id}",
            barcode=identity.specimen_id,
            image=Image(acquisition_datetime=_SCANNED),
            optical_paths=paths,
        ),
        overview=Overview(image=Image(acquisition_datetime=_SCANNED), optical_paths=paths, contains_phi=True),
        frame_of_reference_uid=next(uids),
        dimension_organization_uids=[next(uids)],
    )


def _instances(
    images: Sequence[ImageData], metadata: WsiMetadata, image_type: ImageType
) -> list[WsiInstance]:
    schema = WsiMetadataDicomSchema()
    volume = image_type == ImageType.VOLUME
    return [
        WsiInstance.create_instance(
            image,
            WsiDataset(schema.dump(metadata, image_type, True)),
            image_type,
            index if volume else None,
        )
        for index, image in enumerate(images)
    ]


def _pin_content_datetime(path: Path) -> None:
    """Replace the save-time ContentDate/ContentTime wsidicom writes by fixed values.

    The values are patched in place (same length, explicit VR little endian),
    so the rest of the file stays exactly as wsidicom wrote it.
    """
    data = bytearray(path.read_bytes())
    for tag, value in ((b"\x08\x00\x23\x00DA", b"20261128"), (b"\x08\x00\x33\x00TM", b"091402.000000")):
        position = data.find(tag)
        if position >= 0:
            length = int.from_bytes(data[position + 6 : position + 8], "little")
            start = position + 8
            data[start : start + length] = value[:length].ljust(length)
    path.write_bytes(bytes(data))


def write_dicom_wsi(folder: Path, slide: SlideContent, identity: Identity, seed: int = 0) -> Path:
    """Write a DICOM WSI series (one file per level, label, overview) with wsidicom.

    Parameters
    ----------
    folder : pathlib.Path
        Output folder, created; it must not hold other DICOM files.
    slide : SlideContent
        Tissue, label and macro pixels.
    identity : Identity
        Patient, study and specimen of the series.
    seed : int, optional
        Seed for the UIDs.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uids = _uids(seed, identity)
    metadata = _metadata(identity, uids)
    levels: list[ImageData] = [
        _ArrayImageData(level, MPP * slide.pixels.shape[1] / level.shape[1])
        for level in pyramid(slide.pixels, 2, TILE)
    ]
    source = _MemorySource(
        _instances(levels, metadata, ImageType.VOLUME),
        _instances([PillowImageData(slide.label)], metadata, ImageType.LABEL),
        _instances([PillowImageData(slide.overview)], metadata, ImageType.OVERVIEW),
    )
    with WsiDicom(source) as wsi:
        files = wsi.save(folder, uid_generator=lambda: next(uids), workers=2, offset_table="bot")
    for file in files:
        _pin_content_datetime(Path(str(file)))
    return folder
