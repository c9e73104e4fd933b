"""Ingest into a lab (IngestOptions.tenant), both backends: the slide and its case are the lab's,
and a case found by accession number is looked for in that lab only, so two labs that reuse an
accession number and a patient identifier never share a case."""

from __future__ import annotations

import csv
from pathlib import Path

from lamina.archive.archive import Archive
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions, Ingestor
from lamina.archive.manifest import load_manifest
from lamina.archive.sweep import find_orphans
from lamina.governance.registry import Registry
from lamina.sample import write_samples

LYON, NICE = "690781810", "060785011"


def test_the_same_accession_number_in_two_labs_makes_two_cases(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: two slides with one accession number and one patient, as two labs may number them
    samples = write_samples(tmp_path / "s", ["aperio_svs", "tiled_tiff"], size=(1024, 768), seed=21)
    manifest = tmp_path / "s" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(encoding="utf-8")))
    for row in rows:
        row.update(accession_number="A26-0001", patient_id="PAT-1")
    with manifest.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    loaded = load_manifest(manifest)
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "Nice")
    (svs,) = discover([samples[0].path])
    (tiff,) = discover([samples[1].path])
    # Act
    lyon = ingestor.ingest(svs, loaded, IngestOptions(tenant=LYON))
    nice = ingestor.ingest(tiff, loaded, IngestOptions(tenant=NICE))
    # Assert: two cases, one per lab
    assert lyon.ok and nice.ok, (lyon.reason, nice.reason)
    slides = {slide.id: slide for slide in archive.catalog.slides()}
    assert slides[lyon.slide_id or ""].tenant == LYON
    assert slides[nice.slide_id or ""].tenant == NICE
    assert slides[lyon.slide_id or ""].study_instance_uid != slides[nice.slide_id or ""].study_instance_uid
    # the ingest is recorded with its lab
    from lamina.archive import audit

    with archive.catalog.begin() as conn:
        labs = {e.entity: e.detail["tenant"] for e in audit.entries(conn, action="ingest")}
    assert labs == {f"slide/{lyon.slide_id}": LYON, f"slide/{nice.slide_id}": NICE}


def test_a_dicom_slide_whose_case_belongs_to_another_lab_is_refused_and_nothing_is_kept(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    # Arrange: a DICOM slide in Lyon, and another series of the same case (same Study Instance UID)
    (sample,) = write_samples(tmp_path / "s", ["dicom_wsi"], size=(1024, 768), seed=23)
    registry = Registry(archive.catalog)
    registry.add_tenant(LYON, "HCL")
    registry.add_tenant(NICE, "Nice")
    (first,) = discover([sample.path])
    assert ingestor.ingest(first, options=IngestOptions(tenant=LYON)).ok
    other = tmp_path / "other"
    other.mkdir()
    series = generate_uid()
    for path in sorted(sample.path.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(other / path.name, enforce_file_format=True)
    (second,) = discover([other])
    # Act
    refused = ingestor.ingest(second, options=IngestOptions(tenant=NICE))
    # Assert: refused with the reason; the case and its one slide stay Lyon's
    assert not refused.ok
    assert f"belongs to {LYON}, not to {NICE}" in (refused.reason or "")
    (slide,) = archive.catalog.slides()
    assert slide.tenant == LYON
    assert list(find_orphans(archive.catalog, archive.store, 0.0)) == []  # its objects removed
