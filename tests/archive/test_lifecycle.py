"""Lifecycle selection: the slides due in a window, earliest first, in batches that never overlap."""

from __future__ import annotations

import datetime as dt

from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.catalog.catalog import NewSlide
from lamina.archive.catalog.lifecycle import ExpiringSlide, expiring
from lamina.model.ids import new_uid, slide_id

MONDAY = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)


def _add(archive: Archive, tenant: str, retain_until: dt.datetime | None) -> str:
    """A slide in the catalog only (no objects), with one instance row."""
    series, study = new_uid(), new_uid()
    sid = slide_id(series)
    slide = SlideRow(
        id=sid,
        series_instance_uid=series,
        study_instance_uid=study,
        container_id=sid,
        specimen_id=None,
        stain=None,
        organ=None,
        diagnosis_code=None,
        format="aperio_svs",
        source_path=f"/scanner/{sid}.svs",
        source_blake3=sid * 5 + "0000",
        source_head="0" * 64,
        source_bytes=1,
        levels=1,
        instances=1,
        bytes=1,
        identified=False,
        lossy=True,
        width=256,
        height=256,
        mpp=0.25,
        created_at=MONDAY - dt.timedelta(days=60),
        tenant=tenant,
        retain_until=retain_until,
    )
    instance = InstanceRow(
        sop_instance_uid=new_uid(),
        slide_id=sid,
        series_instance_uid=series,
        study_instance_uid=study,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.6",
        instance_number=1,
        flavor="VOLUME",
        level=0,
        rows=256,
        columns=256,
        total_pixel_matrix_columns=256,
        total_pixel_matrix_rows=256,
        number_of_frames=1,
        samples_per_pixel=3,
        photometric_interpretation="YBR_FULL_422",
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        pixel_spacing_mm=0.00025,
        lossy=True,
        blob_sha256=sid * 5 + "1111",
        bytes=1,
        frame_offsets=bytes(8),
        frame_lengths=bytes(4),
        metadata=b"",
    )
    archive.catalog.add_slide(NewSlide(slide, [instance], None, "20261001", "090000"), "test")
    return sid


def test_selects_the_window_earliest_first(archive: Archive) -> None:
    due_friday = _add(archive, "lab-b", MONDAY + dt.timedelta(days=4))
    due_monday = _add(archive, "lab-a", MONDAY)
    _add(archive, "lab-a", MONDAY + WEEK)  # the end is excluded
    _add(archive, "lab-a", MONDAY - dt.timedelta(seconds=1))  # before the window
    _add(archive, "lab-a", None)  # no retention set: never selected

    selected = expiring(archive.catalog, MONDAY, MONDAY + WEEK)

    assert selected == [
        ExpiringSlide(due_monday, "lab-a", MONDAY),
        ExpiringSlide(due_friday, "lab-b", MONDAY + dt.timedelta(days=4)),
    ]


def test_batches_page_through_slides_due_at_the_same_time(archive: Archive) -> None:
    noon = MONDAY + dt.timedelta(days=2, hours=12)
    added = sorted(_add(archive, "lab", noon) for _ in range(5))
    added.append(_add(archive, "lab", noon + dt.timedelta(hours=1)))

    seen: list[str] = []
    batch = expiring(archive.catalog, MONDAY, MONDAY + WEEK, limit=2)
    while batch:
        seen.extend(slide.id for slide in batch)
        batch = expiring(archive.catalog, MONDAY, MONDAY + WEEK, limit=2, after=batch[-1])

    assert seen == added


def test_naive_bounds_are_utc_and_a_connection_may_be_given(archive: Archive) -> None:
    due = _add(archive, "lab", MONDAY + dt.timedelta(hours=3))
    naive = MONDAY.replace(tzinfo=None)

    with archive.catalog.engine.connect() as conn:
        selected = expiring(conn, naive, naive + dt.timedelta(hours=4), limit=None)

    assert [slide.id for slide in selected] == [due]
    assert selected[0].retain_until == MONDAY + dt.timedelta(hours=3)
    assert selected[0].retain_until.tzinfo is not None
