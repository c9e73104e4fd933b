"""Hot and cold tiers on a real archive, on both backends (a folder cold tier on the embedded
default; an S3 prefix in a storage class on the scaled one): a move to cold copies, verifies,
switches and deletes; reading a cold slide asks for one restore and answers RestoringError with
a Retry-After that counts the restore delay; the restore job (on a thread, or through the queue
and a worker on PostgreSQL) brings the slide back hot after that delay, verified, and keeps the
cold copy; a crash at each step leaves the slide readable where the catalog says and the next
move finishes; a held slide never goes cold. And the ``[tiers.cold]`` settings."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.blobstore import BlobStore, FileBlobStore
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.manifest import load_manifest
from lamina.config import ColdTierSettings, Settings
from lamina.errors import ConfigurationError, RequestError, RestoringError
from lamina.governance.registry import Registry
from lamina.lifecycle import restore
from lamina.lifecycle.marks import Marks, Target
from lamina.lifecycle.policy import Policies
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.run import run
from lamina.lifecycle.tiers import STEPS, ColdTier, TierMover, restore_key
from lamina.sample import write_samples
from tests.backends import Backend
from tests.support import ingest_case

LAB = "690781810"
DELAY_S = 0.6


class _Crash(BaseException):
    """A process killed at a step (not an Exception: nothing catches it on the way out)."""


def _ingest(archive: Archive, root: Path, accession: str, seed: int) -> str:
    return ingest_case(
        archive.receiver().ingestor, root / f"s{seed}", seed=seed, tenant=LAB,
        patient_id=f"P{seed}", accession_number=accession, specimen_id=f"{accession}-A1",
    )  # fmt: skip


def _cold_settings(archive: Archive, backend: Backend, tmp_path: Path, delay_s: float = 0.0) -> Settings:
    """The archive's settings with a fresh cold tier: a folder, or an S3 prefix in STANDARD_IA."""
    if backend.s3 is None:
        tier = ColdTierSettings(f"file://{tmp_path / f'cold-{uuid.uuid4().hex[:6]}'}", None, delay_s)
    else:
        tier = ColdTierSettings(backend.store_url("cold"), "STANDARD_IA", delay_s)
    return archive.settings.with_(cold_tier=tier)


def _cold(archive: Archive, backend: Backend, tmp_path: Path, delay_s: float = 0.0) -> ColdTier:
    cold = ColdTier.open(_cold_settings(archive, backend, tmp_path, delay_s))
    assert cold is not None
    return cold


def _sha(store: BlobStore, digest: str) -> str:
    hasher = hashlib.sha256()
    for chunk in store.open(digest):
        hasher.update(chunk)
    return hasher.hexdigest()


def _digests(archive: Archive, slide_id: str) -> set[str]:
    return {row.blob_sha256 for row in archive.catalog.instances(slide_id)}


def _readable_where_the_catalog_says(archive: Archive, mover: TierMover, slide_id: str) -> Tier:
    slide = archive.catalog.slide(slide_id)
    assert slide is not None
    tier = Tier(slide.tier)
    for digest in _digests(archive, slide_id):
        assert _sha(mover.store(tier), digest) == digest
    return tier


def _requests(archive: Archive, slide_id: str) -> int:
    with archive.catalog.engine.connect() as conn:
        query = select(func.count()).where(t.job_reports.c.job_key == restore_key(slide_id))
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def slide(archive: Archive, tmp_path: Path) -> str:
    Registry(archive.catalog).add_tenant(LAB, "HCL")
    return _ingest(archive, tmp_path, "A26-1", 1)


def test_cold_then_read_restores_once_after_the_delay(
    archive: Archive, backend: Backend, slide: str, tmp_path: Path
) -> None:
    settings = _cold_settings(archive, backend, tmp_path, DELAY_S)
    mover = TierMover.for_archive(Archive(settings, archive.catalog, archive.store))
    assert mover is not None
    cold = mover.cold
    digests = _digests(archive, slide)
    # Act: to cold
    moved = mover.move_slide(slide, Tier.COLD, "operator:test")
    # Assert: copied, verified, switched, hot copies removed
    assert moved.status == "moved" and moved.copied == len(digests) and moved.removed == len(digests)
    assert archive.catalog.slide(slide).tier == "cold"  # type: ignore[union-attr]
    assert not any(archive.store.exists(digest) for digest in digests)
    assert all(_sha(cold.store, digest) == digest for digest in digests)
    if backend.s3 is not None:  # in the tier's storage class
        s3 = cold.store
        head = s3.client.head_object(Bucket=s3.bucket, Key=s3.key_for(next(iter(digests))))  # type: ignore[attr-defined]
        assert head.get("StorageClass") == "STANDARD_IA"
    with archive.catalog.engine.connect() as conn:
        (entry,) = audit.entries(conn, slide=slide, action="tier-move")
    assert entry.detail["to"] == "cold" and {o["sha256"] for o in entry.detail["objects"]} == digests

    # Act: two reads of the cold slide
    app = None
    if backend.remote:
        from lamina.jobs.queue import make_app

        app = make_app(archive.settings)
        app.open()
    try:
        restorer = restore.Restorer(archive, mover, app)
        restore.install(restorer)
        asked = time.monotonic()
        retry = []
        for _ in range(2):
            with pytest.raises(RestoringError, match="cold tier") as raised:
                restore.cold_check(archive.catalog, slide, "cold")
            retry.append(raised.value.retry_after_s)
        # Assert: one request, one job; Retry-After counts the delay
        assert _requests(archive, slide) == 1 and all(seconds >= DELAY_S for seconds in retry)
        restore.cold_check(archive.catalog, slide, "hot")  # a hot slide: nothing
        if app is not None:
            jobs = app.job_manager.list_jobs(task=restore.TASK)
            assert len(jobs) == 1 and jobs[0].status == "todo"
            # a worker runs it once it is due (scheduled at requested + delay)
            from lamina.jobs import tasks

            worker_app = make_app(archive.settings)
            tasks.register(worker_app, Archive(settings, archive.catalog, archive.store))
            time.sleep(max(0.0, DELAY_S - (time.monotonic() - asked)) + 0.2)
            with worker_app.open():
                worker_app.run_worker(
                    queues=["lamina"], wait=False, delete_jobs="never", install_signal_handlers=False
                )
            (done,) = app.job_manager.list_jobs(task=restore.TASK)
            assert done.status == "succeeded"
        else:
            assert len(restorer._threads) == 1
            time.sleep(DELAY_S / 3)
            assert archive.catalog.slide(slide).tier == "cold"  # type: ignore[union-attr]
            restorer.join(30)
    finally:
        restore._RESTORERS.pop(archive.catalog, None)
        if app is not None:
            app.close()
    # Assert: hot again after the delay, verified, the request ended, the cold copy kept
    assert time.monotonic() - asked >= DELAY_S
    assert archive.catalog.slide(slide).tier == "hot"  # type: ignore[union-attr]
    assert all(_sha(archive.store, digest) == digest for digest in digests)
    assert all(cold.store.exists(digest) for digest in digests)
    assert _requests(archive, slide) == 0
    with archive.catalog.engine.connect() as conn:
        (back,) = audit.entries(conn, slide=slide, action="tier-restore")
    assert back.detail["to"] == "hot" and back.actor == restore.ACTOR
    # returning to cold is a switch and a removal from hot: nothing copied
    again = mover.move_slide(slide, Tier.COLD, "lifecycle")
    assert (again.copied, again.present, again.removed) == (0, len(digests), len(digests))


#: the kill points: each step of a move to cold, and of a restore (which deletes nothing)
POINTS = [(Tier.COLD, step) for step in STEPS] + [
    (Tier.HOT, "copy"),
    (Tier.HOT, "verify"),
    (Tier.HOT, "switch"),
]
#: those of the scaled deployment (each point is a few S3 round trips per object): before and
#: after the switch, both ways
S3_POINTS = [(Tier.COLD, "copy"), (Tier.COLD, "switch"), (Tier.COLD, "delete"), (Tier.HOT, "verify")]


def test_a_crash_at_any_step_leaves_the_slide_readable_and_the_next_move_finishes(
    archive: Archive, backend: Backend, slide: str, tmp_path: Path
) -> None:
    digests = _digests(archive, slide)
    mover = TierMover(archive.catalog, archive.store, _cold(archive, backend, tmp_path))
    points = S3_POINTS if backend.remote else POINTS
    for target, step in points:
        # Arrange: a fresh cold tier, the slide on the other tier
        if archive.catalog.slide(slide).tier == "cold":  # type: ignore[union-attr]
            mover.move_slide(slide, Tier.HOT, "test")
        mover = TierMover(archive.catalog, archive.store, _cold(archive, backend, tmp_path))
        if target is Tier.HOT:
            mover.move_slide(slide, Tier.COLD, "test")
        before = Tier.HOT if target is Tier.COLD else Tier.COLD

        def crash(at: str, digest: str, step: str = step) -> None:
            if at == step:
                raise _Crash(at)

        # Act: killed at the step
        with pytest.raises(_Crash):
            TierMover(archive.catalog, archive.store, mover.cold, on_step=crash).move_slide(
                slide, target, "test"
            )
        # Assert: readable, whole, where the catalog says
        switched = step in ("switch", "delete")
        where = _readable_where_the_catalog_says(archive, mover, slide)
        assert where is (target if switched else before), (target, step)
        # Act: run again; Assert: finished
        finished = mover.move_slide(slide, target, "test")
        assert _readable_where_the_catalog_says(archive, mover, slide) is target
        assert finished.status == ("already" if switched else "moved"), (target, step)
        if target is Tier.COLD:
            assert not any(archive.store.exists(digest) for digest in digests), step
    # every point switched once: the moves alternate, two per point
    with archive.catalog.engine.connect() as conn:
        moves = [entry.detail["to"] for entry in audit.entries(conn, slide=slide, action="tier-move")]
    assert moves == ["cold", "hot"] * len(points)

    # Act: a held slide never goes cold, also when the hold comes after the copy
    marks = Marks(archive.catalog)
    marks.hold(Target(slide=slide), "court order 2026/7", "operator:test")
    with pytest.raises(RequestError, match="held"):
        mover.move_slide(slide, Tier.COLD, "test")
    marks.release(Target(slide=slide), "closed", "operator:test")

    def hold_now(at: str, digest: str) -> None:
        if at == "verify":
            marks.hold(Target(slide=slide), "late request", "operator:test")

    fresh = _cold(archive, backend, tmp_path)
    with pytest.raises(RequestError, match="late request"):
        TierMover(archive.catalog, archive.store, fresh, on_step=hold_now).move_slide(
            slide, Tier.COLD, "test"
        )
    # Assert: hot and whole, the copies made never switched to
    assert _readable_where_the_catalog_says(archive, mover, slide) is Tier.HOT
    assert all(fresh.store.exists(digest) for digest in digests)


@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
def test_lifecycle_run_moves_idle_slides_cold(archive: Archive, slide: str, tmp_path: Path) -> None:
    Policies(archive.catalog).set(LAB, "[defaults]\ncold_after_days = 10\n", "rules.toml", "admin")
    cold = ColdTier(FileBlobStore(tmp_path / "cold"))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    report = run(
        archive.catalog,
        archive.store,
        later,
        "lifecycle",
        mover=TierMover(archive.catalog, archive.store, cold),
    )
    assert report.done.actions == {"move-cold": 1} and not report.failed
    assert archive.catalog.slide(slide).tier == "cold"  # type: ignore[union-attr]
    # without a cold tier the move is skipped, and said so
    assert TierMover.for_archive(archive) is None


def test_the_cold_tier_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert Settings.load(home, env={}).cold_tier is None
    (home / "lamina.toml").write_text(
        '[tiers.cold]\nurl = "/mnt/tape"\nrestore_delay_s = 14400\n', encoding="utf-8"
    )
    assert Settings.load(home, env={}).cold_tier == ColdTierSettings("file:///mnt/tape", None, 14400.0)
    env = {"LAMINA_COLD_URL": "s3://cold/lamina", "LAMINA_COLD_STORAGE_CLASS": "glacier_ir"}
    assert Settings.load(home, env=env).cold_tier == ColdTierSettings(
        "s3://cold/lamina", "GLACIER_IR", 14400.0
    )
    for text, message in [
        (
            '[tiers.cold]\nurl = "/x"\nrestore_delay = 1\n',
            "'restore_delay' is not a setting.*restore_delay_s",
        ),
        ('[tiers.cold]\nurl = "/x"\nrestore_delay_s = -1\n', "RESTORE_DELAY_S.*0 or more"),
        ('[tiers.cold]\nurl = "/x"\nrestore_delay_s = "soon"\n', "RESTORE_DELAY_S.*expected seconds"),
        ('[tiers.cold]\nurl = "/x"\nstorage_class = "STANDARD_IA"\n', "needs an s3:// cold tier"),
        ('[tiers.cold]\nurl = "s3://b/p"\nstorage_class = "DEEP_ARCHIVE"\n', "GLACIER and DEEP_ARCHIVE"),
        ('[tiers.cold]\nurl = "ftp://x"\n', "LAMINA_COLD_URL.*s3://bucket/prefix"),
        ("[tiers.cold]\nrestore_delay_s = 5\n", "tiers.cold url .* is missing"),
        ('[tiers.hot]\nurl = "/x"\n', "only tiers.cold"),
    ]:
        (home / "lamina.toml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigurationError, match=message):
            Settings.load(home, env={})
    blobs = home / "blobs"
    (home / "lamina.toml").write_text(f'[tiers.cold]\nurl = "{blobs}"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is the hot store"):
        ColdTier.open(Settings.load(home, env={}))


def test_a_cold_slide_over_dicomweb_is_202_with_retry_after_then_200(tmp_path: Path) -> None:
    """On the embedded default (a server's restore path; the queued one is tested above)."""
    from lamina.api.app import create_app
    from lamina.archive.ingest import Ingestor
    from tests.signin import signed
    from tests.support import serving

    write_samples(tmp_path / "in", ["tiled_tiff"], size=(512, 384), seed=7)
    env = {"LAMINA_COLD_URL": str(tmp_path / "cold"), "LAMINA_COLD_RESTORE_DELAY_S": "1"}
    settings = Settings.load(tmp_path / "home", env=env)
    archive = Archive.open(settings)
    try:
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=settings.home)
        (candidate,) = discover([tmp_path / "in"])
        done = ingestor.ingest(candidate, load_manifest(tmp_path / "in" / "manifest.csv"))
        slide = archive.catalog.slide(done.slide_id or "")
        assert slide is not None
        mover = TierMover.for_archive(archive)
        assert mover is not None
        mover.move_slide(slide.id, Tier.COLD, "lifecycle")
        url = f"/dicomweb/studies/{slide.study_instance_uid}/series/{slide.series_instance_uid}/metadata"
        with serving(create_app(settings, archive)) as port:
            base = f"http://127.0.0.1:{port}"
            first, second = signed.get(base + url), signed.get(base + url)
            assert (first.status_code, second.status_code) == (202, 202), first.text
            assert int(first.headers["Retry-After"]) >= 1 and "cold tier" in first.json()["detail"]
            assert _requests(archive, slide.id) == 1
            deadline = time.monotonic() + 20
            while (answer := signed.get(base + url)).status_code == 202 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert answer.status_code == 200, answer.text
        assert archive.catalog.slide(slide.id).tier == "hot"  # type: ignore[union-attr]
    finally:
        archive.close()


def test_fixity_checks_each_slide_on_its_tier(archive: Archive, slide: str, tmp_path: Path) -> None:
    from lamina.archive.fixity import verify

    cold = ColdTier(FileBlobStore(tmp_path / "cold"))
    digests = _digests(archive, slide)
    TierMover(archive.catalog, archive.store, cold).move_slide(slide, Tier.COLD, "lifecycle")
    # Act: without the cold store the cold slide's objects are skipped, not missing; with it they
    # are checked there, and one removed from the cold tier is missing
    without = verify(archive.catalog, archive.store, orphan_grace_s=0)
    with_cold = verify(archive.catalog, archive.store, orphan_grace_s=0, cold_store=cold.store)
    lost = sorted(digests)[0]
    cold.store.delete(lost)
    damaged = verify(archive.catalog, archive.store, orphan_grace_s=0, cold_store=cold.store)
    # Assert
    assert without.ok and without.cold_skipped == len(digests) and without.checked == 0
    assert with_cold.ok and with_cold.cold_skipped == 0 and with_cold.checked == len(digests)
    assert [m.sha256 for m in damaged.missing] == [lost]


def test_expiring_a_cold_slide_empties_the_cold_tier_of_it(
    archive: Archive, slide: str, tmp_path: Path
) -> None:
    cold = ColdTier(FileBlobStore(tmp_path / "cold"))
    mover = TierMover(archive.catalog, archive.store, cold)
    digests = _digests(archive, slide)
    mover.move_slide(slide, Tier.COLD, "lifecycle")
    restore_at = dt.datetime.now(dt.UTC)
    from lamina.lifecycle.reports import record_report

    accession = archive.catalog.slide(slide).accession_number  # type: ignore[union-attr]
    record_report(archive.catalog, LAB, accession or "", "final", restore_at, source="cli", actor="lis")
    # Act
    report = run(
        archive.catalog,
        archive.store,
        restore_at + dt.timedelta(days=40),
        "lifecycle",
        mover=mover,
        cold_store=cold.store,
    )
    # Assert: expired, and nothing of it left on either tier
    assert report.done.actions == {"expire": 1} and not report.failed, report.failed
    assert not any(cold.store.exists(d) or archive.store.exists(d) for d in digests)
