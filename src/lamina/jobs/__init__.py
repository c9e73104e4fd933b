"""Background jobs: ingest from watched folders and STOW-RS, fixity, repair.

The scaled deployment queues them with Procrastinate in the catalog's PostgreSQL database (see
docs/decisions/0005-job-queue.md), so that API processes and ``lamina worker`` processes on any
host share nothing but the catalog and the blob store. The embedded SQLite catalog runs the same
task bodies in-process (:mod:`lamina.jobs.queue`).
"""
