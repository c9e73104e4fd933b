"""Leica SCN sample, laid out like a file from a Leica SCN400 (the layout OpenSlide's ``leica``
reader and slideio read).

Page 0's ImageDescription is an XML document in the namespace
``http://www.leica-microsystems.com/scn/2010/10/01``::

    <scn><collection sizeX sizeY (nm)><barcode>base64</barcode>
      <image>  the macro: its view is the whole collection (offset 0, the collection's size)
      <image>  the main image: its view at an offset in the collection, in nm
        <creationDate/> <device model version/> <pixels><dimension sizeX sizeY r ifd z c/>...
        <view sizeX sizeY offsetX offsetY/> <scanSettings> objective, numerical aperture,
        illumination source ``brightfield``

======  ================================  ==============================================
page    content                           encoding
======  ================================  ==============================================
0       macro (the collection, 1280x431)  tiled JPEG, the XML above as ImageDescription
1 ...   main image, levels downsampled    tiled JPEG (YCbCr 4:2:0, 512x512), shared
        by 4 until the short side is      JPEGTables, XResolution/YResolution in pixels
        at most one tile                  per cm (OpenSlide's mpp), ResolutionUnit cm
======  ================================  ==============================================

Every page is tiled (OpenSlide refuses a first page that is not). Real SCN400 files are
BigTIFF; this small sample is a classic TIFF, which every reader accepts. The main image's
offset is a multiple of its pixel size at every level, so that OpenSlide places it on whole
pixels of its canvas (``openslide.bounds-x`` / ``-y``).
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from lamina.sample._jpeg import encode_tiles
from lamina.sample._tiff import ASCII, LONG, RATIONAL, SHORT, UNDEFINED, Page, TagValue, write_tiff
from lamina.sample.content import SlideContent, pyramid
from lamina.sample.identity import Identity

__all__ = ["MODEL", "NM_PER_PIXEL", "OFFSET_NM", "TILE", "scn_xml", "write_scn"]

NAMESPACE = "http://www.leica-microsystems.com/scn/2010/10/01"
MODEL = "Leica SCN400"
VERSION = "1.5.1.10864 2012/05/10 13:29:07"
TILE = 512
QUALITY = 80
#: The main image's pixel size at 20x (0.5 µm).
NM_PER_PIXEL = 500
#: The main image's offset in the collection, in nm: a multiple of its pixel size at every level.
OFFSET_NM = (NM_PER_PIXEL * 2**16, NM_PER_PIXEL * 2**14)
#: The slide's glass, in nm (the collection): 76 mm wide.
SLIDE_WIDTH_NM = 76_000_000
CREATED = "2026-11-28T09:14:02.54Z"
_JPEG, _YCBCR = 7, 6


def scn_xml(
    barcode: str,
    macro: tuple[int, int],
    levels: list[tuple[int, int]],
    collection_nm: tuple[int, int],
) -> str:
    """The ImageDescription of page 0.

    Parameters
    ----------
    barcode : str
        The slide's barcode (written base64, as Leica does).
    macro : tuple of int
        The macro's ``(width, height)`` (page 0).
    levels : list of tuple of int
        The main image's levels' ``(width, height)``, largest first (pages 1, 2, ...).
    collection_nm : tuple of int
        The collection's (slide's) size in nm; the macro's view.

    Returns
    -------
    str
        The XML document.
    """
    width, height = levels[0]
    coded = base64.b64encode(barcode.encode("ascii")).decode("ascii")
    dimensions = "".join(
        f'<dimension sizeX="{w}" sizeY="{h}" r="{r}" ifd="{r + 1}" z="0" c="0"/>'
        for r, (w, h) in enumerate(levels)
    )

    def image(name: str, pixels: str, view: str, objective: str, aperture: str) -> str:
        return (
            f'<image name="{name}" uuid="urn:uuid:{name.lower()}">'
            f"<creationDate>{CREATED}</creationDate>"
            f'<device model="{MODEL};Leica SCN" version="{VERSION};1.5.1.10804"/>'
            f"<pixels sizeX={pixels}</pixels>"
            f'<view {view} spacingZ="0"/>'
            "<scanSettings>"
            f"<objectiveSettings><objective>{objective}</objective></objectiveSettings>"
            "<illuminationSettings>"
            f"<numericalAperture>{aperture}</numericalAperture>"
            "<illuminationSource>brightfield</illuminationSource>"
            "</illuminationSettings></scanSettings></image>"
        )

    macro_pixels = (
        f'"{macro[0]}" sizeY="{macro[1]}">'
        f'<dimension sizeX="{macro[0]}" sizeY="{macro[1]}" r="0" ifd="0" z="0" c="0"/>'
    )
    main_pixels = f'"{width}" sizeY="{height}">{dimensions}'
    macro_view = f'sizeX="{collection_nm[0]}" sizeY="{collection_nm[1]}" offsetX="0" offsetY="0"'
    main_view = (
        f'sizeX="{width * NM_PER_PIXEL}" sizeY="{height * NM_PER_PIXEL}" '
        f'offsetX="{OFFSET_NM[0]}" offsetY="{OFFSET_NM[1]}"'
    )
    return (
        '<?xml version="1.0"?>\n'
        f'<scn xmlns="{NAMESPACE}">'
        f'<collection name="lamina-sample" uuid="urn:uuid:collection" '
        f'sizeX="{collection_nm[0]}" sizeY="{collection_nm[1]}">'
        f"<barcode>{coded}</barcode>"
        + image("Macro", macro_pixels, macro_view, "1.25", "0.04")
        + image("Main", main_pixels, main_view, "20", "0.7")
        + "</collection></scn>\n"
    )


def _page(pixels: np.ndarray, description: str | None, nm_per_pixel: float | None) -> Page:
    height, width = pixels.shape[:2]
    tables, tiles = encode_tiles(pixels, TILE, QUALITY)
    tags: dict[int, tuple[int, TagValue]] = {
        254: (LONG, [0]),
        347: (UNDEFINED, tables),
        530: (SHORT, [2, 2]),
    }
    if description is not None:
        tags[270] = (ASCII, description)
    if nm_per_pixel is not None:
        per_cm = round(1e7 / nm_per_pixel * 1000)
        tags[282] = (RATIONAL, [(per_cm, 1000)])
        tags[283] = (RATIONAL, [(per_cm, 1000)])
        tags[296] = (SHORT, [3])
    return Page(width, height, tiles, _JPEG, _YCBCR, tile=TILE, tags=tags)


def write_scn(path: Path, slide: SlideContent, identity: Identity) -> Path:
    """Write a Leica SCN file.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.scn``).
    slide : SlideContent
        Tissue (the main image) and macro (the collection) pixels; the label is in the macro.
    identity : Identity
        The specimen ID is the collection's barcode.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    levels = pyramid(slide.pixels, 4, TILE)
    macro = np.asarray(slide.overview.convert("RGB"))
    macro_size = (macro.shape[1], macro.shape[0])
    nm_per_macro_pixel = SLIDE_WIDTH_NM // macro_size[0]
    collection = (macro_size[0] * nm_per_macro_pixel, macro_size[1] * nm_per_macro_pixel)
    sizes = [(level.shape[1], level.shape[0]) for level in levels]
    xml = scn_xml(identity.specimen_id, macro_size, sizes, collection)
    pages = [_page(macro, xml, None)]
    base_width = sizes[0][0]
    for level in levels:
        pages.append(_page(level, None, NM_PER_PIXEL * base_width / level.shape[1]))
    write_tiff(path, pages)
    return path
