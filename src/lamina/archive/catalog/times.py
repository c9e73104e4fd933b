"""Datetimes read back from the catalog, made aware: SQLite hands back naive ones (lamina writes
every datetime in UTC), PostgreSQL aware ones in the session's zone."""

from __future__ import annotations

import datetime as dt

__all__ = ["utc", "utc_or_none"]


def utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive datetime is taken as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utc_or_none(value: dt.datetime | None) -> dt.datetime | None:
    """:func:`utc`, None kept."""
    return None if value is None else utc(value)
