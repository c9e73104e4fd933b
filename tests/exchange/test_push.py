"""A site pushes its slides of interest to an archive: two lamina processes on loopback, each with
its own data folder (the archive ``lamina serve`` with ``role = "archive"``, the site ``lamina
push``).

Identity planted in every place the site's slide holds it (its file name; its TIFF descriptions'
Filename, User and Barcode; its manifest: names, IDs, birth date, accession, specimen; the SVS's label and
macro images) must be nowhere in what the archive holds
(every byte of its catalog and blob store) nor in what it serves (metadata and instances over
DICOMweb); the pseudonym is stable across two pushes; tissue frames are byte-identical; the label
and overview stay at the site. A push to an unreachable archive waits and is delivered later; a
token of another lab is refused; an opposition after the transfer withdraws the slides at the
archive; each lab sees only its own slides there.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import delete, func, select

from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.archive.discover import discover
from lamina.archive.ingest import IngestOptions
from lamina.archive.manifest import load_manifest
from lamina.config import Settings
from lamina.sample import write_samples
from tests.cli.test_serve import lamina_serve
from tests.support import lamina_env

LAB, OTHER = "690781810", "130786049"
PLANTED = {
    "patient_id": "IPP-PLANT-99173",
    "patient_name": "ZYXWOLSKA^PLANTINE",
    "birth_date": "19380214",
    "accession_number": "ACCPLANT771",
    "specimen_id": "SPECPLANT-5521",
}


def _settings(home: Path, env: dict[str, str], **toml: str) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    if toml:
        (home / "lamina.toml").write_text("".join(f'{k} = "{v}"\n' for k, v in toml.items()))
    return Settings.load(home, env=env)


def _planted_case(site: Archive, folder: Path, seed: int) -> str:
    """A synthetic Aperio SVS whose file name, TIFF descriptions (Filename, User) and manifest
    row (names, IDs, birth date, accession, specimen) carry the planted identity; its slide id."""
    (sample,) = write_samples(folder, ["aperio_svs"], size=(768, 512), seed=seed)
    data = sample.path.read_bytes()
    for key, planted in (("Filename = ", "PLNTFILE"), ("User = ", "PLANTUSER")):
        start = data.index(key.encode()) + len(key)
        end = data.index(b"|", start)
        value = data[start:end]
        assert len(value) >= len(planted)
        data = data.replace(value, planted.encode().ljust(len(value), b"X"))  # same length: offsets kept
    # the scanner's barcode field, in place of one of the same length
    assert b"Time Zone = GMT+01:00" in data
    data = data.replace(b"Time Zone = GMT+01:00", b"Barcode = BRCPLANT7XX")
    named = folder / f"{PLANTED['patient_name'].split('^')[0]}_{seed}.svs"
    named.write_bytes(data)
    sample.path.unlink()
    identity = PLANTED | {"file": named.name, "accession_number": PLANTED["accession_number"] + str(seed)}
    (folder / "manifest.csv").write_text(
        ",".join(identity) + "\n" + ",".join(identity.values()) + "\n", encoding="utf-8"
    )
    (candidate,) = discover([named])
    result = site.receiver().ingestor.ingest(
        candidate, load_manifest(folder / "manifest.csv"), IngestOptions(tenant=LAB)
    )
    assert result.status == "ingested", result.reason
    return str(result.slide_id)


def _lamina(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina", *args],
        capture_output=True,
        text=True,
        env=lamina_env(settings, LAMINA_PUSH_CRON="off"),
        timeout=180,
    )


def _push(settings: Settings, base: str, token: str, *args: str) -> tuple[int, list[dict[str, object]]]:
    done = _lamina(settings, "push", "--to", base, "--token", token, "--json", *args)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)["results"]


def _holdings(settings: Settings) -> Iterator[tuple[str, bytes]]:
    """Everything a node holds: the files of its home, every value of every catalog row (bytes
    also decompressed where they are zlib, as the instances' DICOM JSON is), every stored object."""
    for path in sorted(settings.home.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()
    node = Archive.open(settings)
    try:
        with node.catalog.engine.connect() as conn:
            for table in t.metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes):
                            yield table.name, value
                            with contextlib.suppress(zlib.error):
                                yield table.name, zlib.decompress(value)
                        elif value is not None:
                            yield table.name, str(value).encode()
        for digest in node.store.iter_digests():
            yield f"object {digest}", b"".join(node.store.open(digest))
    finally:
        node.close()


def _needles() -> list[bytes]:
    values = [
        *PLANTED.values(),
        "ZYXWOLSKA",
        "PLANTINE",
        "ACCPLANT771",
        "1938-02-14",
        "PLNTFILE",
        "PLANTUSER",
        "BRCPLANT7",
    ]
    return [value.encode() for value in values]


def test_a_slide_of_interest_reaches_the_archive_de_identified_and_verified(world: dict[str, object]) -> None:
    archive_settings = world["archive"]
    assert isinstance(archive_settings, Settings)
    tokens = world["tokens"]
    assert isinstance(tokens, dict)
    site_home = world["site"]
    assert isinstance(site_home, Settings)
    slides = world["slides"]
    assert isinstance(slides, list)

    # an archive that cannot be reached: the slides wait, with the reason, and exit 2
    code, results = _push(site_home, "http://127.0.0.1:9", tokens[LAB])
    assert code == 2 and {r["status"] for r in results} == {"queued"}
    assert all("cannot be reached" in str(r["reason"]) for r in results)
    status = json.loads(_lamina(site_home, "push", "--status", "--json").stdout)["transfers"]
    assert {row["status"] for row in status} == {"queued"} and all(row["attempts"] == 1 for row in status)

    with lamina_serve(archive_settings) as (_, base):
        # a token of another lab, then no valid token: refused by the archive, with its answer
        code, results = _push(site_home, base, tokens[OTHER], *slides)
        assert code == 1 and {r["status"] for r in results} == {"refused"}, results
        assert all("403" in str(r["reason"]) for r in results), results
        code, results = _push(site_home, base, "not-a-token", *slides)
        assert code == 1 and all("401" in str(r["reason"]) for r in results), results

        # delivered (named slides are tried at once, whatever their back-off)
        code, results = _push(site_home, base, tokens[LAB], *slides)
        assert code == 0, results
        assert [r["status"] for r in results] == ["verified", "verified"]
        acknowledged = [r["acknowledgement"] for r in results]
        assert all(isinstance(a, dict) and a.get("series_instance_uid") for a in acknowledged)

        # a second push has nothing to do; and a site that lost its record (a crash between the
        # archive's answer and its own commit) pushes again: the archive knows the slides (the
        # same keyed UIDs) and stores nothing twice
        code, again = _push(site_home, base, tokens[LAB])
        assert code == 0 and again == []
        stored = _instances(archive_settings)
        _forget_transfers(site_home)
        code, again = _push(site_home, base, tokens[LAB], *slides)
        assert code == 0 and [r["status"] for r in again] == ["verified", "verified"], again
        assert _instances(archive_settings) == stored

        # what the archive serves: metadata and instances of the lab's studies
        headers = {"Authorization": f"Bearer {tokens[LAB]}"}
        found = httpx.get(f"{base}/dicomweb/studies", headers=headers, timeout=30)
        assert found.status_code == 200
        studies = found.json()
        assert len(studies) == 2
        served = found.content
        patient_ids = set()
        for study in studies:
            uid = study["0020000D"]["Value"][0]
            metadata = httpx.get(f"{base}/dicomweb/studies/{uid}/metadata", headers=headers, timeout=30)
            assert metadata.status_code == 200
            served += metadata.content
            patient_ids |= {item["00100020"]["Value"][0] for item in metadata.json()}
            instances = httpx.get(
                f"{base}/dicomweb/studies/{uid}",
                headers=headers | {"Accept": 'multipart/related; type="application/dicom"'},
                timeout=60,
            )
            assert instances.status_code == 200
            served += instances.content
        # one pseudonym for both slides of the patient, 64 hexadecimal digits, not the PatientID
        assert len(patient_ids) == 1
        (pseudonym,) = patient_ids
        assert len(pseudonym) == 64 and pseudonym != PLANTED["patient_id"]
        # the other lab sees none of them
        other = httpx.get(
            f"{base}/dicomweb/studies", headers={"Authorization": f"Bearer {tokens[OTHER]}"}, timeout=30
        )
        assert other.status_code in (200, 204) and (other.status_code == 204 or other.json() == [])

    site_bytes = b"".join(data for _, data in _holdings(site_home))
    for needle in (b"IPP-PLANT-99173", b"ZYXWOLSKA", b"ACCPLANT7713", b"SPECPLANT-5521", b"BRCPLANT7"):
        assert needle in site_bytes, f"the control: {needle!r} is at the site"
    for needle in _needles():
        assert needle not in served, f"{needle!r} served by the archive"
    for where, data in _holdings(archive_settings):
        for needle in _needles():
            assert needle not in data, f"{needle!r} found in {where}"

    # tissue frames byte-identical, label and overview left at the site
    site = Archive.open(site_home)
    archive = Archive.open(archive_settings)
    try:
        with archive.catalog.engine.connect() as conn:
            flavors = {row[0] for row in conn.execute(select(t.instances.c.flavor))}
        assert flavors <= {"VOLUME", "THUMBNAIL"}, flavors
        site_frames = _frames(site, slides[0])
        with site.catalog.engine.connect() as conn:
            series_out = conn.execute(
                select(t.transfers.c.series_instance_uid_out).where(t.transfers.c.slide_id == slides[0])
            ).scalar_one()
        assert _frames(archive, _slide_of_series(archive, series_out)) == site_frames
    finally:
        site.close()
        archive.close()

    # an opposition after the transfer: told at the next push, the slides withdrawn there
    denied = _lamina(site_home, "consent", "deny", PLANTED["patient_id"], "--tenant", LAB, "--json")
    assert denied.returncode == 0, denied.stderr
    with lamina_serve(archive_settings) as (_, base):
        code, told = _push(site_home, base, tokens[LAB])
        assert {r["status"] for r in told} == {"withdrawn"}, told
    archive = Archive.open(archive_settings)
    try:
        with archive.catalog.engine.connect() as conn:
            received = t.archive_received
            withdrawn = conn.execute(
                select(func.count()).select_from(received).where(received.c.withdrawn_at.is_not(None))
            ).scalar_one()
    finally:
        archive.close()
    assert withdrawn == 2


def _instances(settings: Settings) -> list[tuple[str, str]]:
    node = Archive.open(settings)
    try:
        with node.catalog.engine.connect() as conn:
            query = select(t.instances.c.sop_instance_uid, t.instances.c.blob_sha256)
            return sorted((str(a), str(b)) for a, b in conn.execute(query))
    finally:
        node.close()


def _forget_transfers(settings: Settings) -> None:
    node = Archive.open(settings)
    try:
        with node.catalog.begin() as conn:
            conn.execute(delete(t.transfers))
    finally:
        node.close()


def _slide_of_series(archive: Archive, series: str) -> str:
    with archive.catalog.engine.connect() as conn:
        return str(
            conn.execute(select(t.slides.c.id).where(t.slides.c.series_instance_uid == series)).scalar_one()
        )


def _frames(archive: Archive, slide_id: str) -> dict[tuple[int, int], bytes]:
    """Every frame of the slide's volume levels, by (level, frame number), read from the store."""
    import numpy as np

    frames = {}
    for row in archive.catalog.instances(slide_id):
        if row.flavor != "VOLUME":
            continue
        offsets = np.frombuffer(row.frame_offsets, dtype="<u8")
        lengths = np.frombuffer(row.frame_lengths, dtype="<u4")
        for number, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
            data = archive.store.read_range(row.blob_sha256, int(offset), int(length))
            # a frame's fragment is padded to an even length (PS3.5 A.4): the site's index of
            # a converted slide counts the frame's own bytes, a received instance's the fragment's
            if len(data) % 2 == 0 and data.endswith(b"\xff\xd9\x00"):
                data = data[:-1]
            frames[(row.total_pixel_matrix_columns, number)] = data
    return frames
