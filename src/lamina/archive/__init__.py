"""The archive: blob store, catalog, ingest transaction, fixity and audit."""
