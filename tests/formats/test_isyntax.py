"""Philips iSyntax: no valid file can be written here and none small is public (see
formats/isyntax.py), so what is tested is what a lab meets with a bad copy: a damaged or truncated
header refused in one line naming the file and libisyntax's words, nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from tests.support import ingest_path

pytestmark = pytest.mark.backend_independent

HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n<DataObject ObjectType="DPUfsImport">\n'


@pytest.mark.parametrize(
    "content",
    [HEADER + b"<Attribute Name=", HEADER + bytes(range(256)) * 8, b""],
    ids=["cut-in-the-header", "garbage-after-the-header", "empty"],
)
def test_a_bad_isyntax_is_refused_in_one_line(
    archive: Archive, ingestor: Ingestor, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "scan.isyntax"
    path.write_bytes(content)
    # Act
    result = ingest_path(ingestor, path)
    # Assert
    assert result.status == "failed"
    assert result.format == "philips_isyntax"
    reason = result.reason or ""
    assert "the iSyntax header cannot be read: libisyntax says" in reason
    assert "copy it again from the scanner" in reason and "\n" not in reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
