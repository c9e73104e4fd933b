"""A slide on the cold tier over DICOMweb, with the real dicomweb-client (0.59), against a real
server on the embedded default (a folder cold tier, the restore on a thread of the server).

What the client sees: every retrieval that needs the slide's pixels, and its series' metadata
(the opening), is answered ``202 Accepted`` with ``Retry-After`` and a problem document saying
the slide is being restored. dicomweb-client raises only for 400 and more
(``raise_for_status``), so a 202 is no ``HTTPError`` there: the multipart retrievals (frames,
an instance, the series) raise ``ValueError`` on the media type (``application/problem+json``,
not ``multipart/related``), and the series' metadata *returns* the problem document as if it
were a one-element list of data sets (its ``status`` 202). The 202 and its ``Retry-After`` are
on the HTTP answer, which a client reads through its ``requests`` session (a response hook here).
An instance's metadata, read from the catalog, is served at once (200) and asks for no restore.

Every one of those reads records the same one restore request; after ``Retry-After`` the same
calls return the slide: frames equal to those the hot slide gave before the move (the opening is
asked again: its 202 ends with the switch to hot, while frames may come a moment earlier, once
their objects are copied back). A server that had the slide's objects open before the move may
serve them for a while after it; the servers here never had. A client may also wait the restore
out inside dicomweb-client by counting 202 as retriable (``set_http_retry_params``; it then
waits by its own exponential backoff, not by ``Retry-After``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import func, select

from lamina.api.app import create_app
from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow, SlideRow
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.ingest import Ingestor
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.lifecycle import restore
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.tiers import TierMover, restore_key
from lamina.sample import write_samples
from tests.signin import auth_headers
from tests.support import serving

#: The cold tier's restore delay: long enough for the reads below to find the slide still cold
#: on a loaded machine, short enough for a fast test.
DELAY_S = 2
#: How long a client waits at most, honouring each Retry-After, for the restore to finish.
PATIENCE_S = 30


class Served(NamedTuple):
    archive: Archive
    slide: SlideRow
    tiled: InstanceRow  # an instance of the slide with several frames
    hot_frames: list[bytes]  # its frames 1 and 2, read while the slide was hot
    url: str  # http://127.0.0.1:PORT/dicomweb, a server that never read the slide hot


class Client(NamedTuple):
    dicomweb: Any  # DICOMwebClient
    answers: list[requests.Response]  # every HTTP answer it received, in order


def _client(url: str) -> Client:
    """dicomweb-client signed in as the tests' operator, on a session that keeps its answers."""
    answers: list[requests.Response] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: answers.append(response))
    return Client(DICOMwebClient(url, session=session, headers=auth_headers(url)), answers)


def _requests(archive: Archive, slide_id: str) -> int:
    """The slide's restore requests (one row while a restore is asked for, none after)."""
    with archive.catalog.engine.connect() as conn:
        query = select(func.count()).where(t.job_reports.c.job_key == restore_key(slide_id))
        return int(conn.execute(query).scalar_one())


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lamina-cold-") as tmp:
        root = Path(tmp)
        write_samples(root / "in", ["tiled_tiff"], size=(512, 384), seed=7)
        env = {"LAMINA_COLD_URL": str(root / "cold"), "LAMINA_COLD_RESTORE_DELAY_S": str(DELAY_S)}
        settings = Settings.load(root / "home", env=env)
        archive = Archive.open(settings)
        try:
            ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
            (candidate,) = discover([root / "in"])
            done = ingestor.ingest(candidate, load_manifest(root / "in" / "manifest.csv"))
            assert done.status == "ingested", done.reason
            slide = archive.catalog.slide(done.slide_id or "")
            assert slide is not None
            tiled = next(row for row in archive.catalog.instances(slide.id) if row.number_of_frames > 1)
            # the hot slide's frames, from a first server (a server that has an object open may
            # serve it for a while after the move: the one under test never opened it)
            with serving(create_app(settings, archive)) as port:
                client = _client(f"http://127.0.0.1:{port}/dicomweb")
                hot_frames = [bytes(frame) for frame in _frames(client, tiled)]
            mover = TierMover.for_archive(archive)
            assert mover is not None
            assert mover.move_slide(slide.id, Tier.COLD, "lifecycle").status == "moved"
            with serving(create_app(settings, archive)) as port:
                yield Served(archive, slide, tiled, hot_frames, f"http://127.0.0.1:{port}/dicomweb")
        finally:
            archive.close()


def _frames(client: Client, row: InstanceRow) -> list[bytes]:
    return client.dicomweb.retrieve_instance_frames(  # type: ignore[no-any-return]
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid, frame_numbers=[1, 2]
    )


def _accepted(client: Client, call: Callable[[], Any]) -> tuple[Any, requests.Response]:
    """What ``call`` gave (its result, or the exception it raised) and the one HTTP answer it got."""
    del client.answers[:]
    try:
        outcome = call()
    except Exception as exc:  # what the client does with a 202 is what is tested
        outcome = exc
    (answer,) = client.answers
    return outcome, answer


def test_a_cold_slide_is_202_with_retry_after_in_dicomweb_client_then_its_frames(served: Served) -> None:
    client = _client(served.url)
    row, slide = served.tiled, served.slide
    study, series, sop = row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    calls: dict[str, Callable[[], Any]] = {
        "series metadata": lambda: client.dicomweb.retrieve_series_metadata(study, series),
        "frames": lambda: _frames(client, row),
        "instance": lambda: client.dicomweb.retrieve_instance(study, series, sop),
        "series": lambda: client.dicomweb.retrieve_series(study, series),
    }

    # Act: each retrieval of the cold slide
    seen = {name: _accepted(client, call) for name, call in calls.items()}
    instance_metadata = client.dicomweb.retrieve_instance_metadata(study, series, sop)

    # Assert: 202 with Retry-After and the reason, each time
    for name, (_, answer) in seen.items():
        assert answer.status_code == HTTPStatus.ACCEPTED, (name, answer.status_code, answer.text)
        assert int(answer.headers["Retry-After"]) >= 1, name
        assert answer.headers["Content-Type"] == "application/problem+json", name
        assert f"slide {slide.id} is on the cold tier and is being restored" in answer.json()["detail"]
    # dicomweb-client takes a 202 for a success: the metadata is the problem document...
    metadata, _ = seen["series metadata"]
    assert isinstance(metadata, list) and len(metadata) == 1 and metadata[0]["status"] == 202, metadata
    # ... and the multipart retrievals fail on its media type, never as an HTTPError
    for name in ("frames", "instance", "series"):
        failure, _ = seen[name]
        assert isinstance(failure, ValueError) and not isinstance(failure, requests.HTTPError), (
            name,
            failure,
        )
        assert "application/problem+json" in str(failure), failure
    # an instance's metadata needs no pixel: served from the catalog, at once
    assert instance_metadata["00080018"]["Value"] == [sop]
    # one restore asked for, whatever was read; the slide still cold
    assert _requests(served.archive, slide.id) == 1
    assert served.archive.catalog.slide(slide.id).tier == "cold"  # type: ignore[union-attr]

    # Act: the opening again after Retry-After, as a client honouring it does, then the frames
    retry_after = int(seen["series metadata"][1].headers["Retry-After"])
    asked = time.monotonic()
    time.sleep(retry_after)
    while True:
        metadata, answer = _accepted(client, lambda: client.dicomweb.retrieve_series_metadata(study, series))
        if answer.status_code != HTTPStatus.ACCEPTED:
            break
        assert time.monotonic() - asked < PATIENCE_S, "the restore did not finish"
        time.sleep(int(answer.headers["Retry-After"]))
    frames = _frames(client, row)

    # Assert: the slide, as it was before the move; restored once
    assert answer.status_code == HTTPStatus.OK, answer.text
    assert [bytes(frame) for frame in frames] == served.hot_frames
    assert {item["0020000E"]["Value"][0] for item in metadata} == {series}
    assert len(metadata) == len(served.archive.catalog.instances(slide.id))
    assert served.archive.catalog.slide(slide.id).tier == "hot"  # type: ignore[union-attr]
    assert _requests(served.archive, slide.id) == 0
    with served.archive.catalog.engine.connect() as conn:
        (restored,) = audit.entries(conn, slide=slide.id, action="tier-restore")
    assert restored.detail["to"] == "hot"


def test_dicomweb_client_waits_a_restore_out_when_told_202_is_retriable(served: Served) -> None:
    # Arrange: the slide back on the cold tier (a switch and a removal from hot), a client that
    # retries 202 (after 1 s, 2 s, 4 s, ...; dicomweb-client does not read Retry-After)
    mover = TierMover.for_archive(served.archive)
    assert mover is not None
    mover.move_slide(served.slide.id, Tier.COLD, "lifecycle")
    # a fresh server: the first one has the slide's objects open, and may serve them for a while
    with serving(create_app(served.archive.settings, served.archive)) as port:
        client = _client(f"http://127.0.0.1:{port}/dicomweb")
        client.dicomweb.set_http_retry_params(
            retry=True,
            max_attempts=6,
            wait_exponential_multiplier=500,
            retriable_error_codes=(HTTPStatus.ACCEPTED,),
        )

        # Act
        frames = _frames(client, served.tiled)

    # Assert: 202 first, then the frames, in one call
    statuses = [answer.status_code for answer in client.answers]
    assert statuses[0] == HTTPStatus.ACCEPTED and statuses[-1] == HTTPStatus.OK, statuses
    assert set(statuses[:-1]) == {HTTPStatus.ACCEPTED}, statuses
    assert [bytes(frame) for frame in frames] == served.hot_frames
    restorer = restore.installed(served.archive.catalog)
    assert restorer is not None
    restorer.join(PATIENCE_S)
    assert served.archive.catalog.slide(served.slide.id).tier == "hot"  # type: ignore[union-attr]
