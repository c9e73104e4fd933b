"""Coded values of DICOM attributes, one enum per attribute, named after it (as highdicom does).

Each enum is a :class:`~enum.StrEnum` whose values are the DICOM code strings, so a member is
written to a dataset, a JSON document or a catalog column exactly as the string was before:
``str(PatientSexValues.F) == "F"`` and ``PatientSexValues.F == "F"``. Only the values lamina
reads or writes are listed; the attribute's definition in PS3.3 is cited for the others.
"""

from __future__ import annotations

from enum import StrEnum


class PatientSexValues(StrEnum):
    """PatientSex (0010,0040), PS3.3 C.7.1.1: male, female, other."""

    M = "M"
    F = "F"
    O = "O"  # noqa: E741 - the standard's code


class PhotometricInterpretationValues(StrEnum):
    """PhotometricInterpretation (0028,0004), PS3.3 C.7.6.3.1.2, as VL WSI frames use it."""

    MONOCHROME2 = "MONOCHROME2"
    RGB = "RGB"
    YBR_FULL = "YBR_FULL"
    YBR_FULL_422 = "YBR_FULL_422"
    YBR_ICT = "YBR_ICT"
    YBR_RCT = "YBR_RCT"


class LossyImageCompressionValues(StrEnum):
    """LossyImageCompression (0028,2110), PS3.3 C.7.6.1.1.5: were the pixels ever lossy?"""

    NOT_LOSSY = "00"
    LOSSY = "01"


class LossyImageCompressionMethodValues(StrEnum):
    """LossyImageCompressionMethod (0028,2114), PS3.3 C.7.6.1.1.5.1: the lossy codec's standard."""

    ISO_10918_1 = "ISO_10918_1"  # JPEG lossy
    ISO_14495_1 = "ISO_14495_1"  # JPEG-LS near-lossless
    ISO_15444_1 = "ISO_15444_1"  # JPEG 2000 irreversible
    ISO_15444_15 = "ISO_15444_15"  # High-Throughput JPEG 2000
    ISO_18181_1 = "ISO_18181_1"  # JPEG XL
    ISO_13818_2 = "ISO_13818_2"  # MPEG-2
    ISO_14496_10 = "ISO_14496_10"  # H.264
    ISO_23008_2 = "ISO_23008_2"  # HEVC
    # defined terms may be extended (PS3.3 C.7.6.1.1.5.1 lists none for these scanners' codecs):
    ISO_29199_2 = "ISO_29199_2"  # JPEG XR (Zeiss CZI subblocks)
    PHILIPS_ISYNTAX = "PHILIPS_ISYNTAX"  # Philips' wavelet coefficients (iSyntax)


class ImageFlavorValues(StrEnum):
    """Value 3 of ImageType (0008,0008) for VL Whole Slide Microscopy images, PS3.3 C.8.12.4.1.1."""

    VOLUME = "VOLUME"
    LABEL = "LABEL"
    OVERVIEW = "OVERVIEW"
    THUMBNAIL = "THUMBNAIL"


class PixelDataCharacteristicsValues(StrEnum):
    """Value 1 of ImageType (0008,0008), PS3.3 C.7.6.1.1.2: pixels as acquired, or computed."""

    ORIGINAL = "ORIGINAL"
    DERIVED = "DERIVED"


class PatientExaminationCharacteristicsValues(StrEnum):
    """Value 2 of ImageType (0008,0008), PS3.3 C.7.6.1.1.2."""

    PRIMARY = "PRIMARY"
    SECONDARY = "SECONDARY"


class DerivedPixelContrastValues(StrEnum):
    """Value 4 of ImageType (0008,0008) for VL WSI, PS3.3 C.8.12.4.1.1: NONE, or RESAMPLED for a
    level computed from another."""

    NONE = "NONE"
    RESAMPLED = "RESAMPLED"


class DimensionOrganizationTypeValues(StrEnum):
    """DimensionOrganizationType (0020,9311), PS3.3 C.7.6.17.3: how the frames tile the matrix."""

    TILED_FULL = "TILED_FULL"
    TILED_SPARSE = "TILED_SPARSE"


class YesNoValues(StrEnum):
    """The YES/NO attributes of VL WSI: SpecimenLabelInImage, BurnedInAnnotation,
    ExtendedDepthOfField."""

    YES = "YES"
    NO = "NO"


def image_type(
    characteristics: PixelDataCharacteristicsValues,
    flavor: ImageFlavorValues,
    contrast: DerivedPixelContrastValues,
) -> list[str]:
    """ImageType of a VL WSI instance lamina writes (value 2 is always PRIMARY)."""
    values = (characteristics, PatientExaminationCharacteristicsValues.PRIMARY, flavor, contrast)
    return [str(value) for value in values]
