"""The catalog's migrations (Alembic), one set for SQLite and PostgreSQL.

lamina applies them itself when it opens a catalog (:meth:`Catalog.migrate`), so there is no
``alembic.ini`` to keep beside a deployment. A new schema change is a new file in ``versions/``
(and a new :data:`HEAD`); migrations only go forward: an archive is never downgraded in place.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, inspect, text

from lamina.errors import ConfigurationError

#: the newest revision in versions/
HEAD = "0014"
_HERE = Path(__file__).parent


def _config(conn: Connection) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = conn
    return config


def current(conn: Connection) -> str | None:
    """The catalog's revision: Alembic's, "0001" for a catalog of the first releases (schema_info
    version 2), or None for an empty database."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if found is not None:
            return str(found)
    if "schema_info" in tables:
        version = conn.execute(text("SELECT version FROM schema_info")).scalar()
        if version != 2:
            raise ConfigurationError(
                f"the catalog has schema version {version} of a development release; export its "
                "slides with that release and ingest them into a new LAMINA_HOME"
            )
        return "0001"
    return None


def create_queue_schema(conn: Connection) -> None:
    """The job queue's tables and functions (Procrastinate's schema) on PostgreSQL."""
    from procrastinate.schema import SchemaManager

    # the driver reads % as a placeholder even without parameters
    conn.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def create(conn: Connection) -> None:
    """An empty database gets the tables of :mod:`tables` and is stamped at :data:`HEAD` directly,
    as the migrations would leave it (the test suite checks that they agree) but in one step."""
    from lamina.archive.catalog.tables import metadata

    metadata.create_all(conn)
    if conn.dialect.name == "postgresql":
        create_queue_schema(conn)
    conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD})


def upgrade(conn: Connection, *, shortcut: bool = True) -> None:
    """Migrate the catalog on ``conn`` to :data:`HEAD` inside the caller's transaction (an empty
    one through :func:`create` unless ``shortcut`` is off)."""
    found = current(conn)
    if found == HEAD:
        return
    if found is None and shortcut:
        create(conn)
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _config(conn)
    script = ScriptDirectory.from_config(config)  # type: ignore[arg-type]
    known = {revision.revision for revision in script.walk_revisions()}
    if found is not None and found not in known:
        raise ConfigurationError(
            f"the catalog is at migration {found}, newer than this lamina (which knows up to "
            f"{HEAD}); upgrade lamina"
        )
    if found == "0001" and "alembic_version" not in set(inspect(conn).get_table_names()):
        command.stamp(config, "0001")  # type: ignore[arg-type]
    command.upgrade(config, "head")  # type: ignore[arg-type]
