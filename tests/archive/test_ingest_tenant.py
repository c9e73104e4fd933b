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
