"""3DHISTECH TIFF sample, laid out like a TIFF exported by 3DHISTECH's slide software.

The layout is the one opentile's 3DHistech reader accepts (``opentile.formats.histech``):

* one page per level, level 0 first (NewSubfileType 0), then the levels downsampled by 2
  until the short side is at most one tile (NewSubfileType 1), so that tifffile sees one
  pyramid series;
* 256x256 JPEG tiles with shared JPEGTables, coded as the description's ``JPEG/RGB`` says:
  R, G, B without colour transform or subsampling, PhotometricInterpretation RGB. As in
  Aperio's "JPEG/RGB", which this format imitates, the component ids are 0, 1, 2 and there is
  no Adobe marker, so a reader must honour the TIFF photometric to get the right colours;
* every page's ImageDescription is the Aperio-like ``header|key = value|...`` text without a
  vendor prefix: ``WxH (256x256) JPEG/RGB Q=80|Date = DD/MM/YYYY|Time = ...|MPP = ...|
  3dh_PixelSizeX = ...|3dh_PixelSizeY = ...|3dh_Filter = Default|3dh_Profile = Current Profile``
  with the level's own pixel size in µm (opentile reads ``MPP`` from each level's page and
  recognises the format by ``3dh_PixelSizeX`` in page 0's);
* no label, macro or resolution tags: opentile reads none from these files.

No real 3DHISTECH TIFF was available to copy; the description follows the example in opentile's
3DHistech metadata parser, and the JPEG coding the ``JPEG/RGB`` it announces.
"""

from __future__ import annotations

from pathlib import Path

from lamina.sample._jpeg import encode_tiles
from lamina.sample._tiff import ASCII, LONG, UNDEFINED, Page, TagValue, write_tiff
from lamina.sample.content import SlideContent, pyramid

__all__ = ["MPP", "TILE", "write_histech_tiff"]

TILE = 256
MPP = 0.2430
QUALITY = 80
_JPEG, _RGB = 7, 2
_COMPONENT_IDS = b"\x00\x01\x02"
_DATE, _TIME = "28/11/2026", "09:14:02"


def description(width: int, height: int, mpp: float) -> str:
    """The ImageDescription of a level of ``width`` x ``height`` pixels of ``mpp`` µm.

    Parameters
    ----------
    width, height : int
        Level size in pixels.
    mpp : float
        Pixel size of the level in micrometres.

    Returns
    -------
    str
        The ``header|key = value|...`` text.
    """
    values = {
        "Date": _DATE,
        "Time": _TIME,
        "MPP": f"{mpp:.4f}",
        "3dh_PixelSizeX": f"{mpp:.4f}",
        "3dh_PixelSizeY": f"{mpp:.4f}",
        "3dh_Filter": "Default",
        "3dh_Profile": "Current Profile",
    }
    header = f"{width}x{height} ({TILE}x{TILE}) JPEG/RGB Q={QUALITY}"
    return "|".join([header, *(f"{key} = {value}" for key, value in values.items())])


def write_histech_tiff(path: Path, slide: SlideContent) -> Path:
    """Write a 3DHISTECH TIFF file.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.tiff``).
    slide : SlideContent
        Tissue pixels (the label and macro are not stored: the format has no place for them).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    pages = []
    for index, level in enumerate(pyramid(slide.pixels, 2, TILE)):
        height, width = level.shape[:2]
        tables, tiles = encode_tiles(level, TILE, QUALITY, coding="RGB", component_ids=_COMPONENT_IDS)
        tags: dict[int, tuple[int, TagValue]] = {
            254: (LONG, [1 if index else 0]),
            270: (ASCII, description(width, height, MPP * 2**index)),
            347: (UNDEFINED, tables),
        }
        pages.append(Page(width, height, tiles, _JPEG, _RGB, tile=TILE, tags=tags))
    write_tiff(path, pages)
    return path
