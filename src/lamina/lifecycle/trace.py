"""The thumbnail an expired slide keeps: the whole slide, its longest side ``longest_side``
pixels (1,024 by default), as a JPEG, drawn from the smallest pyramid level that still covers
that size (or the largest one under the pixel bound).

It reads the frames of that one level from the blob store, decodes them with lamina's codecs,
puts them in place and scales the picture down: the work is bounded by the level chosen, never
by the slide's full resolution.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import InstanceRow
from lamina.errors import NotFoundError
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax

__all__ = ["MAX_SOURCE_PIXELS", "Thumbnail", "render"]

#: The largest level decoded for a thumbnail (pixels): about 200 MB of RGB at most.
MAX_SOURCE_PIXELS = 64_000_000
_PICTURES = ("VOLUME", "THUMBNAIL")
_QUALITY = 85


class Thumbnail:
    """A JPEG and its size."""

    def __init__(self, jpeg: bytes, width: int, height: int) -> None:
        self.jpeg, self.width, self.height = jpeg, width, height


def _source(rows: Sequence[InstanceRow], longest_side: int) -> InstanceRow:
    pictures = [
        row
        for row in rows
        if row.flavor in _PICTURES
        and row.total_pixel_matrix_columns * row.total_pixel_matrix_rows <= MAX_SOURCE_PIXELS
    ]
    if not pictures:
        raise NotFoundError("the slide has no pyramid level small enough to draw its thumbnail from")
    pictures.sort(key=lambda row: row.total_pixel_matrix_columns * row.total_pixel_matrix_rows)
    for row in pictures:
        if max(row.total_pixel_matrix_columns, row.total_pixel_matrix_rows) >= longest_side:
            return row
    return pictures[-1]


def _decode(row: InstanceRow, data: bytes) -> npt.NDArray[np.uint8]:
    if row.transfer_syntax_uid == TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value:
        expected = row.rows * row.columns * row.samples_per_pixel
        pixels = np.frombuffer(data, np.uint8, expected).reshape(row.rows, row.columns, row.samples_per_pixel)
        if row.photometric_interpretation.startswith("YBR_FULL"):
            return np.asarray(Image.fromarray(pixels, "YCbCr").convert("RGB"))
        return pixels
    encoding = FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    return codec.decode(data, encoding)


def render(store: BlobStore, rows: Sequence[InstanceRow], longest_side: int = 1024) -> Thumbnail:
    """The slide's thumbnail from its instances ``rows``."""
    row = _source(rows, longest_side)
    width, height = row.total_pixel_matrix_columns, row.total_pixel_matrix_rows
    across, down = math.ceil(width / row.columns), math.ceil(height / row.rows)
    offsets = np.frombuffer(row.frame_offsets, "<u8").tolist()
    lengths = np.frombuffer(row.frame_lengths, "<u4").tolist()
    samples = row.samples_per_pixel
    canvas = np.full((height, width, samples), 255, dtype=np.uint8)
    for index in range(min(row.number_of_frames, across * down)):
        data = store.read_range(row.blob_sha256, int(offsets[index]), int(lengths[index]))
        pixels = _decode(row, data)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if row.photometric_interpretation == "MONOCHROME1":
            pixels = 255 - pixels
        top, left = (index // across) * row.rows, (index % across) * row.columns
        part = pixels[: height - top, : width - left, :samples]
        canvas[top : top + part.shape[0], left : left + part.shape[1]] = part
    picture = Image.fromarray(canvas[:, :, 0] if samples == 1 else canvas[:, :, :3])
    scale = min(1.0, longest_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.convert("RGB" if samples != 1 else "L").save(out, "JPEG", quality=_QUALITY, optimize=True)
    return Thumbnail(out.getvalue(), size[0], size[1])
