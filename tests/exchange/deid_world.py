"""A slide converted by lamina (a synthetic Aperio SVS -> DICOM WSI instances, as ingest writes
them) and the identifying values planted in it, for the de-identification tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from lamina.formats.dicomize import plan_slide, series_context, write_instance
from lamina.formats.registry import detect_format
from lamina.formats.source import Buffer, SourceOptions
from lamina.model.enums import PatientSexValues
from lamina.model.geometry import SizeMm
from lamina.model.ids import new_uid
from lamina.model.slide import SlideIdentity
from lamina.sample import write_samples

#: Identifying strings planted in the instances (all >= 4 characters; none a DICOM word).
SECRETS = {
    "patient_id": "IPP-7734120",
    "patient_name": "Dubreuil^Marguerite",
    "birth_date": "19470312",
    "accession": "ACC26X0042",
    "container": "S26-0042-B7",
    "specimen": "S26-0042-B",
    "institution": "Clinique Saint-Exupery",
    "physician": "Vautrin^Anatole",
    "comment": "Mme Dubreuil chambre 12",
    "other_id": "NIR1470375112233",
    "private": "SCANNEDBYJEANNOT",
    "description": "biopsie Dubreuil colon",
    "step_text": "prepared by Technicienne Lefaucheux",
}


class FileSink:
    def __init__(self, path: Path) -> None:
        self.fh = path.open("wb")

    def write_parts(self, parts: list[Buffer], size: int) -> None:
        for part in parts:
            self.fh.write(part)


def convert(folder: Path, seed: int = 1, identity: SlideIdentity | None = None) -> list[Path]:
    """A synthetic SVS written and converted as ingest does; one Part 10 file per instance."""
    (sample,) = write_samples(
        folder / "svs",
        ["aperio_svs"],
        size=(512, 384),
        seed=seed,
        label_size=(96, 112),
        overview_size=(320, 108),
    )
    ident = identity or SlideIdentity(
        patient_id=SECRETS["patient_id"],
        patient_name=SECRETS["patient_name"],
        birth_date=SECRETS["birth_date"],
        sex=PatientSexValues.F,
        accession_number=SECRETS["accession"],
        specimen_id=SECRETS["specimen"],
        container_id=SECRETS["container"],
        stain="HE",
        organ="colon",
    )
    options = SourceOptions(SizeMm.from_mpp(0.5), (sample.path,))
    paths = []
    with detect_format(sample.path)(sample.path, options) as source:
        created = dt.datetime(2026, 11, 28, 9, 14, 2, tzinfo=dt.UTC)
        ctx = series_context(source, ident, new_uid, "", created)
        for plan in plan_slide(source, new_uid):
            path = folder / f"{plan.instance_number:02d}.dcm"
            sink = FileSink(path)
            write_instance(plan, ctx, sink)
            sink.fh.close()
            paths.append(path)
    return paths


def plant(path: Path, private_text: bool = False) -> None:
    """Every other place a DICOM header can hold an identifying value, filled in; the private
    block's value is text only with ``private_text`` (that quarantines the slide)."""
    ds = pydicom.dcmread(path)
    ds.InstitutionName = SECRETS["institution"]
    ds.ReferringPhysicianName = SECRETS["physician"]
    ds.PerformingPhysicianName = SECRETS["physician"]
    ds.ImageComments = SECRETS["comment"]
    ds.PatientComments = SECRETS["comment"]
    ds.StudyDescription = SECRETS["description"]
    ds.SeriesDescription = SECRETS["description"]
    ds.OtherPatientIDsSequence = DicomSequence(
        [_item(PatientID=SECRETS["other_id"], IssuerOfPatientID="NIR")]
    )
    ds.IssuerOfPatientID = SECRETS["institution"]
    block = ds.private_block(0x0029, "ACME SCANNER", create=True)
    if private_text:
        block.add_new(0x01, "LO", SECRETS["private"])
    else:
        block.add_new(0x02, "OB", bytes([1, 2, 3, 255, 254, 0, 16, 17] * 4))
    description = ds.SpecimenDescriptionSequence[0]
    description.SpecimenDetailedDescription = SECRETS["comment"]
    description.SpecimenShortDescription = SECRETS["description"]
    step = description.SpecimenPreparationSequence[0].SpecimenPreparationStepContentItemSequence
    extra = _item(ValueType="TEXT", TextValue=SECRETS["step_text"])
    extra.ConceptNameCodeSequence = DicomSequence(
        [_item(CodeValue="121106", CodingSchemeDesignator="DCM", CodeMeaning="Comment")]
    )
    step.append(extra)
    ds.save_as(path, enforce_file_format=True)


def _item(**values: str) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item
