"""The two backends the suite runs on: SQLite + a folder (the embedded default) and PostgreSQL + S3
(the scaled deployment).

A :class:`Backend` hands out archive locations as the settings that point an archive at them
(``LAMINA_*`` and ``AWS_*`` variables, for :meth:`lamina.config.Settings.load` or a ``lamina``
process). On ``sqlite-folder`` the archive's home holds its catalog and its blobs, so a location
is the home alone (no variables); on ``postgresql-s3`` each location is a database created for it
on the test server (dropped at :meth:`Backend.close`) and a prefix of its own in the test bucket
of the session's SeaweedFS.

PostgreSQL comes from ``LAMINA_TEST_POSTGRES_URL`` or the server on 127.0.0.1:5432, S3 from the
``s3_server`` fixture; where either is missing the ``postgresql-s3`` runs are skipped with a
message saying how to enable them, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from lamina.archive.blobstore.s3 import S3BlobStore
from tests.s3server import BUCKET, S3Server
from tests.support import POSTGRES_URL, need, postgres_reachable

#: The parameter ids of every test that runs on both backends.
BACKENDS = ("sqlite-folder", "postgresql-s3")
_STORE_KEYS = ("LAMINA_BLOB_URL", "LAMINA_REPLICA_URL")


class Backend:
    """Archive locations on one backend (``name`` is one of :data:`BACKENDS`)."""

    def __init__(self, name: str, s3: S3Server | None = None) -> None:
        if name not in BACKENDS:
            raise ValueError(f"backend {name!r}: expected one of {BACKENDS}")
        if name == "postgresql-s3" and s3 is None:
            raise ValueError("the postgresql-s3 backend needs an S3 server")
        self.name = name
        self.s3 = s3
        self._admin: Engine | None = None
        self._databases: list[str] = []

    @classmethod
    def open(cls, name: str, request: pytest.FixtureRequest) -> Backend:
        """The backend ``name``; skips (fails under CI) where PostgreSQL or SeaweedFS is missing."""
        if name != "postgresql-s3":
            return cls(name)
        need(
            postgres_reachable(),
            f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string(hide_password=True)} "
            "(set LAMINA_TEST_POSTGRES_URL to a server where databases may be created)",
        )
        server: S3Server = request.getfixturevalue("s3_server")
        return cls(name, server)

    @property
    def remote(self) -> bool:
        """True for PostgreSQL + S3."""
        return self.s3 is not None

    # ---------------------------------------------------------------- locations

    def env(self, label: str) -> dict[str, str]:
        """The settings of a fresh archive location (``label`` names it in the bucket)."""
        if self.s3 is None:
            return {}
        return {
            "LAMINA_DATABASE_URL": self.database_url(),
            "LAMINA_BLOB_URL": self.store_url(label),
            **self.s3.env(),
        }

    def database_url(self, template: str | None = None) -> str:
        """The URL of a new, empty PostgreSQL database (a copy of ``template``'s, when given)."""
        name = f"lamina_test_{uuid.uuid4().hex[:12]}"
        if self._admin is None:
            self._admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        clause = f' TEMPLATE "{make_url(template).database}"' if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        self._databases.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def store_url(self, label: str) -> str:
        """``s3://BUCKET/<prefix>`` of a new, empty prefix in the test bucket."""
        assert self.s3 is not None, "the sqlite-folder backend keeps its blobs in the home"
        prefix = f"t/{re.sub(r'[^A-Za-z0-9._-]+', '-', label)[:60]}-{uuid.uuid4().hex[:8]}"
        return f"s3://{BUCKET}/{prefix}"

    def replica_url(self, home: Path, label: str) -> str:
        """Where a second blob store (a replica) of the archive of ``home`` goes: a folder in the
        home, or a prefix of its own in the bucket."""
        return self.store_url(f"{label}-replica") if self.remote else f"file://{home / 'replica'}"

    def copy(self, env: dict[str, str], home: Path, dest: Path) -> dict[str, str]:
        """Copy the archive at (``env``, ``home``) to the home ``dest``: the folder, and the
        database and every S3 prefix ``env`` names; returns the copy's settings. The archive must
        be closed (PostgreSQL copies a database nobody is connected to)."""
        shutil.copytree(home, dest)
        copied = dict(env)
        for key, value in env.items():
            if key == "LAMINA_DATABASE_URL" and value.startswith("postgresql"):
                copied[key] = self.database_url(template=value)
            elif key in _STORE_KEYS and value.startswith("s3://"):
                copied[key] = self._copy_prefix(value)
            elif key in _STORE_KEYS and value.startswith(f"file://{home}/"):
                copied[key] = value.replace(f"file://{home}/", f"file://{dest}/", 1)
        return copied

    def _store(self, url: str) -> S3BlobStore:
        assert self.s3 is not None
        return S3BlobStore.from_url(url, self.s3.env(), check=False)

    def _copy_prefix(self, url: str) -> str:
        source = self._store(url)
        copy = self.store_url(source.prefix.rstrip("/").rsplit("/", 1)[-1][:40])
        target = self._store(copy)
        for key in _keys(source):
            target.client.copy_object(
                Bucket=BUCKET,
                Key=target.prefix + key[len(source.prefix) :],
                CopySource={"Bucket": BUCKET, "Key": key},
            )
        return copy

    def close(self) -> None:
        """Drop the databases this backend made. The prefixes are left in the bucket: SeaweedFS
        would not give their space back before a vacuum anyway, and its data folder goes with
        the session's temporary files."""
        if self._admin is not None:
            with self._admin.connect() as conn:
                for name in self._databases:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            self._admin.dispose()
            self._admin = None
        self._databases.clear()


def _keys(store: S3BlobStore) -> list[str]:
    paginator = store.client.get_paginator("list_objects_v2")
    return [
        str(item["Key"])
        for page in paginator.paginate(Bucket=store.bucket, Prefix=store.prefix)
        for item in page.get("Contents", [])
    ]
