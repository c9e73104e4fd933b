"""Whole instances (``lamina.api.dicomweb.retrieve``): how an answer is planned from the Accept
header, and the windows frames are transcoded in. The answers themselves, checked by dciodvfy and
pydicom, are in test_wado.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lamina.api.dicomweb.accept import parse_accept
from lamina.api.dicomweb.frames import decoded_frame_bytes
from lamina.api.dicomweb.retrieve import _WINDOW, _windows, pixel_bytes, plan_answer
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotAcceptableError
from tests.api.conftest import ServedArchive

EVRLE = "1.2.840.10008.1.2.1"
GiB = 1 << 30


def _rows(served: ServedArchive) -> list[InstanceRow]:
    return served.archive.catalog.instances(served.slide_ids[0])


def _targets(accept: str, rows: list[InstanceRow], limit: int = GiB) -> list[str | None]:
    return [plan.target for plan in plan_answer(parse_accept(accept), rows, limit)]


def test_the_stored_syntax_or_any(served_archive: ServedArchive) -> None:
    rows = _rows(served_archive)
    assert _targets('multipart/related; type="application/dicom"; transfer-syntax=*', rows) == [None] * len(
        rows
    )
    jpeg = [row for row in rows if row.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"]
    assert jpeg
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert _targets(accept, jpeg) == [None] * len(jpeg)
    with pytest.raises(NotAcceptableError, match=r"stored as .*not 1\.2\.840\.10008\.1\.2\.4\.80"):
        _targets('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80', rows)


def test_explicit_vr_little_endian_within_the_limit(served_archive: ServedArchive) -> None:
    rows = _rows(served_archive)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}'
    assert _targets(accept, rows) == [None if row.transfer_syntax_uid == EVRLE else EVRLE for row in rows]
    total = sum(pixel_bytes(row) for row in rows if row.transfer_syntax_uid != EVRLE)
    with pytest.raises(
        NotAcceptableError, match=rf"{total} bytes of pixels, over the 1000-byte transcoding limit"
    ):
        _targets(accept, rows, limit=1000)
    # a later range the server can produce is taken instead of a 406
    assert _targets(
        f'{accept}, multipart/related; type="application/dicom"; transfer-syntax=*', rows, 1000
    ) == [None] * len(rows)
    unknown = dataclasses.replace(rows[0], transfer_syntax_uid="1.2.840.10008.1.2.4.70")
    with pytest.raises(NotAcceptableError, match="cannot transcode"):
        _targets(accept, [unknown])


def test_no_transfer_syntax_follows_ps3_18(served_archive: ServedArchive) -> None:
    rows = _rows(served_archive)
    lossy = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91"}
    expected = [None if row.transfer_syntax_uid in lossy | {EVRLE} else EVRLE for row in rows]
    assert EVRLE in expected and None in expected  # the sample has both kinds
    for accept in ('multipart/related; type="application/dicom"', "*/*", "multipart/related", ""):
        assert _targets(accept, rows) == expected, accept
    # what the limit keeps from being transcoded comes as stored
    assert _targets("*/*", rows, limit=10) == [None] * len(rows)


def test_other_media_types_are_refused(served_archive: ServedArchive) -> None:
    rows = _rows(served_archive)
    for accept in ("application/json", 'multipart/related; type="application/dicom"; q=0'):
        with pytest.raises(NotAcceptableError, match='type="application/dicom"'):
            _targets(accept, rows)


def test_windows_cover_every_frame_once_and_stay_small(served_archive: ServedArchive) -> None:
    row = max(_rows(served_archive), key=lambda r: r.number_of_frames)
    offsets = np.frombuffer(row.frame_offsets, "<u8").tolist()
    lengths = np.frombuffer(row.frame_lengths, "<u4").tolist()

    windows = list(_windows(row))

    covered = [(start + at, size) for start, _, spans in windows for at, size in spans]
    assert covered == list(zip(offsets, lengths, strict=True))
    for _, length, spans in windows:
        assert all(at + size <= length for at, size in spans)
        assert length <= _WINDOW or len(spans) == 1
        assert len(spans) * decoded_frame_bytes(row) <= _WINDOW or len(spans) == 1
    assert len(windows) >= row.number_of_frames * decoded_frame_bytes(row) // _WINDOW
