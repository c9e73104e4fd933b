"""Identifiers lamina makes: DICOM UIDs for the objects it creates, and short slide ids."""

from __future__ import annotations

import hashlib
import uuid


def new_uid() -> str:
    """A DICOM UID under the 2.25 arc (ISO/IEC 9834-8, from a random UUID): no registry needed."""
    return f"2.25.{uuid.uuid4().int}"


def slide_id(series_instance_uid: str) -> str:
    """The short, stable id of a slide in lamina: derived from its series, so it never changes."""
    return hashlib.sha256(series_instance_uid.encode("ascii")).hexdigest()[:12]
