"""The replica store: every object ingested is written to both stores; ``repair`` restores damaged
primary objects from the replica after checking the replica copy's digest, and reports those whose
replica copy is damaged too without touching the primary; ``lamina verify --repair`` exits 0 only
when everything is fine afterwards, and 2 without a replica. On both backends: a folder and its
replica folder, and an S3 prefix and its replica prefix."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.blobstore import BlobRef, BlobStore, BlobWriter, FileBlobStore
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.catalog import tables as t
from lamina.archive.fixity import verify
from lamina.archive.ingest import Ingestor
from lamina.archive.repair import repair
from lamina.config import Settings
from lamina.errors import ConfigurationError, IntegrityError
from lamina.sample import write_samples
from tests.backends import Backend
from tests.support import flip_one_byte, ingest_path, lamina_env, lose_object, partial_writes, read_object

SAMPLE_FORMATS = ("aperio_svs", "tiled_tiff", "dicom_wsi")


@dataclass(frozen=True)
class Located:
    """An archive's home and the settings (variables) that point at its catalog, store and replica."""

    home: Path
    env: dict[str, str]

    def settings(self) -> Settings:
        return Settings.load(self.home, env=self.env)


@pytest.fixture(scope="module")
def pristine(module_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Located:
    """An archive with three ingested sample slides and its replica (a folder in the home, or a
    prefix of its own in the bucket), built once per backend."""
    base = tmp_path_factory.mktemp("repair")
    home = base / "home"
    env = module_backend.env("repair-pristine")
    located = Located(
        home, {**env, "LAMINA_REPLICA_URL": module_backend.replica_url(home, "repair-pristine")}
    )
    samples = write_samples(base / "samples", SAMPLE_FORMATS, size=(1024, 768), seed=5)
    archive = Archive.open(located.settings())
    try:
        assert isinstance(archive.store, ReplicatedBlobStore)
        ingestor = Ingestor(archive.catalog, archive.store, spool_dir=archive.settings.home)
        for sample in samples:
            result = ingest_path(ingestor, sample.path)
            assert result.status == "ingested", result.reason
    finally:
        archive.close()
    return located


@pytest.fixture
def located(pristine: Located, module_backend: Backend, tmp_path: Path) -> Located:
    """A private copy of the archive and its replica, free to damage."""
    return Located(tmp_path / "home", module_backend.copy(pristine.env, pristine.home, tmp_path / "home"))


@pytest.fixture
def opened(located: Located) -> Iterator[Archive]:
    archive = Archive.open(located.settings())
    yield archive
    archive.close()


def _store(archive: Archive) -> ReplicatedBlobStore:
    assert isinstance(archive.store, ReplicatedBlobStore)
    return archive.store


def _sha(store: BlobStore, digest: str) -> str:
    hasher = hashlib.sha256()
    for chunk in store.open(digest):
        hasher.update(chunk)
    return hasher.hexdigest()


def _damage(store: ReplicatedBlobStore, digests: list[str], seed: int) -> tuple[set[str], set[str]]:
    """Delete two primary objects and flip a byte in half the others; return (deleted, corrupted)."""
    rng = random.Random(seed)
    digests = sorted(digests)
    rng.shuffle(digests)
    deleted, corrupted = set(digests[:2]), set(digests[2 : 2 + len(digests) // 2])
    for digest in deleted:
        lose_object(store.primary, digest)
    for digest in corrupted:
        flip_one_byte(store.primary, digest, rng)
    return deleted, corrupted


def _last_audit(archive: Archive, count: int) -> list[dict[str, object]]:
    with archive.catalog.begin() as conn:
        rows = conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq.desc()).limit(count)).mappings()
        found = [dict(row) for row in rows]
        assert audit.verify(conn).first_bad is None
    return found[::-1]


def test_settings_read_the_replica_url(tmp_path: Path) -> None:
    assert Settings.load(tmp_path / "a", env={}).replica_url is None
    url = f"file://{tmp_path / 'r'}"
    assert Settings.load(tmp_path / "a", env={"LAMINA_REPLICA_URL": url}).replica_url == url
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "lamina.toml").write_text(f'replica_url = "{url}/toml"\n')
    assert Settings.load(tmp_path / "b", env={}).replica_url == f"{url}/toml"
    assert Settings.load(tmp_path / "b", env={"LAMINA_REPLICA_URL": url}).replica_url == url
    plain = Archive.open(Settings.load(tmp_path / "a", env={}))
    try:
        assert isinstance(plain.store, FileBlobStore)
    finally:
        plain.close()
    home = tmp_path / "c"
    with pytest.raises(ConfigurationError, match="LAMINA_REPLICA_URL"):
        Archive.open(Settings.load(home, env={"LAMINA_REPLICA_URL": f"file://{home / 'blobs'}"}))


def test_every_object_is_in_both_stores(opened: Archive) -> None:
    store = _store(opened)
    referenced = opened.catalog.referenced_blobs()
    assert len(referenced) >= 6
    assert set(store.primary.iter_digests()) == set(store.replica.iter_digests()) == set(referenced)
    for digest in referenced:
        assert _sha(store.primary, digest) == _sha(store.replica, digest) == digest
    assert verify(opened.catalog, store).ok


def test_the_writer_writes_both_deletes_both_and_aborts_both(opened: Archive) -> None:
    store = _store(opened)
    with store.writer() as writer:
        writer.write(b"first ")
        writer.write_parts([b"sec", bytearray(b"ond "), memoryview(b"third")], 12)
        ref = writer.commit()
    assert ref.sha256 == hashlib.sha256(b"first second third").hexdigest() and ref.created
    assert (
        read_object(store.primary, ref.sha256)
        == read_object(store.replica, ref.sha256)
        == b"first second third"
    )
    assert store.read_range(ref.sha256, 6, 6) == b"second" and store.size(ref.sha256) == 18
    store.delete(ref.sha256)
    assert not store.primary.exists(ref.sha256) and not store.replica.exists(ref.sha256)
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write(b"never committed")
        raise RuntimeError("boom")
    digest = hashlib.sha256(b"never committed").hexdigest()
    assert not store.primary.exists(digest) and not store.replica.exists(digest)
    assert partial_writes(store) == []


def test_a_commit_that_fails_on_the_replica_leaves_nothing_on_the_primary(opened: Archive) -> None:
    store = _store(opened)

    class _FailingWriter(BlobWriter):
        def __init__(self, inner: BlobWriter) -> None:
            self.inner = inner

        def write(self, data: bytes | bytearray) -> None:
            self.inner.write(data)

        def commit(self) -> BlobRef:
            self.inner.abort()
            raise IntegrityError("replica disk broken")

        def abort(self) -> None:
            self.inner.abort()

    class _Failing(FileBlobStore):
        def writer(self) -> BlobWriter:
            return _FailingWriter(super().writer())

    failing = ReplicatedBlobStore(store.primary, _Failing(opened.settings.home.parent / "broken"))
    with pytest.raises(IntegrityError, match="replica disk broken"), failing.writer() as writer:
        writer.write(b"half-written object")
        writer.commit()
    assert not store.primary.exists(hashlib.sha256(b"half-written object").hexdigest())


@pytest.mark.parametrize("seed", [1, 2])
def test_repair_restores_every_damaged_object(opened: Archive, seed: int) -> None:
    store = _store(opened)
    referenced = sorted(opened.catalog.referenced_blobs())
    originals = {digest: read_object(store.replica, digest) for digest in referenced}
    deleted, corrupted = _damage(store, referenced, seed)
    found = verify(opened.catalog, store)
    assert {m.sha256 for m in found.missing} == deleted
    assert {c.sha256 for c in found.corrupt} == corrupted
    result = repair(found, store, opened.catalog)
    assert result.ok and result.unrepairable == []
    assert result.repaired == sorted(deleted | corrupted)
    after = verify(opened.catalog, store)
    assert after.ok and after.checked == len(referenced)
    for digest in referenced:
        assert read_object(store.primary, digest) == originals[digest]
    entries = _last_audit(opened, len(result.repaired) + 1)[:-1]  # the last is the second verify
    assert [(e["action"], e["entity"]) for e in entries] == [("repair", f"blob/{d}") for d in result.repaired]
    assert all(json.loads(str(e["detail"]))["outcome"] == "repaired" for e in entries)
    assert {json.loads(str(e["detail"]))["problem"] for e in entries} == {"missing", "corrupt"}


def test_an_object_damaged_in_both_stores_is_unrepairable(opened: Archive) -> None:
    store = _store(opened)
    rng = random.Random(9)
    corrupt_both, gone_both, repairable = sorted(opened.catalog.referenced_blobs())[:3]
    flip_one_byte(store.primary, corrupt_both, rng)
    flip_one_byte(store.replica, corrupt_both, rng)
    damaged_primary = read_object(store.primary, corrupt_both)
    store.primary.delete(gone_both)
    store.replica.delete(gone_both)
    flip_one_byte(store.replica, repairable, rng)  # the replica is damaged, the primary fine
    store.primary.delete(repairable)
    found = verify(opened.catalog, store)
    result = repair(found, store, opened.catalog)
    assert result.repaired == []
    assert not result.ok
    reasons = {item.sha256: (item.problem, item.reason) for item in result.unrepairable}
    assert set(reasons) == {corrupt_both, gone_both, repairable}
    assert reasons[corrupt_both][0] == "corrupt" and "damaged too" in reasons[corrupt_both][1]
    assert reasons[gone_both][0] == "missing" and "does not hold it" in reasons[gone_both][1]
    assert reasons[repairable][0] == "missing" and "damaged too" in reasons[repairable][1]
    # the primary keeps its own damaged copy: nothing of the bad replica was written over it
    assert read_object(store.primary, corrupt_both) == damaged_primary
    assert not store.primary.exists(gone_both) and not store.primary.exists(repairable)
    assert partial_writes(store) == []
    entries = _last_audit(opened, 3)
    assert [json.loads(str(e["detail"]))["outcome"] for e in entries] == ["unrepairable"] * 3
    again = verify(opened.catalog, store)
    assert {c.sha256 for c in again.corrupt} == {corrupt_both}
    assert {m.sha256 for m in again.missing} == {gone_both, repairable}


def _run_cli(located: Located, *args: str, replica: bool = True) -> subprocess.CompletedProcess[str]:
    env = lamina_env(located.settings())
    if not replica:
        del env["LAMINA_REPLICA_URL"]
    command = [sys.executable, "-m", "lamina", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_repairs_and_exits_zero_when_everything_is_fine_afterwards(located: Located) -> None:
    archive = Archive.open(located.settings())
    try:
        store = _store(archive)
        deleted, corrupted = _damage(store, sorted(archive.catalog.referenced_blobs()), seed=4)
    finally:
        archive.close()
    done = _run_cli(located, "verify", "--repair", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["found_ok"] is False
    assert {m["sha256"] for m in report["missing"]} == deleted
    assert {c["sha256"] for c in report["corrupt"]} == corrupted
    assert report["repair"] == {"ok": True, "repaired": sorted(deleted | corrupted), "unrepairable": []}
    clean = _run_cli(located, "verify", "--json", replica=False)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["ok"] is True
    again = _run_cli(located, "verify", "--repair", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["repair"]["repaired"] == []


def test_cli_exits_one_when_something_cannot_be_repaired(located: Located) -> None:
    archive = Archive.open(located.settings())
    try:
        store = _store(archive)
        first, second = sorted(archive.catalog.referenced_blobs())[:2]
        store.delete(first)  # from both stores
        store.primary.delete(second)
    finally:
        archive.close()
    done = _run_cli(located, "verify", "--repair", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["repair"]["repaired"] == [second]
    assert [item["sha256"] for item in report["repair"]["unrepairable"]] == [first]
    text = _run_cli(located, "verify", "--repair")
    assert text.returncode == 1 and "Traceback" not in text.stdout + text.stderr
    assert any(first in line and "unrepairable" in line for line in text.stdout.splitlines())


def test_cli_repair_without_a_replica_exits_two_naming_the_setting(located: Located) -> None:
    done = _run_cli(located, "verify", "--repair", "--json", replica=False)
    assert done.returncode == 2
    assert "LAMINA_REPLICA_URL" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
