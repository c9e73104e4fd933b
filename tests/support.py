"""Test helpers: the real test slides in ../shared/testdata, tools used as oracles, ingest, and
stored objects read or damaged the same way on either blob store (a folder or S3)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from lamina.archive.blobstore import BlobStore, FileBlobStore
from lamina.archive.blobstore.replicated import ReplicatedBlobStore
from lamina.archive.blobstore.s3 import S3BlobStore
from lamina.archive.discover import Candidate, discover
from lamina.archive.ingest import IngestOptions, Ingestor, IngestResult
from lamina.config import Settings

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata"
IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "LAMINA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def need(condition: bool, what: str) -> None:
    """Skip when something is missing on a user's machine; fail under CI, where it must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true requires it")
    pytest.skip(f"{what} is missing (run scripts/install, or clone shared/testdata beside the repo)")


@functools.cache
def postgres_reachable() -> bool:
    """Whether the PostgreSQL server of POSTGRES_URL answers (asked once per process)."""
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def shared_file(relative: str) -> Path:
    path = TESTDATA / relative
    need(path.exists(), f"test slide ../shared/testdata/{relative}")
    return path


def tool(name: str) -> str:
    found = shutil.which(name)
    need(found is not None, f"the tool {name!r}")
    assert found is not None
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error lines for one file (warnings are not errors)."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def ingest_case(
    ingestor: Ingestor,
    folder: Path,
    *,
    seed: int,
    tenant: str,
    size: tuple[int, int] = (1024, 768),
    **identity: str,
) -> str:
    """One synthetic Aperio SVS in ``folder`` whose manifest row carries ``identity`` (manifest
    columns: patient_id, accession_number, specimen_id...), ingested into ``tenant``; its slide id."""
    import csv

    from lamina.archive.manifest import load_manifest
    from lamina.sample import write_samples

    (sample,) = write_samples(folder, ["aperio_svs"], size=size, seed=seed)
    manifest = folder / "manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    row.update(identity)
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    (candidate,) = discover([sample.path])
    result = ingestor.ingest(candidate, load_manifest(manifest), IngestOptions(tenant=tenant))
    assert result.status == "ingested", result.reason
    return result.slide_id or ""


def ingest_path(ingestor: Ingestor, path: Path, **options: object) -> IngestResult:
    candidates = discover([path])
    assert len(candidates) == 1, candidates
    return ingestor.ingest(candidates[0], options=IngestOptions(**options))  # type: ignore[arg-type]


def single(path: Path) -> Candidate:
    return Candidate(path, (path,))


def tiled_svs_from(source: Path, dest: Path, repeat: tuple[int, int]) -> Path:
    """An Aperio-style SVS whose level 0 repeats ``source``'s level-0 JPEG tiles ``repeat`` times
    across and down (no decoding): a larger real-JPEG slide for crash and memory tests."""
    import numpy as np
    import tifffile

    with tifffile.TiffFile(source) as tiff:
        page = tiff.pages[0]
        handle = tiff.filehandle
        tiles = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            handle.seek(offset)
            tiles.append(handle.read(count))
        across = -(-page.imagewidth // page.tilewidth)
        down = -(-page.imagelength // page.tilelength)
        tables, tile = page.jpegtables, page.tilewidth
        description = page.description

    def ordered() -> Iterator[bytes]:
        for row in range(down * repeat[1]):
            for col in range(across * repeat[0]):
                yield tiles[(row % down) * across + (col % across)]

    width, height = across * repeat[0] * tile, down * repeat[1] * tile
    _, _, rest = description.partition("|")
    with tifffile.TiffWriter(dest) as out:
        out.write(
            ordered(),
            shape=(height, width, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            compression="jpeg",
            photometric="rgb",
            subsampling=(2, 2),
            jpegtables=tables,
            compressionargs={"outcolorspace": "RGB"},
            metadata=None,
            software=False,
            description=(
                f"Aperio Image Library v11.2.1 \r\n{width}x{height} ({tile}x{tile}) JPEG/RGB Q=30|{rest}"
            ),
        )
    return dest


@contextlib.contextmanager
def serving(app: Any, *, sign_in: bool = True) -> Iterator[int]:
    """Run an ASGI app under uvicorn in a thread on a free loopback port; yield the port.

    A lamina application (one with an archive once started) gets the tests' lab and operator,
    whose token :data:`tests.signin.signed` then sends to this port (``sign_in=False``: none)."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    # uvicorn leaves signal handling alone outside the main thread
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    archive = getattr(getattr(app, "state", None), "archive", None)
    if sign_in and archive is not None:
        from tests.signin import sign_in_operator

        sign_in_operator(archive.catalog, archive.settings.home, port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        from tests.signin import forget

        forget(port)


def lamina_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``lamina`` process on the archive of ``settings``: its home, catalog,
    blob store, replica and S3 connection (the ``LAMINA_*`` and ``AWS_*`` variables of this
    process are left out), and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMINA_", "AWS_"))}
    env |= {
        "LAMINA_HOME": str(settings.home),
        "LAMINA_DATABASE_URL": settings.database_url,
        "LAMINA_BLOB_URL": settings.blob_url,
        "COLUMNS": "200",
        **settings.s3,
    }
    if settings.replica_url:
        env["LAMINA_REPLICA_URL"] = settings.replica_url
    return env | extra


# -- stored objects, on a folder or on S3 ---------------------------------------------------------


def _concrete(store: BlobStore) -> BlobStore:
    """The store that holds the bytes: a replicated store's primary."""
    return store.primary if isinstance(store, ReplicatedBlobStore) else store


def read_object(store: BlobStore, sha256: str) -> bytes:
    """The whole object, as the store serves it."""
    return b"".join(store.open(sha256))


def stored_file(store: BlobStore, sha256: str, folder: Path) -> Path:
    """A file holding the object: the store's own file on a folder, else a copy downloaded into
    ``folder`` (as ``<sha256>.dcm``, checked against its digest)."""
    local = store.local_path(sha256)
    if local is not None:
        return Path(local)
    path = folder / f"{sha256}.dcm"
    if not path.exists():
        data = read_object(store, sha256)
        assert hashlib.sha256(data).hexdigest() == sha256, f"object {sha256} is damaged"
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def overwrite_object(store: BlobStore, sha256: str, data: bytes) -> None:
    """Replace the object's bytes behind the store's back, as a failing disk or a careless
    administrator would (the store then holds ``data`` under the old digest)."""
    store = _concrete(store)
    if isinstance(store, FileBlobStore):
        path = store.path_for(sha256)
        assert path.exists(), f"object {sha256} is not in {store.root}"
        path.chmod(path.stat().st_mode | 0o200)  # a store may keep its objects read-only
        path.write_bytes(data)
    elif isinstance(store, S3BlobStore):
        assert store.exists(sha256), f"object {sha256} is not in {store.where()}"
        store.client.put_object(Bucket=store.bucket, Key=store.key_for(sha256), Body=data)
    else:
        raise TypeError(f"cannot overwrite objects of a {type(store).__name__}")


def flip_one_byte(store: BlobStore, sha256: str, rng: random.Random) -> None:
    """Flip one random byte of the object (a different value, at a random offset)."""
    data = bytearray(read_object(_concrete(store), sha256))
    offset = rng.randrange(len(data))
    data[offset] ^= rng.randrange(1, 256)
    overwrite_object(store, sha256, bytes(data))


def lose_object(store: BlobStore, sha256: str) -> None:
    """Remove the object behind the store's back (its file, or its key)."""
    store = _concrete(store)
    if isinstance(store, FileBlobStore):
        store.path_for(sha256).unlink()
    elif isinstance(store, S3BlobStore):
        assert store.exists(sha256), f"object {sha256} is not in {store.where()}"
        store.client.delete_object(Bucket=store.bucket, Key=store.key_for(sha256))
    else:
        raise TypeError(f"cannot remove objects of a {type(store).__name__}")


def partial_writes(store: BlobStore) -> list[str]:
    """What unfinished writes left in the store: files in ``tmp/``, or temporary keys and open
    multipart uploads under ``<prefix>tmp/``."""
    if isinstance(store, ReplicatedBlobStore):
        return partial_writes(store.primary) + partial_writes(store.replica)
    if isinstance(store, FileBlobStore):
        return sorted(str(path) for path in store.tmp.iterdir())
    if isinstance(store, S3BlobStore):
        start = f"{store.prefix}tmp/"
        pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=start)
        keys = [str(item["Key"]) for page in pages for item in page.get("Contents", [])]
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=start)
        return sorted(keys + [f"upload {u['Key']}" for u in uploads.get("Uploads", [])])
    raise TypeError(f"cannot list the partial writes of a {type(store).__name__}")
