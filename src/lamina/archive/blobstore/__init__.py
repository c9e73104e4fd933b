"""Content-addressed blob stores: every object is named by the SHA-256 of its bytes.

A store implements :class:`BlobStore`. Writing goes through :meth:`BlobStore.writer`, whose
``commit()`` makes the object durable and verified before it returns its digest; an object that
is referenced by nothing (a crash between the write and the catalog transaction) is an orphan
that :meth:`BlobStore.iter_digests` lets a sweep find.
"""

from collections.abc import Mapping

from lamina.archive.blobstore.base import BlobRef, BlobStore, BlobWriter
from lamina.archive.blobstore.filesystem import FileBlobStore

__all__ = ["BlobRef", "BlobStore", "BlobWriter", "FileBlobStore", "open_blobstore"]


def open_blobstore(
    url: str, verify_after_write: bool = True, s3_env: Mapping[str, str] | None = None
) -> BlobStore:
    """The store at ``url``; an ``s3://`` one reached with ``s3_env`` (the AWS_* settings, default
    the environment)."""
    from lamina.errors import ConfigurationError

    if url.startswith("file://"):
        from pathlib import Path

        return FileBlobStore(Path(url[len("file://") :]), verify_after_write=verify_after_write)
    if url.startswith("s3://"):
        import os

        from lamina.archive.blobstore.s3 import S3BlobStore

        env = os.environ if s3_env is None else s3_env
        return S3BlobStore.from_url(url, env, verify_after_write=verify_after_write)
    raise ConfigurationError(
        f"blob store URL {url!r}: use file:///path/to/folder or s3://bucket/prefix "
        "(with AWS_ENDPOINT_URL and the AWS_* credentials)"
    )
