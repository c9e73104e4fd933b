"""Alembic environment: lamina runs the migrations itself (``Catalog.migrate``), on the connection
and inside the transaction it hands over in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from lamina.archive.catalog.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
