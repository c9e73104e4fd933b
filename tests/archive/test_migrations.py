"""The catalog's migrations: the chain from an empty database, the one-step creation of a new
catalog and the tables the code uses are the same schema, on SQLite and on PostgreSQL; a catalog of
the first releases is upgraded in place with its slides; concurrent openers migrate once."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from lamina.archive.catalog import Catalog, migrations, search
from lamina.archive.catalog.search import Criterion, Single
from lamina.archive.catalog.tables import metadata
from lamina.errors import ConfigurationError

OTHERS = ("alembic_version",)


def _url(database_url: str | None, tmp_path: Path) -> str:
    return database_url or f"sqlite:///{tmp_path / 'catalog.sqlite'}"


def _ours(name: str | None, type_: str, *_: object) -> bool:
    """Leave out the job queue's own objects and Alembic's version table."""
    return not (name or "").startswith("procrastinate") and name not in OTHERS


def _compared(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Autogenerate ignores ``Index.ddl_if``: the indexes of one database only (the studies'
    order) are checked by :func:`_dialect_indexes` instead."""
    return not (type_ == "index" and name in {*DIALECT_INDEXES.values(), *TENANT_INDEXES.values()})


#: the index of QIDO's study order on each database (see tables.py)
DIALECT_INDEXES = {"sqlite": "ix_studies_date", "postgresql": "ix_studies_date_pg"}
#: the same order within a lab (a lab's worklist)
TENANT_INDEXES = {"sqlite": "ix_studies_tenant_date", "postgresql": "ix_studies_tenant_date_pg"}


def _dialect_indexes(url: str) -> None:
    engine = create_engine(url)
    try:
        names = {index["name"] for index in inspect(engine).get_indexes("studies")}
        for table in (DIALECT_INDEXES, TENANT_INDEXES):
            wanted = table[engine.dialect.name]
            assert wanted in names and not (set(table.values()) - {wanted}) & names, names
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                definition = conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_studies_date_pg'")
                ).scalar_one()
            assert "study_date NULLS FIRST, study_time NULLS FIRST, study_instance_uid)" in definition
            assert definition.endswith("INCLUDE (modalities)"), definition
            with engine.connect() as conn:
                definition = conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_studies_tenant_date_pg'")
                ).scalar_one()
            assert (
                "(tenant, study_date NULLS FIRST, study_time NULLS FIRST, study_instance_uid)" in definition
            )
            assert definition.endswith("INCLUDE (modalities)"), definition
        else:
            columns = [index["column_names"] for index in inspect(engine).get_indexes("studies")]
            assert ["study_date", "study_time", "study_instance_uid", "modalities"] in columns, columns
            assert ["tenant", "study_date", "study_time", "study_instance_uid", "modalities"] in columns
    finally:
        engine.dispose()


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    opts = {"compare_type": True, "include_name": _ours, "include_object": _compared}
    try:
        with engine.connect() as conn:
            found = list(compare_metadata(MigrationContext.configure(conn, opts=opts), metadata))
    finally:
        engine.dispose()
    _dialect_indexes(url)
    return found


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migration_chain_builds_the_schema_of_the_code(database_url: str | None, tmp_path: Path) -> None:
    url = _url(database_url, tmp_path)
    engine = create_engine(url)
    with engine.begin() as conn:
        migrations.upgrade(conn, shortcut=False)
    with engine.connect() as conn:
        assert migrations.current(conn) == migrations.HEAD
    engine.dispose()
    assert _differences(url) == []
    tables = _tables(url)
    assert "schema_info" not in tables
    if url.startswith("postgresql"):
        assert {"procrastinate_jobs", "procrastinate_workers"} <= tables


def test_a_new_catalog_is_created_at_head_with_the_same_schema(
    database_url: str | None, tmp_path: Path
) -> None:
    url = _url(database_url, tmp_path)
    Catalog.open(url).close()
    assert _differences(url) == []
    engine = create_engine(url)
    with engine.connect() as conn:
        assert migrations.current(conn) == migrations.HEAD
    engine.dispose()


def _first_release_catalog(url: str) -> None:
    """A catalog as the first releases left it: revision 0001, schema_info only, one slide."""
    from alembic import command

    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn), "0001")  # type: ignore[arg-type]
        conn.execute(text("DROP TABLE alembic_version"))
        now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        conn.execute(
            text(
                "INSERT INTO studies (study_instance_uid, accession_number, created_at) "
                "VALUES ('2.25.1', 'ACC1', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO slides (id, series_instance_uid, study_instance_uid, container_id, format, "
                "source_path, source_blake3, source_head, source_bytes, levels, instances, bytes, "
                "identified, lossy, width, height, created_at) VALUES ('S1', '2.25.2', '2.25.1', "
                "'BC1', 'aperio_svs', '/scans/a.svs', 'b3', 'head', 10, 1, 1, 10, :yes, :yes, 5, 5, :now)"
            ),
            {"now": now, "yes": True},
        )
        conn.execute(
            text(
                "INSERT INTO series (series_instance_uid, study_instance_uid, modality, created_at) "
                "VALUES ('2.25.2', '2.25.1', 'SM', :now), ('2.25.3', '2.25.1', 'ANN', :now), "
                "('2.25.4', '2.25.1', 'SM', :now)"
            ),
            {"now": now},
        )
    engine.dispose()


def test_a_catalog_of_the_first_releases_is_upgraded_with_its_slides(
    database_url: str | None, tmp_path: Path
) -> None:
    url = _url(database_url, tmp_path)
    _first_release_catalog(url)
    assert "schema_info" in _tables(url)
    catalog = Catalog.open(url)
    try:
        slide = catalog.slide("S1")
        assert slide is not None
        assert (slide.container_id, slide.accession_number, slide.tenant) == ("BC1", "ACC1", "")
        assert slide.retain_until is None
        # the study's modalities, gathered from its series by migration 0007, are searched
        with catalog.engine.connect() as conn:
            assert conn.execute(text("SELECT modalities FROM studies")).scalar_one() == "\\ANN\\SM\\"
        for modality, hits in (("ANN", 1), ("SM", 1), ("SR", 0)):
            criteria = [Criterion("ModalitiesInStudy", Single(modality))]
            assert len(search.find_studies(catalog.engine, criteria, 10, 0).hits) == hits, modality
    finally:
        catalog.close()
    assert _differences(url) == []
    assert "schema_info" not in _tables(url)


def test_a_catalog_newer_than_the_code_is_refused(database_url: str | None, tmp_path: Path) -> None:
    url = _url(database_url, tmp_path)
    Catalog.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ConfigurationError, match=r"9999.*upgrade lamina"):
        Catalog.open(url)


def test_concurrent_openers_migrate_once(database_url: str | None, tmp_path: Path) -> None:
    url = _url(database_url, tmp_path)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_catalog() -> None:
        try:
            start.wait()
            Catalog.open(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_catalog) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _differences(url) == []
