"""Crash safety of tier moves: SIGKILL ``lamina lifecycle run`` moving slides hot → cold, and
``lamina lifecycle restore`` bringing them back cold → hot, at many points, on both deployments.

The campaign of :mod:`tests.archive.test_crash` (its archives, its seeded kill points spread over
the measured duration of the work, its reports), applied to three slides idle past their rule's
``cold_after_days`` beside a fourth under legal hold, with a cold tier (``LAMINA_COLD_URL``: a
folder in the home on the embedded default, an S3 prefix in ``STANDARD_IA`` on the scaled one).
After each kill:

- every slide is readable where the catalog says (``slides.tier``): each object of its
  instances there and matching its SHA-256; the held slide is hot; the tier-aware fixity check
  (:func:`lamina.archive.fixity.verify` with ``cold_store=``) finds nothing missing or corrupt;
  the audit chain verifies, with one switch (``tier-move``, ``tier-restore``) per slide moved;
- running the command again finishes the moves: every slide on its tier, switched exactly once,
  the hot tier holding nothing of a cold slide (the source of a move to cold is emptied), and a
  restore keeping the cold copy whole.

The default run kills at a few points on the embedded default (SQLite + a folder: the default
suite keeps its time under 15 minutes); ``--slow`` at 200 per move on both deployments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy import select as query

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.blobstore import BlobStore
from lamina.archive.blobstore.s3 import S3BlobStore
from lamina.archive.catalog import tables as t
from lamina.archive.fixity import verify
from lamina.config import ColdTierSettings, Settings
from lamina.governance.registry import Registry
from lamina.lifecycle.marks import Marks, Target
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.tiers import TierMover
from tests.archive.test_crash import LAMINA, SLOW_POINTS, _Archives, _Durations, _env, _points, _report
from tests.backends import Backend
from tests.lifecycle.test_expire_crash import _LOADED, _PRELOADED, LAB, _sample

RULES = "[defaults]\ncold_after_days = 10\n"
#: the kill points of the default run, per move and deployment
DEFAULT_POINTS = {
    "cold": {"sqlite-folder": 1},
    "restore": {"sqlite-folder": 1},
}


# -- the archives: each with its cold tier ----------------------------------------------------------
class _TierArchives(_Archives):
    """:class:`_Archives` whose archives each have a cold tier of their own: a folder in the home,
    or an S3 prefix (a copy of the template's, for a copy)."""

    def env(self, home: Path, template: Path | None = None) -> dict[str, str]:
        if str(home) not in self.envs:
            made = super().env(home, template)
            if self.backend.s3 is None:
                made["LAMINA_COLD_URL"] = f"file://{home / 'cold'}"
            else:
                made["LAMINA_COLD_STORAGE_CLASS"] = "STANDARD_IA"
                made["LAMINA_COLD_URL"] = (
                    self.backend.store_url(f"cold-{home.name}")
                    if template is None
                    else self.backend._copy_prefix(self.envs[str(template)]["LAMINA_COLD_URL"])
                )
        return self.envs[str(home)]

    def discard(self, home: Path) -> None:
        cold = self.envs.get(str(home), {}).get("LAMINA_COLD_URL", "")
        super().discard(home)
        if cold.startswith("s3://") and self.backend.s3 is not None:
            store = S3BlobStore.from_url(cold, self.backend.s3.env(), check=False)
            pages = store.client.get_paginator("list_objects_v2").paginate(
                Bucket=store.bucket, Prefix=store.prefix
            )
            for key in [str(item["Key"]) for page in pages for item in page.get("Contents", [])]:
                store.client.delete_object(Bucket=store.bucket, Key=key)


@dataclass(frozen=True)
class _Template:
    home: Path
    moving: tuple[str, ...]  # idle past cold_after_days: moved cold by a run at ``now``
    held: str  # idle too, but under legal hold: stays hot
    now: str  # the run's --now


def _template(tmp_path: Path, archives: _TierArchives) -> _Template:
    """Four slides ingested, the lab's rules (``lamina lifecycle rules set``) moving them cold
    after 10 days without access, one held; every kill point starts from a copy."""
    home = tmp_path / "template"
    env = archives.env(home)
    archive = Archive.open(Settings.load(home, env=env))
    try:
        Registry(archive.catalog).add_tenant(LAB, "HCL")
        ids = [_sample(archive, tmp_path / "samples", f"s{n}", f"A26-{n}", n) for n in range(1, 5)]
        Marks(archive.catalog).hold(Target(slide=ids[3]), "court order 2026/123", "operator:test")
    finally:
        archive.close()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    done = subprocess.run(
        [*LAMINA, "lifecycle", "rules", "set", str(rules), "--tenant", LAB],
        env=_env(home, env),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    now = (dt.datetime.now(dt.UTC) + dt.timedelta(days=40)).isoformat()
    return _Template(home, tuple(ids[:3]), ids[3], now)


# -- the commands -----------------------------------------------------------------------------------
def _start(home: Path, extra: dict[str, str], args: list[str]) -> subprocess.Popen[bytes]:
    """``lamina ARGS``, started: its work begins when this returns (its modules loaded)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _PRELOADED, *args],
        env=_env(home, extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    fd, seen, deadline = process.stderr.fileno(), b"", time.monotonic() + 120
    while _LOADED not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk, f"lamina did not start: {seen.decode(errors='replace')}"
        seen += chunk
    return process


def _timed(home: Path, extra: dict[str, str], args: list[str]) -> tuple[dict[str, object], float]:
    """The command to the end: its JSON report, and the duration of its work."""
    process = _start(home, extra, args)
    begun = time.perf_counter()
    out, err = process.communicate(timeout=300)
    seconds = time.perf_counter() - begun
    assert process.returncode == 0, f"the command must finish: {out!r} {err!r}"
    report = json.loads(out)
    assert isinstance(report, dict), report
    return report, seconds


def _kill(home: Path, extra: dict[str, str], args: list[str], after: float) -> None:
    process = _start(home, extra, args)
    time.sleep(after)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def _run_args(template: _Template) -> list[str]:
    return ["lifecycle", "run", "--now", template.now, "--json"]


def _restore_args(template: _Template) -> list[str]:
    return ["lifecycle", "restore", *template.moving, "--json"]


# -- the invariants ---------------------------------------------------------------------------------
def _sha256(store: BlobStore, digest: str) -> str:
    hashed = hashlib.sha256()
    for chunk in store.open(digest):
        hashed.update(chunk)
    return hashed.hexdigest()


@dataclass(frozen=True)
class _State:
    tiers: dict[str, Tier]
    moves: Counter[str]  # slide id: its tier-move entries
    restores: Counter[str]  # slide id: its tier-restore entries
    hot_left: frozenset[str]  # objects of cold slides still in the hot store


def _check(home: Path, extra: dict[str, str], template: _Template) -> _State:
    """Every slide readable where the catalog says, the held one hot; nothing missing or corrupt
    on either tier; the audit chain verifies."""
    archive = Archive.open(Settings.load(home, env=extra))
    try:
        mover = TierMover.for_archive(archive)
        assert mover is not None, "the cold tier is configured"
        slides = {slide.id: slide for slide in archive.catalog.slides()}
        assert set(slides) == {*template.moving, template.held}
        tiers, hot_left = {}, set()
        for slide_id, slide in slides.items():
            assert slide.expired_at is None
            tier = tiers[slide_id] = Tier(slide.tier)
            rows = archive.catalog.instances(slide_id)
            assert len(rows) == slide.instances > 0, f"slide {slide_id} misses instances"
            for row in rows:  # readable, whole, where the catalog says
                found = _sha256(mover.store(tier), row.blob_sha256)
                assert found == row.blob_sha256, f"slide {slide_id} on {tier}: {row.blob_sha256} damaged"
                if tier is Tier.COLD and archive.store.exists(row.blob_sha256):
                    hot_left.add(row.blob_sha256)
        assert tiers[template.held] is Tier.HOT, "a held slide is never cold"
        with archive.catalog.engine.connect() as conn:
            chain = audit.verify(conn)
            assert chain.ok, f"audit entry {chain.first_bad}: {chain.reason}"
            moves = Counter(e.entity.split("/", 1)[1] for e in audit.entries(conn, action="tier-move"))
            restores = Counter(e.entity.split("/", 1)[1] for e in audit.entries(conn, action="tier-restore"))
        fixity = verify(
            archive.catalog,
            archive.store,
            workers=1,
            orphan_grace_s=0,
            actor="test",
            cold_store=mover.cold.store,
        )
        assert fixity.missing == [] and fixity.corrupt == [] and fixity.cold_skipped == 0, fixity
        assert moves[template.held] == restores[template.held] == 0
        return _State(tiers, moves, restores, frozenset(hot_left))
    finally:
        archive.close()


def _restore_requests(home: Path, extra: dict[str, str]) -> int:
    archive = Archive.open(Settings.load(home, env=extra))
    try:
        with archive.catalog.engine.connect() as conn:
            count = query(func.count()).where(t.job_reports.c.kind == "restore")
            return int(conn.execute(count).scalar_one())
    finally:
        archive.close()


# -- hot → cold: lamina lifecycle run ---------------------------------------------------------------
def _assert_cold_finished(state: _State, template: _Template) -> None:
    assert all(state.tiers[slide] is Tier.COLD for slide in template.moving), state.tiers
    assert all(state.moves[slide] == 1 for slide in template.moving), state.moves
    assert state.hot_left == frozenset(), "the hot tier keeps objects of cold slides"


def _cold_campaign(tmp_path: Path, points: int, archives: _TierArchives) -> _Template:
    """The campaign; returns its reference archive (the three slides moved cold by a whole run),
    the restore campaign's template."""
    started = time.perf_counter()
    tmp_path.mkdir()
    template = _template(tmp_path, archives)
    reference = tmp_path / "reference"
    extra = archives.env(reference, template.home)
    report, seconds = _timed(reference, extra, _run_args(template))
    assert report["done"]["actions"] == {"move-cold": 3} and report["failed"] == [], report  # type: ignore[index]
    _assert_cold_finished(_check(reference, extra, template), template)
    work = _Durations(seconds)
    outcomes: Counter[str] = Counter()
    for index, fraction in _points(points, f"tier-cold/{archives.name}"):
        home = tmp_path / f"home-{index}"
        extra = archives.env(home, template.home)
        _kill(home, extra, _run_args(template), 1.1 * work.typical * fraction)
        crashed = _check(home, extra, template)
        cold = {slide for slide in template.moving if crashed.tiers[slide] is Tier.COLD}
        assert all(crashed.moves[slide] == (slide in cold) for slide in template.moving), crashed.moves
        notes = ["hot objects left"] if crashed.hot_left else []
        outcomes[" + ".join([f"{len(cold)} cold", *notes])] += 1
        again, seconds = _timed(home, extra, _run_args(template))
        assert again["failed"] == [], again
        assert again["moves_finished"] >= bool(crashed.hot_left), again  # the killed run's deletions
        assert again["done"]["actions"] == ({"move-cold": 3 - len(cold)} if len(cold) < 3 else {}), again  # type: ignore[index]
        if not cold:
            work.add(seconds)
        _assert_cold_finished(_check(home, extra, template), template)
        archives.discard(home)
    _report("tier move to cold", archives, points, started, work, outcomes)
    return _Template(reference, template.moving, template.held, template.now)


# -- cold → hot: lamina lifecycle restore ----------------------------------------------------------
def _assert_restored(state: _State, template: _Template, home: Path, extra: dict[str, str]) -> None:
    assert all(state.tiers[slide] is Tier.HOT for slide in template.moving), state.tiers
    assert all(state.restores[slide] == 1 for slide in template.moving), state.restores
    assert _restore_requests(home, extra) == 0, "a restore request outlives its restore"
    archive = Archive.open(Settings.load(home, env=extra))
    try:  # the cold copy is kept, whole
        mover = TierMover.for_archive(archive)
        assert mover is not None
        for slide in template.moving:
            for row in archive.catalog.instances(slide):
                assert _sha256(mover.cold.store, row.blob_sha256) == row.blob_sha256
    finally:
        archive.close()


def _restore_campaign(tmp_path: Path, points: int, archives: _TierArchives, template: _Template) -> None:
    """The campaign, from ``template``: the three slides cold, the held one hot."""
    started = time.perf_counter()
    tmp_path.mkdir()
    reference = tmp_path / "reference"
    extra = archives.env(reference, template.home)
    report, seconds = _timed(reference, extra, _restore_args(template))
    assert [item["status"] for item in report["restored"]] == ["restored"] * 3, report  # type: ignore[attr-defined]
    _assert_restored(_check(reference, extra, template), template, reference, extra)
    work = _Durations(seconds)
    archives.discard(reference)
    outcomes: Counter[str] = Counter()
    for index, fraction in _points(points, f"tier-restore/{archives.name}"):
        home = tmp_path / f"home-{index}"
        extra = archives.env(home, template.home)
        _kill(home, extra, _restore_args(template), 1.1 * work.typical * fraction)
        crashed = _check(home, extra, template)
        hot = {slide for slide in template.moving if crashed.tiers[slide] is Tier.HOT}
        assert all(crashed.restores[slide] == (slide in hot) for slide in template.moving), crashed.restores
        outcomes[f"{len(hot)} restored"] += 1
        again, seconds = _timed(home, extra, _restore_args(template))
        statuses = {item["slide"]: item["status"] for item in again["restored"]}  # type: ignore[attr-defined]
        assert statuses == {slide: "hot" if slide in hot else "restored" for slide in template.moving}, again
        if not hot:
            work.add(seconds)
        _assert_restored(_check(home, extra, template), template, home, extra)
        archives.discard(home)
    _report("tier restore", archives, points, started, work, outcomes)


@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
def test_sigkill_during_tier_moves_leaves_slides_readable_and_running_again_finishes(
    tmp_path: Path, backend: Backend
) -> None:
    archives = _TierArchives(backend)
    cold = _cold_campaign(tmp_path / "cold", DEFAULT_POINTS["cold"][backend.name], archives)
    _restore_campaign(tmp_path / "restore", DEFAULT_POINTS["restore"][backend.name], archives, cold)


@pytest.mark.slow
def test_tier_move_sigkill_campaign_at_200_points(tmp_path: Path, backend: Backend) -> None:
    _cold_campaign(tmp_path / "cold", SLOW_POINTS, _TierArchives(backend))


@pytest.mark.slow
def test_tier_restore_sigkill_campaign_at_200_points(tmp_path: Path, backend: Backend) -> None:
    archives = _TierArchives(backend)
    cold = _cold_campaign(tmp_path / "cold", 0, archives)
    _restore_campaign(tmp_path / "restore", SLOW_POINTS, archives, cold)


# -- the run finishes a move to cold stopped after its switch ----------------------------------------
class _Crash(BaseException):
    """A process killed at a step (not an Exception: nothing catches it on the way out)."""


@pytest.mark.parametrize("backend", ["sqlite-folder"], indirect=True)
def test_a_run_finishes_the_deletion_of_a_move_to_cold_stopped_after_its_switch(
    archive: Archive, tmp_path: Path
) -> None:
    """The plan has nothing due for a cold slide, and its hot copies are referenced (the sweep
    keeps them): the run finishes the deletion that the switch recorded."""
    from lamina.archive.sweep import sweep
    from lamina.lifecycle.policy import Policies
    from lamina.lifecycle.run import run

    Registry(archive.catalog).add_tenant(LAB, "HCL")
    slide = _sample(archive, tmp_path, "s1", "A26-1", 1)
    Policies(archive.catalog).set(LAB, RULES, "rules.toml", "admin")
    archive = Archive(
        archive.settings.with_(cold_tier=ColdTierSettings(f"file://{tmp_path / 'cold'}", None, 0.0)),
        archive.catalog,
        archive.store,
    )
    mover = TierMover.for_archive(archive)
    assert mover is not None
    digests = {row.blob_sha256 for row in archive.catalog.instances(slide)}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)

    def crash(step: str, digest: str) -> None:
        if step == "delete":  # one hot object removed, the others left
            raise _Crash(step)

    # Act: killed during the deletion, after the switch
    crashing = TierMover(mover.catalog, mover.hot, mover.cold, on_step=crash)
    with pytest.raises(_Crash):
        run(archive.catalog, archive.store, later, "lifecycle", mover=crashing)
    left = {digest for digest in digests if archive.store.exists(digest)}
    assert archive.catalog.slide(slide).tier == "cold" and 0 < len(left) < len(digests)  # type: ignore[union-attr]
    sweep(archive.catalog, archive.store, older_than_s=0)
    assert all(archive.store.exists(digest) for digest in left), "the sweep keeps referenced objects"
    # Act: run again
    again = run(archive.catalog, archive.store, later, "lifecycle", mover=mover, cold_store=mover.cold.store)
    # Assert: nothing due, but the deletion finished, its record gone, the slide whole on cold
    assert again.done.actions == {} and again.failed == [] and again.moves_finished == 1
    assert not any(archive.store.exists(digest) for digest in digests)
    assert all(_sha256(mover.cold.store, digest) == digest for digest in digests)
    with archive.catalog.engine.connect() as conn:
        assert conn.execute(query(func.count()).select_from(t.job_reports)).scalar_one() == 0
        (entry,) = audit.entries(conn, slide=slide, action="tier-move")
    assert entry.detail["to"] == "cold"
