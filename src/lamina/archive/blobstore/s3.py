"""Blob store on the S3 API (AWS S3, SeaweedFS, MinIO, Ceph RGW ...): ``<prefix>sha256/<digest>``.

A writer streams the object to a temporary key ``<prefix>tmp/<uuid>``, computing its SHA-256 as
the bytes go: an object under one part is one ``PutObject``; a larger one is a multipart upload
whose parts (``part_size`` bytes, at least 8 MiB) are sent as they fill, so that at most one
part is held in memory. Each request carries a checksum of its body (``x-amz-checksum-sha256``,
or ``Content-MD5`` for servers without flexible checksums), so that the server rejects a body
damaged in transit, and ``Content-Type: application/octet-stream`` (see :data:`CONTENT_TYPE`).
``commit`` completes the upload, reads it back (a ``HEAD`` size check and a
full ``GET`` hashed again, unless ``verify_after_write`` is off), copies it server-side to its
final key (unless an object with the same digest is already there: deduplication) and deletes
the temporary key. ``abort`` aborts the multipart upload and deletes the temporary key.

Ranged reads (frames) go through :class:`~lamina.archive.blobstore.s3_ranges.RangeReader`, a
signed GET on keep-alive connections that costs a fifth of boto3's CPU per request; the rest goes
through boto3, whose connection pool is sized for the API's thread pool (:data:`MAX_CONNECTIONS`).

Errors are :class:`~lamina.errors.StorageError` (endpoint unreachable, request failed) or
:class:`~lamina.errors.ConfigurationError` (credentials rejected, bucket missing); their
messages name the endpoint and the bucket and never contain a credential.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from lamina.archive.blobstore.base import BlobRef, BlobStore, BlobWriter
from lamina.archive.blobstore.s3_ranges import (
    AsyncRangeReader,
    RangeError,
    RangeReader,
    botocore_credentials,
    direct_route,
)
from lamina.errors import (
    ConfigurationError,
    IntegrityError,
    LaminaError,
    NotFoundError,
    StorageError,
    UnavailableError,
)

MIN_PART_SIZE = 8 << 20
#: Sent with every body (``PutObject`` and each ``UploadPart``). Without it SeaweedFS guesses,
#: per 4 MiB chunk, whether to gzip the chunk from its first 128 bytes: about one chunk in ten of
#: a slide's level (JPEG tiles of white background compress) was stored gzipped, and every ranged
#: read that fell in one cost the decompression of the whole chunk, dividing the server's ranged
#: GETs by four (docs/storage.md). An explicit type, any type but text or XML, turns the guess off.
CONTENT_TYPE = "application/octet-stream"
#: Connections kept to the S3 service, by boto3 and by the range reader each: at least the
#: threads that read at once (Starlette's pool has 40), or each extra request opens a new one.
MAX_CONNECTIONS = 64
_READ_CHUNK = 8 << 20
_MAX_PARTS = 10_000
_COPY_OBJECT_LIMIT = 5 << 30
_HEX = frozenset("0123456789abcdef")

_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
        "InvalidSecurity",
    }
)
_TRANSIENT_CODES = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _check_digest(sha256: str) -> str:
    if len(sha256) != 64 or not _HEX.issuperset(sha256):
        raise NotFoundError(f"{sha256!r} is not a SHA-256 digest")
    return sha256


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


class S3BlobStore(BlobStore):
    """Objects in ``bucket`` under ``prefix``, through ``client`` (a boto3 S3 client).

    ``checksum`` is ``"SHA256"`` (the S3 flexible checksum, sent with every request that carries
    a body) or ``"MD5"`` (``Content-MD5``, which every S3 server checks).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        verify_after_write: bool = True,
        part_size: int = MIN_PART_SIZE,
        checksum: str = "SHA256",
        endpoint: str | None = None,
        ranges: RangeReader | None = None,
    ) -> None:
        if client is None:
            raise ConfigurationError(f"S3 bucket {bucket!r}: no client given (use S3BlobStore.from_url)")
        if part_size < MIN_PART_SIZE:
            raise ConfigurationError(f"S3 part size {part_size} is under the minimum {MIN_PART_SIZE}")
        if checksum not in ("SHA256", "MD5"):
            raise ConfigurationError(f"S3 checksum {checksum!r}: expected SHA256 or MD5")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client
        self.verify_after_write = verify_after_write
        self.part_size = part_size
        self.checksum = checksum
        self.endpoint = endpoint or str(
            getattr(getattr(client, "meta", None), "endpoint_url", "") or "AWS S3"
        )
        #: ranged reads without boto3 (None: through boto3, e.g. behind a proxy)
        self.ranges = ranges
        self.async_ranges = AsyncRangeReader(ranges, MAX_CONNECTIONS) if ranges is not None else None
        events = getattr(getattr(client, "meta", None), "events", None)
        if events is not None:  # UploadPart has no ContentType parameter: set the header
            events.register_first(
                "before-sign.s3.UploadPart", _part_content_type, unique_id="lamina-part-content-type"
            )

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_url(
        cls,
        url: str,
        env: Mapping[str, str],
        *,
        verify_after_write: bool = True,
        check: bool = True,
        part_size: int = MIN_PART_SIZE,
    ) -> S3BlobStore:
        """``s3://bucket/prefix``, with the endpoint, keys and region from ``env``
        (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_DEFAULT_REGION``; without keys, boto3's usual credential chain). With ``check``,
        the bucket is reached once so that a wrong setting shows now, not at the first write."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigurationError(f"blob store URL {url!r}: expected s3://bucket/prefix")
        bucket, prefix = parts.netloc, parts.path.strip("/")
        endpoint = env.get("AWS_ENDPOINT_URL") or None
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigurationError(
                f"blob store URL {url!r} needs boto3; install it with: pip install boto3"
            ) from exc
        key_id = env.get("AWS_ACCESS_KEY_ID") or None
        secret = env.get("AWS_SECRET_ACCESS_KEY") or None
        if (key_id is None) != (secret is None):
            raise ConfigurationError(
                f"S3 bucket {bucket!r}: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"
            )
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=MAX_CONNECTIONS,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint else {},
            # lamina sends its own checksums (see _body_checksum); no second one per request
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"
        session = boto3.session.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            region_name=region,
        )
        try:
            client = session.client("s3", endpoint_url=endpoint, config=config)
        except ValueError as exc:  # a malformed endpoint URL
            raise ConfigurationError(f"AWS_ENDPOINT_URL {endpoint!r} is not a valid URL: {exc}") from None
        store = cls(
            bucket,
            prefix,
            client,
            verify_after_write=verify_after_write,
            part_size=part_size,
            endpoint=endpoint or "AWS S3",
            ranges=_range_reader(session, endpoint, bucket, region, env),
        )
        if check:
            store.check()
        return store

    def check(self) -> None:
        """Reach the bucket once (``HEAD bucket``)."""
        with self.errors("reaching the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    # ---------------------------------------------------------------- errors

    def where(self) -> str:
        return f"S3 bucket {self.bucket!r} at {self.endpoint}"

    @contextlib.contextmanager
    def errors(self, what: str, key: str | None = None) -> Iterator[None]:
        """Turn botocore's exceptions into lamina's; messages name the endpoint, bucket and key
        and carry only the error's class or code (never a request's headers or a credential)."""
        try:
            yield
        except LaminaError:
            raise
        except Exception as exc:
            raise self.translate(exc, what, key) from None

    def translate(self, exc: Exception, what: str, key: str | None = None) -> LaminaError:
        from botocore import exceptions as bce

        where = self.where() + (f", key {key!r}" if key else "")
        code = _error_code(exc)
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return ConfigurationError(
                f"{what} failed: no S3 credentials for {where}; "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError | bce.ConnectionClosedError):
            return UnavailableError(
                f"{what} failed: the S3 endpoint {self.endpoint} is unreachable ({type(exc).__name__}) "
                f"for bucket {self.bucket!r}; check AWS_ENDPOINT_URL and that the server is running"
            )
        if isinstance(exc, bce.ReadTimeoutError | bce.HTTPClientError):
            return UnavailableError(f"{what} failed: {where}: {type(exc).__name__}")
        if code in _TRANSIENT_CODES:
            return UnavailableError(f"{what} failed: {where}: {code} (the server may recover; retried)")
        if code in _AUTH_CODES or code == "403":
            return ConfigurationError(
                f"{what} failed: {where} rejected the credentials ({code}); "
                "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy"
            )
        if code == "NoSuchBucket" or (code == "404" and key is None):
            return ConfigurationError(f"{what} failed: {where}: the bucket does not exist; create it first")
        if code in _MISSING_CODES:
            return NotFoundError(f"{what}: {where}: no such object")
        if code is not None:
            return StorageError(f"{what} failed: {where}: {code}")
        return StorageError(f"{what} failed: {where}: {type(exc).__name__}")

    # ---------------------------------------------------------------- keys

    def key_for(self, sha256: str) -> str:
        return f"{self.prefix}sha256/{_check_digest(sha256)}"

    def tmp_key(self) -> str:
        return f"{self.prefix}tmp/{uuid.uuid4().hex}"

    def body_checksum(self, body: bytes | bytearray | memoryview) -> dict[str, str]:
        """The request parameters that make the server check ``body``."""
        if self.checksum == "SHA256":
            value = base64.b64encode(hashlib.sha256(body).digest()).decode()
            return {"ChecksumSHA256": value}
        return {"ContentMD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()}

    # ---------------------------------------------------------------- BlobStore

    def writer(self) -> BlobWriter:
        return _S3Writer(self)

    def read_range(self, sha256: str, offset: int, length: int) -> bytes:
        key = self.key_for(sha256)
        if length <= 0:
            return b""
        if self.ranges is not None:
            try:
                return self.ranges.get(key, offset, offset + length - 1)
            except (RangeError, OSError, http.client.HTTPException) as exc:
                raise self._range_failed(exc, sha256, offset, length) from None
        try:
            with self.errors(f"reading bytes {offset}-{offset + length - 1} of object {sha256}", key):
                response = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
                )
                data: bytes = response["Body"].read()
        except StorageError as exc:
            if "InvalidRange" in str(exc):  # starts at or past the end: like pread, nothing
                return b""
            raise
        return data

    async def read_range_async(self, sha256: str, offset: int, length: int) -> bytes:
        if self.async_ranges is None:
            return await super().read_range_async(sha256, offset, length)
        key = self.key_for(sha256)
        if length <= 0:
            return b""
        try:
            return await self.async_ranges.get(key, offset, offset + length - 1)
        except (RangeError, OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            raise self._range_failed(exc, sha256, offset, length) from None

    def _range_failed(self, exc: Exception, sha256: str, offset: int, length: int) -> LaminaError:
        what = f"reading bytes {offset}-{offset + length - 1} of object {sha256}"
        if isinstance(exc, RangeError):
            return self.translate(exc, what, self.key_for(sha256))
        return UnavailableError(
            f"{what} failed: the S3 endpoint {self.endpoint} is unreachable ({type(exc).__name__}) "
            f"for bucket {self.bucket!r}; check AWS_ENDPOINT_URL and that the server is running"
        )

    def open(self, sha256: str) -> Iterator[bytes]:
        key = self.key_for(sha256)
        with self.errors(f"reading object {sha256}", key):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        return self._chunks(response["Body"], sha256, key)

    def _chunks(self, body: Any, sha256: str, key: str) -> Iterator[bytes]:
        try:
            with self.errors(f"reading object {sha256}", key):
                yield from body.iter_chunks(_READ_CHUNK)
        finally:
            body.close()

    def exists(self, sha256: str) -> bool:
        _check_digest(sha256)  # a malformed digest is an error, as in the folder store
        try:
            self.size(sha256)
        except NotFoundError:
            return False
        return True

    def size(self, sha256: str) -> int:
        key = self.key_for(sha256)
        with self.errors(f"object {sha256}", key):
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def modified_at(self, sha256: str) -> float | None:
        key = self.key_for(sha256)
        try:
            with self.errors(f"object {sha256}", key):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFoundError:
            return None
        return float(head["LastModified"].timestamp())

    def delete(self, sha256: str) -> None:
        key = self.key_for(sha256)
        with self.errors(f"deleting object {sha256}", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def iter_digests(self) -> Iterator[str]:
        start = f"{self.prefix}sha256/"
        with self.errors("listing the objects"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(start) :]
                    if len(name) == 64 and _HEX.issuperset(name):
                        yield name

    def sweep_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary keys and abort multipart uploads that an interrupted process left,
        older than ``older_than_s``; returns how many."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
        start = f"{self.prefix}tmp/"
        removed = 0
        with self.errors("sweeping temporary objects"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                for item in page.get("Contents", []):
                    if older_than_s <= 0 or item["LastModified"] < cutoff:
                        self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                        removed += 1
            # listed in full before any is aborted: aborting while paging could skip some; under
            # sha256/ too, where a copy between tiers uploads (blobstore.transfer)
            uploads = [
                upload
                for prefix in (start, f"{self.prefix}sha256/")
                for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
                for upload in page.get("Uploads", [])
            ]
            for upload in uploads:
                if older_than_s <= 0 or upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed


def _part_content_type(request: Any, **_: Any) -> None:
    """botocore event handler: the Content-Type of an ``UploadPart`` body (see CONTENT_TYPE)."""
    request.headers["Content-Type"] = CONTENT_TYPE


def _range_reader(
    session: Any, endpoint: str | None, bucket: str, region: str, env: Mapping[str, str]
) -> RangeReader | None:
    """The reader of ranges for ``from_url``'s store, or None where boto3 must do it: no
    credentials (boto3 reports that), a proxy, or AWS S3 with a bucket name that is not a DNS
    label (boto3 knows its addressing rules)."""
    credentials = botocore_credentials(session)
    if credentials is None:
        return None
    if endpoint:
        url, path_style = endpoint, True
    elif re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket):
        url, path_style = f"https://s3.{region}.amazonaws.com", False
    else:
        return None
    if not direct_route(url):
        return None
    from botocore.httpsession import get_cert_path

    bundle = env.get("AWS_CA_BUNDLE") or get_cert_path(True)
    return RangeReader(
        url,
        bucket,
        region,
        credentials,
        path_style=path_style,
        max_connections=MAX_CONNECTIONS,
        ca_bundle=bundle if isinstance(bundle, str) else None,
    )


class _S3Writer(BlobWriter):
    """Buffers one part, sends it when full; the SHA-256 of the whole object is computed as the
    bytes arrive."""

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self._key = store.tmp_key()
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written = False  # something may exist under the temporary key
        self._closed = False

    def write(self, data: bytes | bytearray) -> None:
        self.write_parts([data], len(data))

    def write_parts(self, parts: list[bytes | bytearray | memoryview], size: int) -> None:
        if self._closed:
            raise StorageError(f"{self._store.where()}: write after commit or abort")
        for part in parts:
            self._hash.update(part)
            self._buffer += part
            while len(self._buffer) >= self._store.part_size:
                self._send_part(self._store.part_size)
        self._size += size

    def _send_part(self, length: int) -> None:
        store = self._store
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        number = len(self._parts) + 1
        if number > _MAX_PARTS:
            raise StorageError(f"{store.where()}: the object is over {_MAX_PARTS} parts; raise the part size")
        with store.errors(f"uploading part {number}", self._key):
            if self._upload_id is None:
                extra = {"ChecksumAlgorithm": "SHA256"} if store.checksum == "SHA256" else {}
                created = store.client.create_multipart_upload(
                    Bucket=store.bucket, Key=self._key, ContentType=CONTENT_TYPE, **extra
                )
                self._upload_id = str(created["UploadId"])
            checksum = store.body_checksum(body)
            response = store.client.upload_part(
                Bucket=store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                **checksum,
            )
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumSHA256" in checksum:
            part["ChecksumSHA256"] = response.get("ChecksumSHA256") or checksum["ChecksumSHA256"]
        self._parts.append(part)

    def _finish_upload(self) -> None:
        store = self._store
        if self._upload_id is None:
            body = bytes(self._buffer)
            self._buffer.clear()
            with store.errors("uploading the object", self._key):
                self._written = True
                store.client.put_object(
                    Bucket=store.bucket,
                    Key=self._key,
                    Body=body,
                    ContentType=CONTENT_TYPE,
                    **store.body_checksum(body),
                )
            return
        if self._buffer:
            self._send_part(len(self._buffer))
        with store.errors("completing the multipart upload", self._key):
            store.client.complete_multipart_upload(
                Bucket=store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._written = True
        self._upload_id = None

    def _verify(self, digest: str) -> None:
        """Read the temporary object back: its size, then its SHA-256."""
        store = self._store
        with store.errors("verifying the upload", self._key):
            stored = int(store.client.head_object(Bucket=store.bucket, Key=self._key)["ContentLength"])
            if stored != self._size:
                raise IntegrityError(
                    f"{store.where()}, key {self._key!r}: holds {stored} bytes, {self._size} were sent"
                )
            body = store.client.get_object(Bucket=store.bucket, Key=self._key)["Body"]
            again = hashlib.sha256()
            try:
                for chunk in body.iter_chunks(_READ_CHUNK):
                    again.update(chunk)
            finally:
                body.close()
        if again.hexdigest() != digest:
            raise IntegrityError(
                f"{store.where()}, key {self._key!r}: the bytes read back differ from the bytes sent "
                f"(object {digest})"
            )

    def _copy_to(self, final: str) -> None:
        store = self._store
        source = {"Bucket": store.bucket, "Key": self._key}
        with store.errors("copying the object into place", final):
            if self._size <= _COPY_OBJECT_LIMIT:
                store.client.copy_object(Bucket=store.bucket, Key=final, CopySource=source)
            else:  # over CopyObject's limit: boto3's managed (multipart) copy
                store.client.copy(source, store.bucket, final)

    def commit(self) -> BlobRef:
        if self._closed:
            raise StorageError(f"{self._store.where()}: commit after commit or abort")
        store = self._store
        try:
            self._finish_upload()
            digest = self._hash.hexdigest()
            if store.verify_after_write:
                self._verify(digest)
            final = store.key_for(digest)
            created = not store.exists(digest)
            if created:
                self._copy_to(final)
                with store.errors("checking the copied object", final):
                    copied = int(store.client.head_object(Bucket=store.bucket, Key=final)["ContentLength"])
                if copied != self._size:
                    raise IntegrityError(
                        f"{store.where()}, key {final!r}: the copy holds {copied} bytes, "
                        f"{self._size} were sent"
                    )
        except BaseException:
            self.abort()
            raise
        self._delete_tmp()
        self._closed = True
        return BlobRef(digest, self._size, created=created)

    def _delete_tmp(self) -> None:
        store = self._store
        if self._written:
            with store.errors("deleting the temporary object", self._key):
                store.client.delete_object(Bucket=store.bucket, Key=self._key)
            self._written = False

    def abort(self) -> None:
        """Best effort: leaves nothing behind when the server can be reached."""
        store = self._store
        self._closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                store.client.abort_multipart_upload(
                    Bucket=store.bucket, Key=self._key, UploadId=self._upload_id
                )
            self._upload_id = None
        if self._written:
            with contextlib.suppress(Exception):
                self._delete_tmp()
