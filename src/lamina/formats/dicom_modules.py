"""The attributes of a VL Whole Slide Microscopy Image instance, module by module (PS3.3 A.32.8).

Each function fills one module; :func:`build_dataset` assembles them. Values come from the
slide's identity, the scanner's metadata and the image; nothing about the patient is invented.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, VLWholeSlideMicroscopyImageStorage, generate_uid

from lamina import __version__
from lamina.formats.source import FrameEncoding, OpticalPath, SlideMetadata, SourceImage
from lamina.model.enums import (
    DimensionOrganizationTypeValues,
    ImageFlavorValues,
    LossyImageCompressionValues,
    PhotometricInterpretationValues,
    YesNoValues,
)
from lamina.model.geometry import SizeMm
from lamina.model.slide import SlideIdentity

#: The SOP class lamina writes (pydicom's constant; the name kept for the modules that import it).
VL_WSI = VLWholeSlideMicroscopyImageStorage
IMPLEMENTATION_CLASS_UID = "2.25.246817293655187412301979124577935315771"
IMPLEMENTATION_VERSION = f"LAMINA_{__version__}"[:16]

#: SNOMED CT codes of organs labs name most often (PrimaryAnatomicStructureSequence).
ORGANS = {
    "colon": ("71854001", "Colon"),
    "rectum": ("34402009", "Rectum"),
    "stomach": ("69695003", "Stomach"),
    "kidney": ("64033007", "Kidney"),
    "breast": ("76752008", "Breast"),
    "lung": ("39607008", "Lung"),
    "prostate": ("41216001", "Prostate"),
    "skin": ("39937001", "Skin"),
    "liver": ("10200004", "Liver"),
    "lymph node": ("59441001", "Lymph node"),
    "uterus": ("35039007", "Uterus"),
    "thyroid": ("69748006", "Thyroid"),
    "pancreas": ("15776009", "Pancreas"),
    "bladder": ("89837001", "Urinary bladder"),
}
#: Substances of the usual stains (SNOMED CT), for the staining step of the specimen.
STAIN_SUBSTANCES = {
    "he": [("12710003", "hematoxylin stain"), ("36879007", "water soluble eosin stain")],
    "h&e": [("12710003", "hematoxylin stain"), ("36879007", "water soluble eosin stain")],
    "hes": [
        ("12710003", "hematoxylin stain"),
        ("36879007", "water soluble eosin stain"),
        ("33000006", "saffron stain"),
    ],
}


@dataclass(frozen=True)
class SeriesContext:
    """What every instance of one slide shares."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    dimension_organization_uid: str
    specimen_uid: str
    container_id: str
    identity: SlideIdentity
    metadata: SlideMetadata
    created: dt.datetime
    #: The slide's file, named in the reason when a tile of it cannot be decoded while writing.
    source_path: Path | None = None


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def file_meta(sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def patient_study_series(ds: Dataset, ctx: SeriesContext) -> None:
    ident = ctx.identity
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = ident.patient_name or ""
    ds.PatientID = ident.patient_id or ""
    ds.PatientBirthDate = ident.birth_date or ""
    ds.PatientSex = str(ident.sex or "")
    ds.StudyInstanceUID = ctx.study_instance_uid
    acquired = ctx.metadata.acquisition_datetime or ctx.created
    ds.StudyDate = acquired.strftime("%Y%m%d")
    ds.StudyTime = acquired.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ident.accession_number or ""
    ds.Modality = "SM"
    ds.SeriesInstanceUID = ctx.series_instance_uid
    ds.SeriesNumber = 1
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"


def equipment(ds: Dataset, meta: SlideMetadata) -> None:
    # Enhanced General Equipment makes these type 1: "unknown" where the file does not say.
    ds.Manufacturer = meta.manufacturer or "unknown"
    ds.ManufacturerModelName = meta.model_name or "unknown"
    ds.DeviceSerialNumber = meta.device_serial_number or "unknown"
    ds.SoftwareVersions = [*meta.software_versions, f"lamina {__version__}"]


def specimen(ds: Dataset, ctx: SeriesContext) -> None:
    ident = ctx.identity
    ds.ContainerIdentifier = ctx.container_id
    ds.IssuerOfTheContainerIdentifierSequence = DicomSequence([])
    ds.ContainerTypeCodeSequence = DicomSequence([code("433466003", "SCT", "Microscope slide")])
    description = Dataset()
    description.SpecimenIdentifier = ident.specimen_id or ctx.container_id
    description.SpecimenUID = ctx.specimen_uid
    description.IssuerOfTheSpecimenIdentifierSequence = DicomSequence([])
    description.SpecimenPreparationSequence = DicomSequence(
        [_staining_step(description.SpecimenIdentifier, ident.stain)] if ident.stain else []
    )
    organ = ORGANS.get((ident.organ or "").strip().lower())
    if organ is not None:
        description.PrimaryAnatomicStructureSequence = DicomSequence([code(organ[0], "SCT", organ[1])])
    if ident.organ or ident.stain:
        description.SpecimenShortDescription = " ".join(filter(None, [ident.organ, ident.stain]))[:64]
    ds.SpecimenDescriptionSequence = DicomSequence([description])


def _content_item(value_type: str, name: Dataset) -> Dataset:
    item = Dataset()
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([name])
    return item


def _staining_step(specimen_id: str, stain: str) -> Dataset:
    """A specimen preparation step (TID 8001/8004): the staining, with its substances."""
    items = []
    ident = _content_item("TEXT", code("121041", "DCM", "Specimen Identifier"))
    ident.TextValue = specimen_id
    items.append(ident)
    kind = _content_item("CODE", code("111701", "DCM", "Processing type"))
    kind.ConceptCodeSequence = DicomSequence([code("127790008", "SCT", "Staining")])
    items.append(kind)
    substances = STAIN_SUBSTANCES.get(stain.strip().lower())
    if substances:
        for value, meaning in substances:
            using = _content_item("CODE", code("424361007", "SCT", "Using substance"))
            using.ConceptCodeSequence = DicomSequence([code(value, "SCT", meaning)])
            items.append(using)
    else:
        using = _content_item("TEXT", code("424361007", "SCT", "Using substance"))
        using.TextValue = stain[:1024]
        items.append(using)
    step = Dataset()
    step.SpecimenPreparationStepContentItemSequence = DicomSequence(items)
    return step


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile, for colour images whose source carries none (PS3.3 C.8.12.5)."""
    from PIL import ImageCms

    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


#: A glass slide is 76 x 26 mm (ISO 8037-1): the nominal spacing of label and overview images
#: whose source gives none.
SLIDE_MM = (76.0, 26.0)


def nominal_spacing(source: SourceImage) -> SizeMm:
    """Spacing of an associated image without one: overview spans the slide, label its end."""
    width, height = source.size.width, source.size.height
    if source.flavor is ImageFlavorValues.OVERVIEW:
        mm = max(SLIDE_MM[0] / max(width, height), SLIDE_MM[1] / min(width, height))
    else:
        mm = SLIDE_MM[1] / max(width, height)
    return SizeMm(mm, mm)


def image_optical_paths(source: SourceImage, meta: SlideMetadata) -> list[tuple[str, OpticalPath]]:
    """The optical paths of one instance, with their identifiers: the slide's channels for its
    levels; for an image of one path in a slide of several (the RGB label, overview or thumbnail
    of a fluorescence scan), one brightfield path whose identifier follows the channels', so that
    an identifier means one path in the whole series."""
    channels = meta.optical_paths
    if source.optical_paths == len(channels) and channels:
        return [(str(number), channel) for number, channel in enumerate(channels, start=1)]
    return [(str(len(channels) + 1) if channels else "1", OpticalPath())]


def optical_path(ds: Dataset, source: SourceImage, meta: SlideMetadata, photometric: str) -> None:
    """One Optical Path Sequence item per channel (one for a brightfield scan)."""
    items = []
    for identifier, channel in image_optical_paths(source, meta):
        path = Dataset()
        path.OpticalPathIdentifier = identifier
        if channel.description:
            described = channel.description
            if channel.emission_nm:
                described += f" (emission {channel.emission_nm:g} nm)"
            path.OpticalPathDescription = described[:1024]
        illumination = (
            code("111743", "DCM", "Epifluorescence illumination")
            if channel.fluorescence
            else code("111744", "DCM", "Brightfield illumination")
        )
        path.IlluminationTypeCodeSequence = DicomSequence([illumination])
        if channel.illumination_nm:
            path.IlluminationWaveLength = float(channel.illumination_nm)
        else:
            path.IlluminationColorCodeSequence = DicomSequence([code("414298005", "SCT", "Full Spectrum")])
        if photometric != PhotometricInterpretationValues.MONOCHROME2:
            path.ICCProfile = meta.icc_profile or srgb_profile()
            if not meta.icc_profile:
                path.ColorSpace = "SRGB"
        elif channel.color is not None:
            _palette(path, channel.color)
        if meta.objective_power:
            path.ObjectiveLensPower = f"{meta.objective_power:g}"
        items.append(path)
    ds.NumberOfOpticalPaths = len(items)
    ds.OpticalPathSequence = DicomSequence(items)


def _palette(path: Dataset, color: tuple[int, int, int]) -> None:
    """The channel's colour as a Palette Color Lookup Table of the optical path (PS3.3 C.8.12.5.1):
    256 entries of 16 bits from black to the colour, which viewers use to tint the grey samples."""
    ramp = np.linspace(0.0, 1.0, 256)
    path.PaletteColorLookupTableUID = generate_uid()
    for name, value in zip(("Red", "Green", "Blue"), color, strict=True):
        setattr(path, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        table = np.round(ramp * value * 257).astype("<u2")
        setattr(path, f"{name}PaletteColorLookupTableData", table.tobytes())


def acquisition_datetime(acquired: dt.datetime) -> str:
    """AcquisitionDateTime (DT) with the scanner's UTC offset when its time zone is known
    (``20261128091402+0100``, PS3.5 6.2): the offset belongs to this value alone, so it is not
    written as TimezoneOffsetFromUTC, which would also apply to ContentDate and ContentTime."""
    text = acquired.strftime("%Y%m%d%H%M%S")
    offset = acquired.utcoffset()
    if offset is None:
        return text
    return text + acquired.strftime("%z")[:5]


def image(
    ds: Dataset,
    ctx: SeriesContext,
    source: SourceImage,
    encoding: FrameEncoding,
    image_type: list[str],
    instance_number: int,
    lossy: tuple[str, float | None] | None,
) -> None:
    created = ctx.created
    acquired = ctx.metadata.acquisition_datetime or created
    ds.ImageType = image_type
    ds.InstanceNumber = instance_number
    ds.ContentDate = created.strftime("%Y%m%d")
    ds.ContentTime = created.strftime("%H%M%S")
    ds.AcquisitionDateTime = acquisition_datetime(acquired)
    ds.SamplesPerPixel = source.samples_per_pixel
    ds.PhotometricInterpretation = str(encoding.photometric_interpretation)
    if source.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = source.tile_size.height
    ds.Columns = source.tile_size.width
    # the VL WSI IOD enumerates BitsStored 8 and 16 (a 12-bit camera's samples are stored in 16)
    bits = 8 if source.bits_stored <= 8 else 16
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if encoding.photometric_interpretation == PhotometricInterpretationValues.MONOCHROME2:
        # grey samples are shown as stored (PS3.3 C.8.12.4: 1C for MONOCHROME2)
        ds.PresentationLUTShape = "IDENTITY"
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
    ds.NumberOfFrames = source.frame_count
    ds.TotalPixelMatrixColumns = source.size.width
    ds.TotalPixelMatrixRows = source.size.height
    ds.TotalPixelMatrixFocalPlanes = source.focal_planes
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 0
    origin.YOffsetInSlideCoordinateSystem = 0
    ds.TotalPixelMatrixOriginSequence = DicomSequence([origin])
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.VolumetricProperties = "VOLUME"
    with_label = source.flavor in (ImageFlavorValues.LABEL, ImageFlavorValues.OVERVIEW)
    ds.SpecimenLabelInImage = str(YesNoValues.YES if with_label else YesNoValues.NO)
    if source.flavor is ImageFlavorValues.LABEL:
        ds.LabelText = ""
        ds.BarcodeValue = ""
    ds.BurnedInAnnotation = str(YesNoValues.YES if with_label else YesNoValues.NO)
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = str(YesNoValues.NO)
    ds.AcquisitionContextSequence = DicomSequence([])
    if lossy is not None:
        method, ratio = lossy
        ds.LossyImageCompression = str(LossyImageCompressionValues.LOSSY)
        if ratio is not None:
            ds.LossyImageCompressionRatio = [f"{ratio:.2f}"[:16]]
        ds.LossyImageCompressionMethod = [str(method)]
    else:
        ds.LossyImageCompression = str(LossyImageCompressionValues.NOT_LOSSY)
    _frames(ds, ctx, source, image_type)


def _frames(ds: Dataset, ctx: SeriesContext, source: SourceImage, image_type: list[str]) -> None:
    shared = Dataset()
    spacing = source.pixel_spacing or nominal_spacing(source)
    if spacing is not None:
        measures = Dataset()
        measures.PixelSpacing = [f"{spacing.height:.10g}", f"{spacing.width:.10g}"]
        measures.SliceThickness = "0.001"
        if source.focal_planes > 1:
            between = ctx.metadata.focal_plane_spacing_mm or 0.001
            measures.SpacingBetweenSlices = f"{between:.10g}"
        shared.PixelMeasuresSequence = DicomSequence([measures])
        ds.ImagedVolumeWidth = spacing.width * source.size.width
        ds.ImagedVolumeHeight = spacing.height * source.size.height
        ds.ImagedVolumeDepth = 0.001
    frame_type = Dataset()
    frame_type.FrameType = image_type
    shared.WholeSlideMicroscopyImageFrameTypeSequence = DicomSequence([frame_type])
    if source.optical_paths == 1:
        # several optical paths: each frame's is implied by its place (TILED_FULL)
        path_id = Dataset()
        path_id.OpticalPathIdentifier = image_optical_paths(source, ctx.metadata)[0][0]
        shared.OpticalPathIdentificationSequence = DicomSequence([path_id])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.DimensionOrganizationType = str(DimensionOrganizationTypeValues.TILED_FULL)
    organisation = Dataset()
    organisation.DimensionOrganizationUID = ctx.dimension_organization_uid
    ds.DimensionOrganizationSequence = DicomSequence([organisation])
    indices = []
    for keyword in ("ColumnPositionInTotalImagePixelMatrix", "RowPositionInTotalImagePixelMatrix"):
        index = Dataset()
        index.DimensionIndexPointer = keyword
        index.FunctionalGroupPointer = "PlanePositionSlideSequence"
        index.DimensionOrganizationUID = ctx.dimension_organization_uid
        indices.append(index)
    if source.focal_planes > 1:
        index = Dataset()
        index.DimensionIndexPointer = "ZOffsetInSlideCoordinateSystem"
        index.FunctionalGroupPointer = "PlanePositionSlideSequence"
        index.DimensionOrganizationUID = ctx.dimension_organization_uid
        indices.append(index)
    if source.optical_paths > 1:
        index = Dataset()
        index.DimensionIndexPointer = "OpticalPathIdentifier"
        index.FunctionalGroupPointer = "OpticalPathIdentificationSequence"
        index.DimensionOrganizationUID = ctx.dimension_organization_uid
        indices.append(index)
    ds.DimensionIndexSequence = DicomSequence(indices)


def build_dataset(
    ctx: SeriesContext,
    source: SourceImage,
    encoding: FrameEncoding,
    sop_instance_uid: str,
    image_type: list[str],
    instance_number: int,
    lossy: tuple[str, float | None] | None,
) -> Dataset:
    """A complete dataset for one instance, without Pixel Data."""
    ds = Dataset()
    ds.file_meta = file_meta(sop_instance_uid, encoding.transfer_syntax.value)
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    patient_study_series(ds, ctx)
    equipment(ds, ctx.metadata)
    specimen(ds, ctx)
    optical_path(ds, source, ctx.metadata, encoding.photometric_interpretation)
    image(ds, ctx, source, encoding, image_type, instance_number, lossy)
    return ds
