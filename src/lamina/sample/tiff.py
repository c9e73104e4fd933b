"""Generic tiled pyramidal TIFF sample, as written by general-purpose tools.

Written with tifffile, the way libvips or tifffile-based converters write
pyramids: level 0 in the first IFD, each further level (downsampled by 2
until the short side is at most one tile) in the next IFD with
NewSubfileType = 1 (reduced image), 256x256 tiles, XResolution/YResolution in
pixels per centimetre (ResolutionUnit = CENTIMETER, 0.25 um/px at level 0 and
scaled with each level), no vendor metadata. JPEG tiles are self-contained
YCbCr 4:2:0 streams (PhotometricInterpretation YCbCr, no JPEGTables): that
is what tifffile writes. With ``compression="deflate"`` the tiles are
zlib-compressed RGB with the horizontal predictor. OpenSlide opens the file
with its ``generic-tiff`` driver.
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from lamina.sample.content import SlideContent, pyramid

__all__ = ["MPP", "TILE", "write_tiled_tiff"]

TILE = 256
MPP = 0.25
QUALITY = 85


def write_tiled_tiff(path: Path, slide: SlideContent, compression: str = "jpeg") -> Path:
    """Write a tiled pyramidal TIFF.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.tiff``).
    slide : SlideContent
        Tissue pixels (the label and macro are not stored: a generic TIFF has
        no place for them).
    compression : str, optional
        ``"jpeg"`` (default, quality 85) or ``"deflate"``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        For another compression.
    """
    if compression == "jpeg":
        options: dict[str, object] = {
            "compression": "jpeg",
            "compressionargs": {"level": QUALITY},
            "subsampling": (2, 2),
        }
    elif compression == "deflate":
        options = {"compression": "zlib", "predictor": True}
    else:
        raise ValueError(f"unknown compression {compression!r}; use 'jpeg' or 'deflate'")
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(pyramid(slide.pixels, 2, TILE)):
            scale = slide.pixels.shape[1] / level.shape[1]
            per_cm = 1e4 / (MPP * scale)
            tif.write(
                level,
                photometric="rgb",
                tile=(TILE, TILE),
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if index else 0,
                software=False,
                datetime="2026:11:28 09:14:02" if index == 0 else None,
                metadata=None,
                maxworkers=2,
                **options,  # type: ignore[arg-type]
            )
    return path
