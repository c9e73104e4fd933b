"""An object found damaged when a client reads it: the client gets an error, the event is
audited, the repair is queued and restores the object from the replica; the next read works."""

from __future__ import annotations

import time
from pathlib import Path

from lamina.api import create_app
from lamina.archive.archive import Archive
from lamina.archive.audit import entries
from lamina.archive.fixity import verify_one
from lamina.archive.ingest import Ingestor
from lamina.config import Settings
from lamina.sample import write_samples
from tests.signin import signed
from tests.support import ingest_path, serving

#: the frames as stored (PS3.18 8.7.3.5.2: transfer-syntax=*), the bytes compared below
STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def test_a_truncated_object_read_by_a_client_is_reported_audited_and_repaired(tmp_path: Path) -> None:
    env = {"LAMINA_REPLICA_URL": f"file://{tmp_path / 'replica'}", "LAMINA_VERIFY_CRON": "off"}
    archive = Archive.open(Settings.load(tmp_path / "home", env=env))
    write_samples(tmp_path / "src", ["aperio_svs"], size=(2048, 1536), seed=5)
    result = ingest_path(Ingestor(archive.catalog, archive.store), tmp_path / "src" / "aperio_svs.svs")
    assert result.ok, result.reason
    row = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    path = Path(archive.store.primary.local_path(row.blob_sha256) or "")  # type: ignore[attr-defined]
    original = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(original[: len(original) // 2])  # the end of the object is lost
    url = (
        f"/dicomweb/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}/frames/{row.number_of_frames}"
    )
    try:
        with serving(create_app(archive.settings, archive)) as port:
            answer = signed.get(f"http://127.0.0.1:{port}{url}", headers={"Accept": STORED})
            assert answer.status_code == 500
            assert "damaged" in answer.json()["detail"]
            deadline = time.monotonic() + 30
            while not verify_one(archive.catalog, archive.store, row.blob_sha256).ok:
                assert time.monotonic() < deadline, "the object was not repaired"
                time.sleep(0.1)
            again = signed.get(f"http://127.0.0.1:{port}{url}", headers={"Accept": STORED})
            assert again.status_code == 200
            offset, length = (
                int.from_bytes(row.frame_offsets[-8:], "little"),
                int.from_bytes(row.frame_lengths[-4:], "little"),
            )
            assert original[offset : offset + length] in again.content
        with archive.catalog.engine.connect() as conn:
            actions = [(e.action, e.entity) for e in entries(conn)]
        assert ("damaged", f"blob/{row.blob_sha256}") in actions
        assert ("repair", f"blob/{row.blob_sha256}") in actions
        assert path.read_bytes() == original
    finally:
        archive.close()


def test_a_slide_deleted_by_another_process_is_not_found_not_damaged(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path / "home", env={"LAMINA_VERIFY_CRON": "off"})
    archive = Archive.open(settings)
    write_samples(tmp_path / "src", ["aperio_svs"], size=(1024, 768), seed=6)
    result = ingest_path(Ingestor(archive.catalog, archive.store), tmp_path / "src" / "aperio_svs.svs")
    row = next(r for r in archive.catalog.instances(result.slide_id or "") if r.level == 0)
    url = (
        f"/dicomweb/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}/frames/1"
    )
    other = Archive.open(settings)  # another process's view of the same archive
    try:
        app = create_app(archive.settings, archive)
        with serving(app) as port:
            assert signed.get(f"http://127.0.0.1:{port}{url}", headers={"Accept": "*/*"}).status_code == 200
            app.state.index.revalidate_s = 0.0  # (5 s in service)
            other.delete_slide(result.slide_id or "", "lamina-test", "scanned twice")
            gone = signed.get(f"http://127.0.0.1:{port}{url}", headers={"Accept": "*/*"})
            assert gone.status_code == 404, gone.text
        with archive.catalog.engine.connect() as conn:
            assert "damaged" not in {e.action for e in entries(conn)}
    finally:
        other.close()
        archive.close()
