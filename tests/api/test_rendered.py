"""WADO-RS rendered resources and thumbnails (``lamina.api.dicomweb.rendered``): the parsing of
their parameters, their limits, and the images a running server gives, on both backends."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from starlette.requests import Request

from lamina.api.dicomweb.frames import read_frames
from lamina.api.dicomweb.index import InstanceIndex
from lamina.api.dicomweb.rendered import (
    JPEG,
    PNG,
    Renderer,
    Viewport,
    choose_media_type,
    declared_size,
    fit,
    parse_quality,
    parse_viewport,
)
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotAcceptableError, PayloadTooLargeError, RequestError
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from tests.api.conftest import ServedArchive, multipart_parts
from tests.signin import signed

# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "viewport"),
    [
        ("256,256", Viewport(256, 256)),
        (",128", Viewport(None, 128)),
        ("64,", Viewport(64, None)),
        ("100,50,10,20,300,150", Viewport(100, 50, (10, 20, 300, 150))),
    ],
)
def test_viewports(text: str, viewport: Viewport) -> None:
    assert parse_viewport(text) == viewport


@pytest.mark.parametrize("text", ["0,10", "a,b", "1,2,3", ",", "10,10,-1,0,5,5", "10,10,0,0,0,5"])
def test_bad_viewports_name_the_parameter(text: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse_viewport(text)
    assert raised.value.parameter == "viewport"
    assert repr(text) in str(raised.value)


def test_quality() -> None:
    assert parse_quality(None) is None and parse_quality(" ") is None
    assert parse_quality("90") == 90
    for text in ("0", "101", "high"):
        with pytest.raises(RequestError, match="quality"):
            parse_quality(text)


def test_fit_scales_down_never_up() -> None:
    assert fit(1000, 500, Viewport(100, 100)) == (100, 50)
    assert fit(1000, 500, Viewport(None, 100)) == (200, 100)
    assert fit(50, 40, Viewport(100, 100)) == (50, 40)
    assert fit(50, 40, None) == (50, 40)
    assert fit(10_000, 1, Viewport(10, 10)) == (10, 1)  # never below one pixel


def test_declared_size_is_read_before_decoding() -> None:
    pixels = np.zeros((23, 37, 3), np.uint8)
    assert declared_size(bytes(imagecodecs.jpeg8_encode(pixels)), "1.2.840.10008.1.2.4.50") == (37, 23)
    j2k = bytes(imagecodecs.jpeg2k_encode(pixels, codecformat="J2K", level=0))
    assert declared_size(j2k, "1.2.840.10008.1.2.4.90") == (37, 23)
    assert declared_size(b"\x00" * 64, "1.2.840.10008.1.2.4.50") is None


def _request(query: bytes = b"", accept: str | None = None) -> Request:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query, "headers": headers})


def test_media_type_from_the_query_or_the_accept_header() -> None:
    assert choose_media_type(_request()) == JPEG
    assert choose_media_type(_request(accept="image/png")) == PNG
    assert choose_media_type(_request(b"accept=image/png", accept="image/jpeg")) == PNG
    assert choose_media_type(_request(accept="image/png;q=0.5, image/jpeg")) == JPEG
    assert choose_media_type(_request(accept="image/*")) == JPEG
    with pytest.raises(NotAcceptableError, match="image/jpeg or image/png"):
        choose_media_type(_request(accept="image/gif"))


def _rows(served: ServedArchive, index: int = 0) -> list[InstanceRow]:
    return served.archive.catalog.instances(served.slide_ids[index])


def test_the_thumbnail_source_is_the_smallest_image_that_fills_the_viewport(
    served_archive: ServedArchive,
) -> None:
    rows = _rows(served_archive)
    pictures = [row for row in rows if row.flavor in ("VOLUME", "THUMBNAIL")]
    widths = sorted(row.total_pixel_matrix_columns for row in pictures)
    viewport = Viewport(widths[1] - 1, None)  # only the smallest image is narrower

    chosen = Renderer().thumbnail_source(rows, viewport)

    wide_enough = [row for row in pictures if row.total_pixel_matrix_columns > widths[1] - 1]
    assert chosen == min(wide_enough, key=lambda r: r.total_pixel_matrix_columns * r.total_pixel_matrix_rows)
    # nothing within the limit: 413, saying so
    with pytest.raises(PayloadTooLargeError, match="10-pixel rendering limit"):
        Renderer(max_pixels=10).thumbnail_source(rows, Viewport(64, 64))


# -- a running server ----------------------------------------------------------------------------


def _url(served: ServedArchive, row: InstanceRow) -> str:
    return (
        f"{served.base_url}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
        f"/instances/{row.sop_instance_uid}"
    )


def _level0(served: ServedArchive) -> InstanceRow:
    return next(row for row in _rows(served) if row.flavor == "VOLUME" and row.level == 0)


def _stored(served: ServedArchive, row: InstanceRow, number: int) -> bytes:
    found = InstanceIndex(served.archive).get(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    )
    return read_frames(found, [number], served.archive)[0]


def _decoded(row: InstanceRow, data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    return codec.decode(
        data, FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    )


def test_a_stored_jpeg_frame_is_sent_as_stored(served_archive: ServedArchive) -> None:
    row = _level0(served_archive)
    assert row.transfer_syntax_uid == TransferSyntax.JPEG_BASELINE_8BIT

    answer = signed.get(f"{_url(served_archive, row)}/frames/3/rendered", headers={"Accept": "image/jpeg"})

    assert answer.status_code == 200
    assert answer.headers["content-type"] == JPEG
    assert answer.headers["cache-control"] == "private, max-age=86400, immutable"
    assert answer.content == _stored(served_archive, row, 3)


def test_a_frame_as_png_has_the_decoded_pixels(served_archive: ServedArchive) -> None:
    row = _level0(served_archive)
    answer = signed.get(f"{_url(served_archive, row)}/frames/3/rendered", params={"accept": PNG})
    assert answer.headers["content-type"] == PNG
    assert np.array_equal(
        imagecodecs.png_decode(answer.content), _decoded(row, _stored(served_archive, row, 3))
    )


def test_a_region_of_an_instance(served_archive: ServedArchive) -> None:
    row = _level0(served_archive)
    # a region inside the first tile, not scaled: its pixels exactly
    answer = signed.get(
        f"{_url(served_archive, row)}/rendered", params={"viewport": "100,60,10,20,100,60", "accept": PNG}
    )
    assert answer.status_code == 200, answer.text
    tile = _decoded(row, _stored(served_archive, row, 1))
    assert np.array_equal(imagecodecs.png_decode(answer.content), tile[20:80, 10:110])
    # the whole level scaled into 64 x 64, its aspect kept
    scaled = imagecodecs.jpeg8_decode(
        signed.get(f"{_url(served_archive, row)}/rendered?viewport=64,64").content
    )
    expected = fit(row.total_pixel_matrix_columns, row.total_pixel_matrix_rows, Viewport(64, 64))
    assert (scaled.shape[1], scaled.shape[0]) == expected


def test_thumbnails_and_rendered_series(served_archive: ServedArchive) -> None:
    row = _level0(served_archive)
    series = f"{served_archive.base_url}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
    thumbnail = imagecodecs.jpeg8_decode(signed.get(f"{series}/thumbnail").content)
    assert max(thumbnail.shape[:2]) == 256
    study = signed.get(f"{served_archive.base_url}/studies/{row.study_instance_uid}/thumbnail?viewport=32,32")
    assert max(imagecodecs.jpeg8_decode(study.content).shape[:2]) == 32
    rendered = signed.get(f"{series}/rendered", params={"viewport": "48,48", "accept": PNG})
    parts = multipart_parts(rendered)
    pictures = [r for r in _rows(served_archive) if r.number_of_frames > 0 and r.rows > 0]
    assert [part for part, _ in parts] == [PNG] * len(pictures)
    assert all(max(imagecodecs.png_decode(data).shape[:2]) <= 48 for _, data in parts)
    assert rendered.headers["cache-control"] == "private, max-age=300"


@pytest.mark.parametrize(
    ("suffix", "params", "status", "words"),
    [
        ("/frames/1,2/rendered", {}, 400, "one frame"),
        ("/frames/999/rendered", {}, 404, "frame 999 does not exist"),
        ("/rendered", {"viewport": "10,10,100000,0,5,5"}, 400, "outside"),
        ("/rendered", {"quality": "0"}, 400, "quality"),
        ("/rendered", {"accept": "image/gif"}, 406, "image/jpeg or image/png"),
    ],
)
def test_bad_rendering_requests(
    served_archive: ServedArchive, suffix: str, params: dict[str, str], status: int, words: str
) -> None:
    answer = signed.get(f"{_url(served_archive, _level0(served_archive))}{suffix}", params=params)
    assert answer.status_code == status
    assert words in answer.json()["detail"]
