"""Expired slides over DICOMweb (``lamina.lifecycle.serving``), against a real server, with
dicomweb-client: a case of two slides, one expired (its pyramid's objects deleted, its trace
kept), and a case of one slide, expired. Retrievals of an expired slide answer 410 with one line;
QIDO-RS still lists it, InstanceAvailability UNAVAILABLE, with 0 instances; its thumbnail is the
trace's JPEG; the live slide of the case is served as before; nothing is reported damaged, also
for an instance the server had cached before the expiry. Openings record ``last_access_at``.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import requests
from PIL import Image
from sqlalchemy import select, update
from starlette.requests import Request

from lamina.api.app import create_app
from lamina.api.problems import handle_lamina_error
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.errors import RestoringError
from lamina.lifecycle.expire import expire_slide
from lamina.sample import write_samples
from tests.signin import colleague_token, dicomweb_client, signed
from tests.support import serving

_CASE_KEYS = ("patient_id", "patient_name", "birth_date", "sex", "accession_number")
_AVAILABILITY = "00080056"
RULE = "care-30d"


class Served(NamedTuple):
    url: str  # http://127.0.0.1:PORT/dicomweb
    archive: Archive
    live: SlideRow  # the case's live slide
    expired: SlideRow  # its expired slide
    alone: SlideRow  # the expired slide of a case of one slide
    cached: InstanceRow  # an instance of the expired slide the server had cached before the expiry
    thumbnail: bytes  # the trace's JPEG of ``expired``
    home: Path


def _one_case(manifest: Path) -> None:
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    first, second = rows
    second.update({key: first[key] for key in _CASE_KEYS}, stain="PAS")
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(first), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _ingest(archive: Archive, folder: Path) -> list[SlideRow]:
    ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
    manifest = load_manifest(folder / "manifest.csv")
    slides = []
    for candidate in discover([folder]):
        result = ingestor.ingest(candidate, manifest)
        assert result.status == "ingested", result.reason
        found = archive.catalog.slide(result.slide_id or "")
        assert found is not None
        slides.append(found)
    return sorted(slides, key=lambda slide: slide.format)


def _expire(archive: Archive, slide: SlideRow) -> bytes:
    done = expire_slide(
        archive.catalog,
        archive.store,
        slide.id,
        rule=RULE,
        rule_digest="0" * 64,
        report_at=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
        thumbnail_side=512,
        actor="operator:test",
    )
    assert done.status == "expired" and done.thumbnail_sha256, done
    return b"".join(archive.store.open(done.thumbnail_sha256))


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-expired-") as tmp:
        root = Path(tmp)
        write_samples(root / "case", ["aperio_svs", "tiled_tiff"], size=(1024, 768))
        _one_case(root / "case" / "manifest.csv")
        write_samples(root / "alone", ["tiled_tiff"], size=(512, 384), seed=5)
        settings = Settings.load(root / "lamina-data", env={})
        archive = Archive.open(settings)
        live, expired = _ingest(archive, root / "case")
        (alone,) = _ingest(archive, root / "alone")
        try:
            with serving(create_app(settings, archive)) as port:
                url = f"http://127.0.0.1:{port}/dicomweb"
                # the server caches an instance of the slide to expire (its metadata read), whose
                # object it has not opened yet
                rows = archive.catalog.instances(expired.id)
                cached = next(row for row in rows if row.number_of_frames > 1)
                answer = signed.get(f"{_instance_url(url, cached)}/metadata")
                assert answer.status_code == 200, answer.text
                thumbnail = _expire(archive, expired)
                _expire(archive, alone)
                yield Served(url, archive, live, expired, alone, cached, thumbnail, settings.home)
        finally:
            archive.close()


def _instance_url(base: str, row: InstanceRow) -> str:
    return (
        f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def _status(call: Any) -> int:
    with pytest.raises(requests.exceptions.HTTPError) as raised:
        call()
    response = raised.value.response
    assert response is not None
    return int(response.status_code)


def test_retrievals_of_an_expired_slide_are_410_in_dicomweb_client(served: Served) -> None:
    client = dicomweb_client(served.url)
    study, series = served.expired.study_instance_uid, served.expired.series_instance_uid
    sop = served.cached.sop_instance_uid

    # the instance the server had cached: 410, never "damaged"
    assert _status(lambda: client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])) == 410
    assert _status(lambda: client.retrieve_instance_frames(study, series, sop, frame_numbers=[1, 2])) == 410
    assert _status(lambda: client.retrieve_instance(study, series, sop)) == 410
    assert _status(lambda: client.retrieve_instance_metadata(study, series, sop)) == 410
    assert _status(lambda: client.retrieve_series(study, series)) == 410
    assert _status(lambda: client.retrieve_series_metadata(study, series)) == 410
    assert _status(lambda: client.retrieve_instance_rendered(study, series, sop)) == 410

    # one line, saying when, by which rule, and what is kept
    answer = signed.get(f"{served.url}/studies/{study}/series/{series}/metadata")
    assert answer.status_code == 410
    assert answer.headers["content-type"] == "application/problem+json"
    detail = answer.json()["detail"]
    assert "\n" not in detail
    assert f"slide {served.expired.id} expired on " in detail and f"(rule {RULE})" in detail
    assert "only its thumbnail and record are kept" in detail
    bulk = signed.get(f"{_instance_url(served.url, served.cached)}/bulkdata/7FE00010")
    assert bulk.status_code == 410, bulk.text


def test_a_study_with_only_expired_slides_is_410_and_one_with_a_live_slide_gives_it(served: Served) -> None:
    client = dicomweb_client(served.url)

    assert _status(lambda: client.retrieve_study(served.alone.study_instance_uid)) == 410
    assert _status(lambda: client.retrieve_study_metadata(served.alone.study_instance_uid)) == 410
    # the case of two slides: the live one alone, as it was, frames included
    instances = client.retrieve_study(served.live.study_instance_uid)
    assert {item.SeriesInstanceUID for item in instances} == {served.live.series_instance_uid}
    assert len(instances) == len(served.archive.catalog.instances(served.live.id))
    row = next(row for row in served.archive.catalog.instances(served.live.id) if row.number_of_frames > 1)
    frames = client.retrieve_instance_frames(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid, frame_numbers=[1]
    )
    assert len(frames) == 1 and frames[0]


def test_qido_lists_the_expired_series_unavailable_with_no_instances(served: Served) -> None:
    client = dicomweb_client(served.url)

    found = client.search_for_series(served.live.study_instance_uid)

    by_series = {item["0020000E"]["Value"][0]: item for item in found}
    assert set(by_series) == {served.live.series_instance_uid, served.expired.series_instance_uid}
    expired = by_series[served.expired.series_instance_uid]
    assert expired[_AVAILABILITY] == {"vr": "CS", "Value": ["UNAVAILABLE"]}
    assert expired["00201209"]["Value"] == [0]  # NumberOfSeriesRelatedInstances
    assert by_series[served.live.series_instance_uid][_AVAILABILITY]["Value"] == ["ONLINE"]
    # a study is as available as its most available slide
    studies = {item["0020000D"]["Value"][0]: item for item in client.search_for_studies()}
    assert studies[served.live.study_instance_uid][_AVAILABILITY]["Value"] == ["ONLINE"]
    assert studies[served.alone.study_instance_uid][_AVAILABILITY]["Value"] == ["UNAVAILABLE"]
    # the live slide's instances say ONLINE; the expired one has none
    live = client.search_for_instances(served.live.study_instance_uid, served.live.series_instance_uid)
    assert live and {item[_AVAILABILITY]["Value"][0] for item in live} == {"ONLINE"}
    gone = served.expired
    assert client.search_for_instances(gone.study_instance_uid, gone.series_instance_uid) == []


def test_the_thumbnail_of_an_expired_slide_is_its_traces_jpeg(served: Served) -> None:
    gone = served.expired
    series = f"{served.url}/studies/{gone.study_instance_uid}/series/{gone.series_instance_uid}"

    as_stored = signed.get(f"{series}/thumbnail")
    scaled = signed.get(f"{series}/thumbnail", params={"viewport": "128,128"})
    study = signed.get(f"{served.url}/studies/{served.alone.study_instance_uid}/thumbnail")

    assert as_stored.status_code == 200 and as_stored.headers["content-type"] == "image/jpeg"
    assert as_stored.content == served.thumbnail
    assert scaled.status_code == 200, scaled.text
    image = Image.open(io.BytesIO(scaled.content))
    assert image.format == "JPEG" and max(image.size) == 128
    assert study.status_code == 200 and study.headers["content-type"] == "image/jpeg"
    # the same rights as any read: no token, no thumbnail
    assert httpx.get(f"{series}/thumbnail").status_code == 401


def test_nothing_is_reported_damaged(served: Served) -> None:
    client = dicomweb_client(served.url)
    study, series = served.expired.study_instance_uid, served.expired.series_instance_uid
    sop = served.cached.sop_instance_uid
    assert _status(lambda: client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])) == 410
    assert _status(lambda: client.retrieve_instance(study, series, sop)) == 410

    with served.archive.catalog.engine.connect() as conn:
        damaged = audit.entries(conn, action="damaged")

    assert damaged == []


def test_an_opening_records_the_last_access_not_every_tile(served: Served) -> None:
    token = colleague_token(served.archive.catalog, served.home, "dr-last-access")
    headers = {"Authorization": f"Bearer {token}"}
    row = next(row for row in served.archive.catalog.instances(served.live.id) if row.number_of_frames > 1)
    series = f"{served.url}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
    engine = served.archive.catalog.engine

    def last_access() -> dt.datetime | None:
        with engine.connect() as conn:
            found = conn.execute(select(t.slides.c.last_access_at).where(t.slides.c.id == served.live.id))
            return found.scalar_one()  # type: ignore[no-any-return]

    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert httpx.get(f"{series}/metadata", headers=headers).status_code == 200
    opened = last_access()
    assert opened is not None and opened.replace(tzinfo=opened.tzinfo or dt.UTC) >= before
    # the tiles of that opening do not write it again
    with engine.begin() as conn:
        conn.execute(update(t.slides).where(t.slides.c.id == served.live.id).values(last_access_at=None))
    frame = f"{series}/instances/{row.sop_instance_uid}/frames/"
    for number in (1, 2, 1):
        assert httpx.get(f"{frame}{number}", headers=headers).status_code == 200
    time.sleep(0.1)
    assert last_access() is None


def test_restoring_is_202_with_retry_after() -> None:
    # the cold tier raises it; its mapping is the error table's
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""})

    answer = asyncio.run(handle_lamina_error(request, RestoringError("slide S is being restored", 42)))

    assert answer.status_code == 202 and answer.headers["retry-after"] == "42"
    assert answer.headers["content-type"] == "application/problem+json"
    assert b"slide S is being restored" in bytes(answer.body)
