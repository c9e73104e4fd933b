"""What SeaweedFS's read cost depends on: the same object uploaded in several ways, read by range.

Usage::

    .venv/bin/python benchmarks/s3_uploads.py [--size-gb 0.3] [--seconds 5] [--connections 16]
        [--only VARIANT,...] [--weed-option=-filer.maxMB=1 ...] [--work DIR] [--quick]

The largest object of the slide of ``tiles.py`` (its level 0, a DICOM instance of JPEG tiles,
288 MB at 0.3 GB) is uploaded to ``weed mini`` (``_scaled.py``, started with the given
``--weed-option`` flags) under one key per variant below. For each, the script prints how many
of SeaweedFS's chunks it stored gzipped (its filer's ``?metadata=true``) and the ranged GETs per
second ``wrk`` gets at ``--connections`` on 2,000 random frames of the object (unsigned; the
bucket is readable so), with p99:

- ``lamina``: lamina's own writer (``S3BlobStore``: 8 MiB parts, each with ``Content-Type:
  application/octet-stream``, then ``CopyObject`` to the final key);
- ``parts``: a multipart upload of 8 MiB parts without any content type (lamina before);
- ``parts-copied``: the same, then ``CopyObject`` (lamina before, as it stores);
- ``parts-create-type``: ``ContentType`` given to ``CreateMultipartUpload`` only;
- ``parts-64mib``: 64 MiB parts, no content type;
- ``parts-dicom``: ``Content-Type: application/dicom`` on every part;
- ``put``, ``put-dicom``: one ``PutObject``, without and with a content type.

``--quick``: ``lamina``, ``parts`` and ``parts-dicom`` only, 3 s each.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import format_table, machine
from _scaled import BUCKET, DEFAULT_POSTGRES, ScaledDeployment, scaled_deployment
from _svs import ensure_svs
from tiles import DEFAULT_WORK, LUA_RANGES, REPO, ingest, lamina_frames, run_wrk

PART = 8 << 20
VARIANTS = (
    "lamina",
    "parts",
    "parts-copied",
    "parts-create-type",
    "parts-64mib",
    "parts-dicom",
    "put",
    "put-dicom",
)


def multipart(
    client: Any, key: str, data: bytes, part: int, create_type: str = "", part_type: str = ""
) -> None:
    extra = {"ContentType": create_type} if create_type else {}
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)["UploadId"]

    def set_type(request: Any, **_: Any) -> None:
        request.headers["Content-Type"] = part_type

    if part_type:
        client.meta.events.register_first("before-sign.s3.UploadPart", set_type)
    parts = []
    try:
        for number, start in enumerate(range(0, len(data), part), 1):
            answer = client.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=data[start : start + part]
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    finally:
        if part_type:
            client.meta.events.unregister("before-sign.s3.UploadPart", set_type)
    client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )


def uploads(deployment: ScaledDeployment, data: bytes) -> dict[str, Callable[[str], str]]:
    """Each variant: upload ``data``, return the key it can be read at."""
    client = deployment.client()

    def lamina(key: str) -> str:
        sys.path.insert(0, str(REPO / "src"))
        from lamina.archive.blobstore.s3 import S3BlobStore

        store = S3BlobStore.from_url(f"s3://{BUCKET}/{key}", deployment.s3_env)
        with store.writer() as writer:
            for start in range(0, len(data), PART):
                writer.write(data[start : start + PART])
            return store.key_for(writer.commit().sha256)

    def copied(key: str) -> str:
        multipart(client, key + "-source", data, PART)
        client.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key + "-source"})
        return key

    def put(content_type: str) -> Callable[[str], str]:
        def upload(key: str) -> str:
            extra = {"ContentType": content_type} if content_type else {}
            client.put_object(Bucket=BUCKET, Key=key, Body=data, **extra)
            return key

        return upload

    def parts(**options: Any) -> Callable[[str], str]:
        def upload(key: str) -> str:
            multipart(client, key, data, **options)
            return key

        return upload

    return {
        "lamina": lamina,
        "parts": parts(part=PART),
        "parts-copied": copied,
        "parts-create-type": parts(part=PART, create_type="application/dicom"),
        "parts-64mib": parts(part=64 << 20),
        "parts-dicom": parts(part=PART, part_type="application/dicom"),
        "put": put(""),
        "put-dicom": put("application/dicom"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument(
        "--weed-option", action="append", default=[], help="e.g. --weed-option=-filer.maxMB=1"
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.only = 3, "lamina,parts,parts-dicom"
    work = args.work / "s3-uploads"
    work.mkdir(parents=True, exist_ok=True)
    slide = ensure_svs(args.work, args.size_gb)
    home = args.work / "tiles" / f"lamina-{args.size_gb:g}gb"  # the embedded archive of tiles.py
    ingest(home, slide)
    frames = lamina_frames(home)
    digest = max({f.sha256 for f in frames}, key=lambda d: sum(1 for f in frames if f.sha256 == d))
    level = [f for f in frames if f.sha256 == digest]
    data = Path(level[0].path).read_bytes()
    spans = [f"{f.offset}-{f.offset + f.length - 1}" for f in random.Random(7).sample(level, 2000)]
    rows = []
    with scaled_deployment(work, args.postgres, tuple(args.weed_option)) as deployment:
        variants = uploads(deployment, data)
        for name in args.only.split(","):
            key = variants[name](f"uploads/{name}")
            chunks = deployment.chunks(key)
            gzipped = sum(1 for chunk in chunks if chunk.get("is_compressed"))
            lines = [f"/{BUCKET}/{key} {span}" for span in spans]
            load = run_wrk(name, deployment.endpoint, lines, args.connections, args.seconds, work, LUA_RANGES)
            rows.append(
                [name, f"{gzipped} of {len(chunks)}", f"{load.requests_per_s:,.0f}", f"{load.p99_ms:.1f}"]
            )
            print(f"{name}: {rows[-1][1]} gzipped, {rows[-1][2]}/s", file=sys.stderr, flush=True)
    print(f"object: {len(data):,} bytes, {len(level):,} frames; weed options: {args.weed_option or 'none'}")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(format_table(["upload", "chunks gzipped", "ranged GETs/s", "p99 ms"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
