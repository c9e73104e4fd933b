"""Which images of a slide leave the site, and the overview with its label blanked.

A LABEL image is the photograph of the slide's label (names, barcodes) and an OVERVIEW shows the
whole glass, label included: neither is sent. With ``keep_overview`` the overview is sent with its
label area blanked. That image is small (Aperio's macro is 1280 x 431), so it alone is decoded,
blanked and encoded again.

Where the label is: on a 76 x 26 mm slide (ISO 8037-1) the label covers one end, at most a 26 x
26 mm square. The overview images lamina stores show it at the **left end** of the stored image
(Aperio's macro, and lamina's own samples: label left, tissue right; for an image taller than
wide, the top end). The blanked area is that end's 26/76 of the long side, plus a margin of 2 %:
wider than any label seen, at the cost of a little glass. A scanner that puts the label at the
other end would leak it, which is why the option is off by default.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from lamina.errors import CodecError
from lamina.formats import codec
from lamina.formats.source import FrameEncoding
from lamina.model.enums import ImageFlavorValues

#: The DeidentificationMethod value that says an overview's label area was blanked.
BLANKED = "Overview label area blanked"
#: The share of the long side blanked at the label's end (26 mm of 76, and a margin).
LABEL_SHARE = 26 / 76 + 0.02
#: The largest overview decoded, in pixels and in bytes: bounded work.
MAX_OVERVIEW_PIXELS = 16_000_000
MAX_OVERVIEW_BYTES = 64 << 20

_SENT = frozenset({ImageFlavorValues.VOLUME, ImageFlavorValues.THUMBNAIL})


def image_flavor(flavor: str, image_type: Sequence[str]) -> str:
    """The flavor that decides: LABEL or OVERVIEW if either the catalog or ImageType says so."""
    said = [str(flavor).upper(), *(str(value).upper() for value in image_type[2:3])]
    for kind in (ImageFlavorValues.LABEL, ImageFlavorValues.OVERVIEW):
        if kind in said:
            return str(kind)
    return said[0] if said[0] in _SENT or len(said) == 1 else said[1]


def is_sent(flavor: str, image_type: Sequence[str], keep_overview: bool = False) -> bool:
    """Whether an instance leaves the site: VOLUME and THUMBNAIL images are sent; LABEL never;
    OVERVIEW only with ``keep_overview`` (blanked). ``flavor`` is the catalog's ``instances.flavor``
    and ``image_type`` the instance's ImageType; either one naming LABEL or OVERVIEW decides."""
    kind = image_flavor(flavor, image_type)
    if kind == ImageFlavorValues.OVERVIEW:
        return keep_overview
    return kind in _SENT


def blank_overview(source: BinaryIO) -> tuple[Dataset, list[bytes]] | str:
    """The overview instance at ``source`` with its label area blanked: its dataset (Pixel Data
    removed; BurnedInAnnotation now NO) and its new frames; or the
    reason it cannot be done (too large, a syntax lamina does not encode, damaged frames)."""
    start = source.tell()
    size = source.seek(0, 2) - start
    source.seek(start)
    if size > MAX_OVERVIEW_BYTES:
        return (
            f"the overview holds {size} bytes, more than the {MAX_OVERVIEW_BYTES} decoded to blank its label"
        )
    ds = pydicom.dcmread(source)
    rows, columns = int(ds.Rows), int(ds.Columns)
    width = int(ds.get("TotalPixelMatrixColumns", columns))
    height = int(ds.get("TotalPixelMatrixRows", rows))
    if width * height > MAX_OVERVIEW_PIXELS:
        return f"the overview is {width}x{height} pixels, more than {MAX_OVERVIEW_PIXELS} to blank its label"
    syntax = ds.file_meta.TransferSyntaxUID
    encoding = FrameEncoding(syntax, ds.PhotometricInterpretation)
    samples = int(ds.SamplesPerPixel)
    lossy = ds.get("LossyImageCompression") == "01"
    # JPEG again when the pixels were already lossy (as lamina does for generated levels)
    target = codec.lossy_encoding(samples) if lossy else codec.lossless_encoding(samples)
    if not syntax.is_encapsulated:
        return f"TransferSyntaxUID (0002,0010): the overview's {syntax} frames are not blanked by lamina"
    frames_count = int(ds.get("NumberOfFrames", 1))
    across = math.ceil(width / columns)
    horizontal = width >= height
    limit = math.ceil((width if horizontal else height) * LABEL_SHARE)
    frames = []
    try:
        for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames_count)):
            pixels = np.array(codec.decode(frame, encoding, (columns, rows)))
            x0, y0 = (index % across) * columns, (index // across) * rows
            if horizontal and x0 < limit:
                pixels[:, : limit - x0] = 255
            elif not horizontal and y0 < limit:
                pixels[: limit - y0] = 255
            frames.append(codec.encode(pixels, target))
    except (CodecError, ValueError, struct.error) as exc:
        return f"the overview's frames cannot be re-encoded ({exc})"
    del ds.PixelData
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.file_meta.TransferSyntaxUID = target.transfer_syntax.value
    ds.PhotometricInterpretation = str(target.photometric_interpretation)
    # the label's place is still in the image (PS3.3 requires YES on an OVERVIEW), its text not
    ds.BurnedInAnnotation = "NO"
    return ds, frames
