"""What happens to each attribute of a VL Whole Slide Microscopy Image when it leaves the site.

The tables are a *keep list*: an attribute is written out only when it is named here with an
action; anything else is removed, and an unknown attribute of a text value representation
quarantines the slide (a vendor or file variant nobody has reviewed). This is stricter than the
Basic Application Level Confidentiality Profile (PS3.15 E.1.1, table E.1-1), which lists what to
remove and lets the rest through: for one SOP class we can name everything a slide needs.

The profile's options that keep a slide useful decide a few rows:

- Retain Device Identity (E.3.5): Manufacturer, model, DeviceSerialNumber, DeviceUID,
  SoftwareVersions, StationName are kept;
- Retain Longitudinal Temporal Information with Modified Dates (E.3.6): every DA and DT is moved
  back by the patient's offset; TM values are kept (a time of day without its date says little);
- Clean Descriptors (E.3.5): descriptions are kept only when every word of them is in
  :data:`SAFE_WORDS` (organs, stains, the words of slide imaging); otherwise removed.
"""

from __future__ import annotations

from enum import StrEnum

from lamina.formats.dicom_modules import ORGANS, STAIN_SUBSTANCES


class Action(StrEnum):
    """What the de-identification does with one attribute."""

    KEEP = "keep"  # structural, coded, numeric, or instrument settings
    UID = "uid"  # replaced by ExchangeKeys.uid (kept when a well-known UID: see UID_KEPT)
    DATE = "date"  # DA / DT moved back by the patient's offset
    EMPTY = "empty"  # type 2: present with no value
    REMOVE = "remove"  # a profile attribute that identifies: gone
    SPECIMEN = "specimen"  # a container / specimen identifier: replaced by its keyed pseudonym
    CLEAN = "clean"  # a description: kept when every word is safe, otherwise removed
    SET = "set"  # written by the de-identification itself (identity, method)


#: Value representations that hold free text or that may (UN: a value pydicom cannot type).
TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN"})

#: Private attributes that are kept. Empty: lamina writes none, and vendors' private blocks
#: hold text (file names, operators, barcodes) often enough that none is kept unreviewed.
SAFE_PRIVATE_TAGS: frozenset[int] = frozenset()

#: The SOP classes whose attributes the tables cover.
KNOWN_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.77.1.6"})  # VL Whole Slide Microscopy Image

_STRUCTURE = """
SpecificCharacterSet ImageType SOPClassUID Modality SeriesNumber InstanceNumber
PositionReferenceIndicator SamplesPerPixel PhotometricInterpretation PlanarConfiguration Rows Columns
BitsAllocated BitsStored HighBit PixelRepresentation NumberOfFrames TotalPixelMatrixColumns
TotalPixelMatrixRows TotalPixelMatrixFocalPlanes TotalPixelMatrixOriginSequence
XOffsetInSlideCoordinateSystem YOffsetInSlideCoordinateSystem ZOffsetInSlideCoordinateSystem
ImageOrientationSlide VolumetricProperties SpecimenLabelInImage BurnedInAnnotation
RecognizableVisualFeatures FocusMethod ExtendedDepthOfField NumberOfFocalPlanes
DistanceBetweenFocalPlanes LossyImageCompression LossyImageCompressionRatio
LossyImageCompressionMethod ImagedVolumeWidth ImagedVolumeHeight ImagedVolumeDepth
SharedFunctionalGroupsSequence PerFrameFunctionalGroupsSequence PixelMeasuresSequence PixelSpacing
SliceThickness SpacingBetweenSlices WholeSlideMicroscopyImageFrameTypeSequence FrameType
OpticalPathIdentificationSequence PlanePositionSlideSequence ColumnPositionInTotalImagePixelMatrix
RowPositionInTotalImagePixelMatrix FrameContentSequence DimensionIndexValues
DimensionOrganizationType DimensionOrganizationSequence DimensionIndexSequence DimensionIndexPointer
FunctionalGroupPointer ExtendedOffsetTable ExtendedOffsetTableLengths NumberOfOpticalPaths
OpticalPathSequence OpticalPathIdentifier OpticalPathDescription IlluminationTypeCodeSequence
IlluminationColorCodeSequence IlluminationWaveLength IlluminatorTypeCodeSequence ICCProfile ColorSpace
ObjectiveLensPower ObjectiveLensNumericalAperture CondenserLensPower LensesCodeSequence
LightPathFilterPassThroughWavelength LightPathFilterPassBand ImagePathFilterPassThroughWavelength
ImagePathFilterPassBand LightPathFilterTypeStackCodeSequence ImagePathFilterTypeStackCodeSequence
ChannelDescriptionCodeSequence PaletteColorLookupTableSequence
ContainerTypeCodeSequence ContainerComponentSequence ContainerComponentTypeCodeSequence
ContainerComponentMaterial ContainerComponentThickness SpecimenDescriptionSequence
PrimaryAnatomicStructureSequence PrimaryAnatomicStructureModifierSequence SpecimenTypeCodeSequence
SpecimenPreparationSequence SpecimenPreparationStepContentItemSequence ValueType RelationshipType
ConceptNameCodeSequence ConceptCodeSequence NumericValue FloatingPointValue
MeasurementUnitsCodeSequence CodeValue CodingSchemeDesignator CodingSchemeVersion CodeMeaning
LongCodeValue URNCodeValue ContextIdentifier MappingResource
ContextGroupExtensionFlag ReferencedImageSequence ReferencedSeriesSequence ReferencedInstanceSequence
ReferencedImageNavigationSequence ReferencedFrameNumber PresentationLUTShape QualityControlImage
StudyTime SeriesTime ContentTime AcquisitionTime InstanceCreationTime
PatientIdentityRemoved DeidentificationMethod DeidentificationMethodCodeSequence
LongitudinalTemporalInformationModified
"""

#: Retain Device Identity (E.3.5): the scanner is a fact of the image, not of the patient.
_DEVICE = "Manufacturer ManufacturerModelName DeviceSerialNumber DeviceUID SoftwareVersions StationName"

#: Type 2 attributes of the modules a slide carries: written empty.
_EMPTY = """PatientBirthDate PatientSex ReferringPhysicianName StudyID
IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence AcquisitionContextSequence"""

#: ContextGroupVersion is a code's context version, not the patient's, but a DT: the profile
#: replaces it (D) and the option moves every DT, so it is moved with the others.
_DATES = """StudyDate SeriesDate ContentDate AcquisitionDate AcquisitionDateTime InstanceCreationDate
ContextGroupVersion"""

#: Identifying attributes of the profile a slide may carry: removed without a second look.
_REMOVE = """
PatientBirthTime PatientAge PatientSize PatientWeight PatientAddress PatientTelephoneNumbers
PatientMotherBirthName PatientBirthName OtherPatientNames OtherPatientIDs OtherPatientIDsSequence
IssuerOfPatientID IssuerOfPatientIDQualifiersSequence IssuerOfAccessionNumberSequence
PatientComments AdditionalPatientHistory AdmittingDiagnosesDescription EthnicGroup Occupation
MedicalRecordLocator MilitaryRank BranchOfService CountryOfResidence RegionOfResidence
PatientInsurancePlanCodeSequence PatientReligiousPreference PatientState PregnancyStatus Allergies
ResponsiblePerson ResponsibleOrganization PatientSpeciesDescription
InstitutionName InstitutionAddress InstitutionalDepartmentName InstitutionCodeSequence
InstitutionalDepartmentTypeCodeSequence PerformingPhysicianName NameOfPhysiciansReadingStudy
PhysiciansOfRecord RequestingPhysician OperatorsName OperatorIdentificationSequence
ReferringPhysicianIdentificationSequence PhysiciansOfRecordIdentificationSequence
PerformingPhysicianIdentificationSequence ConsultingPhysicianName ContentCreatorName
ImageComments StudyComments AcquisitionComments FrameComments DerivationDescription
ProtocolName RequestAttributesSequence RequestedProcedureDescription RequestedProcedureID
ReasonForStudy ReasonForTheRequestedProcedure PerformedProcedureStepID
PerformedProcedureStepDescription PerformedProcedureStepStartDate PerformedProcedureStepStartTime
PerformedProcedureStepEndDate PerformedProcedureStepEndTime ScheduledProcedureStepDescription
ReferencedPatientSequence ReferencedStudySequence ReferencedPerformedProcedureStepSequence
ProcedureCodeSequence PlacerOrderNumberImagingServiceRequest FillerOrderNumberImagingServiceRequest
LabelText BarcodeValue ContainerDescription AlternateContainerIdentifierSequence
SpecimenDetailedDescription SpecimenLocalizationContentItemSequence ClinicalTrialSponsorName
ClinicalTrialProtocolID ClinicalTrialProtocolName ClinicalTrialSiteID ClinicalTrialSiteName
ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ClinicalTrialTimePointID
ClinicalTrialCoordinatingCenterName PersonName VerifyingObserverName VerifyingObserverSequence
TextComments AcquisitionDeviceProcessingDescription DeviceDescription DeviceLabel
InstanceCreatorUID StorageMediaFileSetUID TimezoneOffsetFromUTC
"""

_CLEAN = "StudyDescription SeriesDescription SpecimenShortDescription"

_SPECIMEN = "ContainerIdentifier SpecimenIdentifier"

#: Written by :mod:`.transform` from the source's values (the module's docstring).
_SET = "PatientName PatientID AccessionNumber TextValue"


def _table() -> dict[str, Action]:
    table: dict[str, Action] = {}
    for words, action in (
        (_STRUCTURE, Action.KEEP),
        (_DEVICE, Action.KEEP),
        (_EMPTY, Action.EMPTY),
        (_DATES, Action.DATE),
        (_REMOVE, Action.REMOVE),
        (_CLEAN, Action.CLEAN),
        (_SPECIMEN, Action.SPECIMEN),
        (_SET, Action.SET),
    ):
        for keyword in words.split():
            if keyword in table:
                raise AssertionError(f"{keyword} is in two of the de-identification tables")
            table[keyword] = action
    return table


#: Keyword -> action for every attribute the de-identification knows (UIDs: see below).
ACTIONS: dict[str, Action] = _table()

#: UI attributes that name a class, a syntax or a coding scheme, not an instance: kept as they
#: are. Every other UID is replaced (study, series, instance, frame of reference, dimension
#: organisation, specimen, and every reference to them), unless its value is a UID of the standard.
UID_KEPT = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ReferencedSOPClassUIDInFile",
        "ReferencedTransferSyntaxUIDInFile",
        "PrivateInformationCreatorUID",
    }
)

#: The words a description may be made of to be kept by Clean Descriptors: organs and stains
#: lamina knows (formats.dicom_modules) and the words of slide imaging. A word outside this set
#: (a name, a number, a case reference) removes the whole description.
SAFE_WORDS = frozenset(
    {word for name in ORGANS for word in name.split()}
    | {meaning.lower() for pairs in ORGANS.values() for meaning in pairs[1].split()}
    | {word for stain in STAIN_SUBSTANCES for word in stain.split()}
    | set(
        [
            "he",
            "h&e",
            "hes",
            "hematoxylin",
            "eosin",
            "saffron",
            "stain",
            "ihc",
            "ish",
            "fish",
            "pas",
            "giemsa",
            "trichrome",
            "reticulin",
            "brightfield",
            "fluorescence",
            "slide",
            "whole",
            "wsi",
            "biopsy",
            "resection",
            "section",
            "frozen",
            "block",
            "tissue",
            "specimen",
            "scan",
            "image",
            "volume",
            "label",
            "overview",
            "thumbnail",
            "microscopy",
            "sm",
            "and",
            "of",
            "with",
            "left",
            "right",
            "upper",
            "lower",
        ]
    )
)

#: Code meanings of text content items kept (cleaned) in a specimen preparation step: the
#: substance of a staining (TID 8004). The specimen identifier item is replaced like
#: SpecimenIdentifier; any other text item is removed with its item.
TEXT_ITEM_CLEANED = frozenset({("SCT", "424361007")})
TEXT_ITEM_SPECIMEN = frozenset({("DCM", "121041")})

#: CID 7050 codes of the methods applied (DeidentificationMethodCodeSequence).
METHOD_CODES: tuple[tuple[str, str], ...] = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113109", "Retain Device Identity Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113105", "Clean Descriptors Option"),
)
#: DeidentificationMethod (LO, 64 characters a value, several values).
METHOD_TEXT: tuple[str, ...] = (
    "lamina PS3.15 Basic Application Confidentiality Profile",
    "Retain Device Identity",
    "Retain Longitudinal Temporal Information Modified Dates",
    "Clean Descriptors",
)
