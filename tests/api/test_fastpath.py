"""The frames fast path (``lamina.api.dicomweb.fastpath``): one cached local frame, read on the
event loop, the same answer the routed handler gives; everything else goes on to that handler.

An answer of the fast path is recognised by its boundary, which is fixed for the process
(``fastpath._BOUNDARY``); the routed handler draws a new one for each answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lamina.api.app import create_app
from lamina.api.dicomweb import fastpath
from lamina.api.dicomweb.index import InstanceIndex
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from tests.api.conftest import ServedArchive, multipart_parts
from tests.signin import signed
from tests.support import serving

STORED = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}


def _fast(answer: httpx.Response) -> bool:
    """Whether the fast path gave this answer."""
    assert answer.status_code == 200, answer.text
    return f"boundary={fastpath._BOUNDARY}" in answer.headers["content-type"]


def _url(base: str, row: InstanceRow) -> str:
    return (
        f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


@pytest.fixture
def server(served_archive: ServedArchive) -> Iterator[tuple[str, InstanceIndex, InstanceRow]]:
    """A fresh server (an empty instance cache) on the served archive: (base URL, its instance
    index, the level 0 of the SVS)."""
    archive = served_archive.archive
    settings = archive.settings.with_(workers=0, verify_cron=None)
    app = create_app(settings, archive)
    row = next(r for r in archive.catalog.instances(served_archive.slide_ids[0]) if r.level == 0)
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}/dicomweb", app.state.index, row


def test_a_cached_frame_gets_the_same_answer_as_from_the_routed_handler(
    served_archive: ServedArchive, server: tuple[str, InstanceIndex, InstanceRow]
) -> None:
    base, _, row = server
    url = f"{_url(base, row)}/frames/4"

    first = signed.get(url, headers=STORED)  # not cached yet: the routed handler
    second = signed.get(url, headers=STORED)

    assert not _fast(first)
    if served_archive.archive.store.local_path(row.blob_sha256) is not None:
        assert _fast(second)  # a local object: one pread on the loop
    assert multipart_parts(second) == multipart_parts(first)
    assert second.headers["content-length"] == str(len(second.content))  # not chunked
    assert "transfer-encoding" not in second.headers
    assert second.headers["content-type"].startswith('multipart/related; type="image/jpeg"')


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        ("/frames/4,5", STORED),  # several frames: the thread pool
        ("/frames/4", {}),  # decoded (Explicit VR Little Endian): the thread pool
        ("/frames/4", {"Accept": "*/*"}),  # decoded too
    ],
)
def test_what_the_fast_path_leaves_to_the_routed_handler(
    server: tuple[str, InstanceIndex, InstanceRow], suffix: str, headers: dict[str, str]
) -> None:
    base, _, row = server
    signed.get(f"{_url(base, row)}/frames/1", headers=STORED)  # cached
    answers = [signed.get(f"{_url(base, row)}{suffix}", headers=headers) for _ in range(2)]
    assert not any(_fast(answer) for answer in answers)
    assert multipart_parts(answers[0]) == multipart_parts(answers[1])


def test_errors_come_from_the_routed_handler(server: tuple[str, InstanceIndex, InstanceRow]) -> None:
    base, _, row = server
    signed.get(f"{_url(base, row)}/frames/1", headers=STORED)  # cached
    missing = signed.get(f"{_url(base, row)}/frames/{row.number_of_frames + 1}", headers=STORED)
    assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]
    malformed = signed.get(f"{_url(base, row)}/frames/1x", headers=STORED)
    assert malformed.status_code == 400
    other_series = signed.get(
        f"{base}/studies/{row.study_instance_uid}/series/1.2.3/instances/{row.sop_instance_uid}/frames/1",
        headers=STORED,
    )
    assert other_series.status_code == 404
    refused = signed.get(
        f"{_url(base, row)}/frames/1", headers={"Accept": 'multipart/related; type="image/jls"'}
    )
    assert refused.status_code == 406


def test_an_instance_due_for_confirmation_is_served_while_the_catalog_confirms_it(
    local_archive: Archive,
) -> None:
    """Stale while revalidate: the frame is answered on the loop at once, and the confirmation
    runs in the thread pool (``tests/api/test_index.py`` has deletions and failures)."""
    settings = local_archive.settings.with_(workers=0, verify_cron=None)
    (slide,) = local_archive.catalog.slides()
    row = next(r for r in local_archive.catalog.instances(slide.id) if r.level == 0)
    app = create_app(settings, local_archive)
    with serving(app) as port:
        index: InstanceIndex = app.state.index
        url = f"{_url(f'http://127.0.0.1:{port}/dicomweb', row)}/frames/2"
        signed.get(url, headers=STORED)
        assert _fast(signed.get(url, headers=STORED))
        cached = index.get(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
        due = time.monotonic() - index.revalidate_s - 1  # as if 6 s had passed
        cached.checked_at = due

        confirming = signed.get(url, headers=STORED)  # answered; the catalog asked in a thread
        deadline = time.monotonic() + 20
        while cached.checked_at == due:
            assert time.monotonic() < deadline, "the instance was not confirmed"
            time.sleep(0.02)
        again = signed.get(url, headers=STORED)

    assert _fast(confirming) and _fast(again)
    assert multipart_parts(confirming) == multipart_parts(again)
    assert time.monotonic() - cached.checked_at < index.revalidate_s


def test_cross_origin_frames_are_allowed(server: tuple[str, InstanceIndex, InstanceRow]) -> None:
    base, _, row = server
    for _ in range(2):
        answer = signed.get(
            f"{_url(base, row)}/frames/3", headers={**STORED, "Origin": "http://viewer.example"}
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*"


def test_a_frame_over_the_answer_limit_is_refused(local_archive: Archive) -> None:
    settings = local_archive.settings.with_(workers=0, verify_cron=None, max_frames_bytes=1000)
    (slide,) = local_archive.catalog.slides()
    row = next(r for r in local_archive.catalog.instances(slide.id) if r.level == 0)
    with serving(create_app(settings, local_archive)) as port:
        url = f"{_url(f'http://127.0.0.1:{port}/dicomweb', row)}/frames/1"
        answers = [signed.get(url, headers=STORED) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [400, 400]
    assert "1000-byte limit" in answers[1].json()["detail"]


def test_a_damaged_object_is_reported_not_served(local_archive: Archive) -> None:
    settings: Settings = local_archive.settings.with_(workers=0, verify_cron=None)
    (slide,) = local_archive.catalog.slides()
    row = next(r for r in local_archive.catalog.instances(slide.id) if r.level == 0)
    path = local_archive.store.local_path(row.blob_sha256)
    assert path is not None
    with serving(create_app(settings, local_archive)) as port:
        url = f"{_url(f'http://127.0.0.1:{port}/dicomweb', row)}/frames/{row.number_of_frames}"
        signed.get(url, headers=STORED)  # cached
        assert _fast(signed.get(url, headers=STORED))
        with Path(path).open("r+b") as fh:  # the disk loses the object's tail
            fh.truncate(1000)

        damaged = signed.get(url, headers=STORED)

    assert damaged.status_code == 500
    assert "damaged" in damaged.json()["detail"]
    with local_archive.catalog.begin() as conn:
        assert any(entry.action == "damaged" for entry in audit.entries(conn)), "the damage was not audited"


def test_frames_of_network_objects_skip_the_router_and_cached_ones_the_threads(
    served_archive: ServedArchive,
) -> None:
    """On S3 the fast path answers a frame of an instance the index holds: from the blob cache's
    memory on the event loop when it holds the frame, else by one ranged read in the thread pool
    (which the cache then keeps)."""
    from lamina.archive.blobstore.cache import CachedBlobStore

    archive = served_archive.archive
    store = CachedBlobStore(archive.store, 64 << 20)
    cached = Archive(archive.settings, archive.catalog, store)
    app = create_app(archive.settings.with_(workers=0, verify_cron=None), cached)
    row = next(r for r in archive.catalog.instances(served_archive.slide_ids[0]) if r.level == 0)
    local = archive.store.local_path(row.blob_sha256) is not None
    with serving(app) as port:
        url = f"{_url(f'http://127.0.0.1:{port}/dicomweb', row)}/frames"
        first = signed.get(f"{url}/1", headers=STORED)  # the instance is not indexed yet: routed
        misses = store.stats.misses
        again = signed.get(f"{url}/1", headers=STORED)
        assert not _fast(first) and _fast(again)
        assert multipart_parts(again) == multipart_parts(first)
        assert store.stats.misses == misses  # from the cache's memory
        if not local:
            store.forget(row.blob_sha256)
            fetched = signed.get(f"{url}/2", headers=STORED)
            assert _fast(fetched) and store.stats.misses == misses + 1  # read in a thread
            held = signed.get(f"{url}/2", headers=STORED)
            assert _fast(held) and store.stats.misses == misses + 1  # held now
            assert multipart_parts(held) == multipart_parts(fetched)


def test_a_damaged_object_is_reported_on_either_store(archive: Archive) -> None:
    """A frame read short (the object truncated, here on S3 too) is never answered by the fast
    path: the routed handler reports it, audited."""
    from tests.support import overwrite_object, read_object, shared_file

    (candidate,) = discover([shared_file("aperio/CMU-1-Small-Region.svs")])
    assert Ingestor(archive.catalog, archive.store).ingest(candidate).status == "ingested"
    (slide,) = archive.catalog.slides()
    row = next(r for r in archive.catalog.instances(slide.id) if r.level == 0)
    settings = archive.settings.with_(workers=0, verify_cron=None)
    with serving(create_app(settings, archive)) as port:
        url = f"{_url(f'http://127.0.0.1:{port}/dicomweb', row)}/frames/{row.number_of_frames}"
        assert signed.get(url, headers=STORED).status_code == 200  # indexed
        overwrite_object(archive.store, row.blob_sha256, read_object(archive.store, row.blob_sha256)[:1000])

        damaged = signed.get(url, headers=STORED)

    assert damaged.status_code == 500 and "damaged" in damaged.json()["detail"]
    with archive.catalog.begin() as conn:
        assert any(entry.action == "damaged" for entry in audit.entries(conn)), "the damage was not audited"
