"""Roche (Ventana) BIF: a (Big)TIFF of tiled JPEG levels described ``level=N mag=M quality=Q``.

As OpenSlide's ``ventana`` reader does:

* the scan's ``<iScan>`` element (the XMP, tag 700, of the first page that has one; alone or in
  ``<Metadata>``) gives ``Magnification``, ``ScanRes`` (µm per pixel at level 0),
  ``ScannerModel``, ``UnitNumber``, ``BuildVersion`` and ``Barcode1D``;
* the pages described ``level=N mag=M`` are the levels (downsample ``mag0 / mag``);
  ``Label_Image`` (or ``Label Image``), the photo of the whole slide, is the OVERVIEW and
  ``Thumbnail`` the THUMBNAIL;
* level 0's XMP ``<EncodeInfo>`` lists the scanned area (``SlideStitchInfo/ImageInfo``: its
  tiles ``NumCols`` x ``NumRows``) and a ``TileJointInfo`` per pair of neighbouring tiles with
  their overlap. OpenSlide places every tile one *advance* after the previous, the advance being
  the tile size less the confidence-weighted mean overlap; where tiles overlap, the later one
  (to the right, below) shows, as read back from OpenSlide.

When the overlaps are all 0 the tiles lie edge to edge and every level's JPEG tiles are copied
as stored. When they are not, level 0 is composed as OpenSlide composes it (pixel-exact: a whole
pixel advance is required, a fractional one is refused) and handed over decoded; the file's lower
levels, which OpenSlide draws by scaling the same layout, are left for lamina to rebuild from
level 0. A slide of several scanned areas is refused in one line.

XML is parsed with defusedxml and only up to :data:`MAX_XML_BYTES`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from defusedxml import ElementTree

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.images import TiffTiledImage, decoded_page, require_8bit
from lamina.formats.source import (
    Pixels,
    SlideMetadata,
    SlideSource,
    SourceImage,
    SourceOptions,
    check_geometry,
)
from lamina.formats.tiff_common import open_tiff, pages_of, reading_page, require_spacing, sniff_tiff
from lamina.model.enums import ImageFlavorValues, LossyImageCompressionMethodValues
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

MAX_XML_BYTES = 16 << 20
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"
_LEVEL = re.compile(r"(?:^|\s)level=(\d+)(?:\s|$)")
_MAG = re.compile(r"(?:^|\s)mag=([0-9.]+)(?:\s|$)")
_ASSOCIATED = {
    "Label_Image": ImageFlavorValues.OVERVIEW,
    "Label Image": ImageFlavorValues.OVERVIEW,
    "Thumbnail": ImageFlavorValues.THUMBNAIL,
}


def _xml(path: Path, page: tifffile.TiffPage, what: str) -> Any:
    """The page's XMP parsed, or None when it has none."""
    tag = page.tags.get(700)
    if tag is None:
        return None
    value = tag.value
    if len(value) > MAX_XML_BYTES:
        raise CorruptSourceError(
            path, f"page {page.index}'s XMP is {len(value)} bytes, not a BIF {what}; {_DAMAGED}"
        )
    text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    try:
        return ElementTree.fromstring(text.strip("\0 \r\n"))
    except Exception as exc:
        raise CorruptSourceError(
            path, f"page {page.index}'s BIF {what} XML cannot be parsed; {_DAMAGED}"
        ) from exc


def _iscan(root: Any) -> Any:
    if root is None:
        return None
    if root.tag == "iScan":
        return root
    return root.find("iScan") if root.tag == "Metadata" else None


@dataclass(frozen=True)
class StitchInfo:
    """Level 0's ``<EncodeInfo>``: the scanned area's tiles and their advance in pixels."""

    across: int
    down: int
    advance: tuple[float, float]


def parse_encode_info(path: Path, root: Any, tile: SizePx) -> StitchInfo:
    """The scanned area and OpenSlide's tile advance (tile size less the weighted mean overlap)."""
    areas = [info for info in root.iter("ImageInfo") if (info.get("AOIScanned") or "1") != "0"]
    if len(areas) != 1:
        raise UnsupportedFormatError(
            path,
            f"a BIF of {len(areas)} scanned areas: lamina reads BIF slides of one scanned area; "
            "export the areas apart from the scanner's software and ingest them one by one",
        )
    (info,) = areas
    try:
        across, down = int(info.get("NumCols")), int(info.get("NumRows"))
        width, height = int(info.get("Width")), int(info.get("Height"))
    except (TypeError, ValueError):
        raise CorruptSourceError(
            path, f"level 0's ImageInfo has no tile counts or size; {_DAMAGED}"
        ) from None
    if (width, height) != (tile.width, tile.height) or across < 1 or down < 1:
        raise CorruptSourceError(
            path,
            f"level 0's ImageInfo says {across}x{down} tiles of {width}x{height}, "
            f"its page tiles of {tile}; {_DAMAGED}",
        )
    totals = {"RIGHT": [0.0, 0.0], "UP": [0.0, 0.0]}
    for joint in info.iter("TileJointInfo"):
        direction = joint.get("Direction")
        if direction not in totals:
            raise UnsupportedFormatError(
                path, f"a BIF tile joint of direction {direction!r}: lamina reads RIGHT and UP"
            )
        try:
            overlap = float(joint.get("OverlapX" if direction == "RIGHT" else "OverlapY"))
            confidence = float(joint.get("Confidence"))
        except (TypeError, ValueError):
            raise CorruptSourceError(
                path, f"a TileJointInfo of level 0 has no overlap or confidence; {_DAMAGED}"
            ) from None
        totals[direction][0] += confidence * overlap
        totals[direction][1] += confidence
    mean = [total / weight if weight else 0.0 for total, weight in (totals["RIGHT"], totals["UP"])]
    return StitchInfo(across, down, (tile.width - mean[0], tile.height - mean[1]))


class ComposedImage(SourceImage):
    """Level 0 of a BIF whose tiles overlap, composed as OpenSlide draws it, decoded."""

    def __init__(self, tiles: TiffTiledImage, stitch: StitchInfo, pixel_spacing: SizeMm) -> None:
        self._tiles = tiles
        self._advance = (int(stitch.advance[0]), int(stitch.advance[1]))
        self._grid = (stitch.across, stitch.down)
        tile = tiles.tile_size
        self.flavor = ImageFlavorValues.VOLUME
        self.size = SizePx(
            (stitch.across - 1) * self._advance[0] + tile.width,
            (stitch.down - 1) * self._advance[1] + tile.height,
        )
        self.tile_size = tile
        self.samples_per_pixel = tiles.samples_per_pixel
        self.pixel_spacing = pixel_spacing
        self.encoding = None
        self.source_lossy = True
        self.lossy_method = LossyImageCompressionMethodValues.ISO_10918_1
        # known, so that the composed pixels are kept losslessly with their JPEG history
        stored = sum(tiles.frame_lengths() or [1])
        self.lossy_ratio = tiles.size.area * tiles.samples_per_pixel / stored
        self._cache: OrderedDict[tuple[int, int], Pixels] = OrderedDict()

    def _source(self, col: int, row: int) -> Pixels:
        key = (col, row)
        if key not in self._cache:
            self._cache[key] = self._tiles.decode_tile(col, row)
            if len(self._cache) > 2 * self._grid[0] + 2:
                self._cache.popitem(last=False)
        return self._cache[key]

    def _owners(self, start: int, length: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """For each canvas position: the tile that shows there (where tiles overlap, OpenSlide
        shows the later one: the right or lower tile) and the position in that tile."""
        advance, count = self._advance[axis], self._grid[axis]
        positions = np.arange(start, start + length)
        owner = np.minimum(positions // advance, count - 1)
        return owner, positions - owner * advance

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        tw, th = self.tile_size.width, self.tile_size.height
        out = np.full((th, tw, self.samples_per_pixel), 255, np.uint8)
        xs, lx = self._owners(col * tw, tw, 0)
        ys, ly = self._owners(row * th, th, 1)
        inside_x = (lx < tw) & (np.arange(col * tw, col * tw + tw) < self.size.width)
        inside_y = (ly < th) & (np.arange(row * th, row * th + th) < self.size.height)
        for source_row in np.unique(ys[inside_y]):
            rows = np.nonzero(inside_y & (ys == source_row))[0]
            for source_col in np.unique(xs[inside_x]):
                cols = np.nonzero(inside_x & (xs == source_col))[0]
                pixels = self._source(int(source_col), int(source_row))
                out[np.ix_(rows, cols)] = pixels[np.ix_(ly[rows], lx[cols])]
        return out


class BifSource(SlideSource):
    format_name = "roche_bif"
    display_name = "Roche (Ventana) BIF"
    suffixes = (".bif",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return sniff_tiff(path, lambda tiff: tiff.is_bif, cls)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        self._tiff = open_tiff(path)
        try:
            self._open(path, options)
        except BaseException:
            self._tiff.close()
            raise

    def _open(self, path: Path, options: SourceOptions) -> None:
        pages = pages_of(self._tiff)
        self._scan: Any = next(
            (found for page in pages if (found := _iscan(_xml(path, page, "iScan"))) is not None), None
        )
        if self._scan is None:
            raise CorruptSourceError(path, f"no page carries the BIF's iScan XML; {_DAMAGED}")
        levels: list[tuple[int, float, tifffile.TiffPage]] = []
        for page in pages:
            description = (page.description or "").strip()
            named, magnified = _LEVEL.search(description), _MAG.search(description)
            if named and magnified:
                levels.append((int(named.group(1)), float(magnified.group(1)), page))
            elif description in _ASSOCIATED:
                flavor = _ASSOCIATED[description]
                require_8bit(path, page)
                with reading_page(path, page, f"the {flavor.lower()} image"):
                    self._associated.append(decoded_page(page, flavor))
        if not levels:
            raise CorruptSourceError(path, f"no page is a BIF level (described 'level=N mag=M'); {_DAMAGED}")
        levels.sort(key=lambda found: found[0])
        mag0 = levels[0][1]
        mpp = self._number("ScanRes")
        base = require_spacing(
            path, SizeMm.from_mpp(mpp) if mpp else None, options, "its iScan XML has no ScanRes"
        )
        for number, mag, page in levels:
            require_8bit(path, page)
            if not page.is_tiled or mag <= 0:
                raise CorruptSourceError(
                    path, f"page {page.index}, BIF level {number}, is not tiled; {_DAMAGED}"
                )
            spacing = base.scaled(mag0 / mag)
            with reading_page(path, page):
                image = TiffTiledImage(self._tiff, page, ImageFlavorValues.VOLUME, spacing)
                encode = _xml(path, page, "EncodeInfo") if number == levels[0][0] else None
            if encode is None:
                self._levels.append(image)
                continue
            stitch = parse_encode_info(path, encode, image.tile_size)
            if stitch.advance == (image.tile_size.width, image.tile_size.height):
                self._levels.append(image)
                continue
            if stitch.advance != (int(stitch.advance[0]), int(stitch.advance[1])):
                raise UnsupportedFormatError(
                    path,
                    f"BIF tiles that overlap by a fraction of a pixel (advance {stitch.advance[0]:g} x "
                    f"{stitch.advance[1]:g}): lamina composes tiles on whole pixels only",
                )
            check_geometry(path, f"page {page.index}", image.size, image.tile_size)
            if image.grid != SizePx(stitch.across, stitch.down):
                raise CorruptSourceError(
                    path,
                    f"page {page.index} holds {image.grid} tiles, its EncodeInfo {stitch.across}x"
                    f"{stitch.down}; {_DAMAGED}",
                )
            self._levels = [ComposedImage(image, stitch, spacing)]
            break  # lower levels are rebuilt from the composed level 0
        self._levels.sort(key=lambda image: -image.size.area)

    def _attribute(self, name: str) -> str | None:
        value = self._scan.get(name)
        return value.strip() or None if value else None

    def _number(self, name: str) -> float | None:
        try:
            value = float(self._attribute(name) or "")
        except ValueError:
            return None
        return value if value > 0 else None

    @cached_property
    def metadata(self) -> SlideMetadata:
        version = self._attribute("BuildVersion")
        return SlideMetadata(
            manufacturer="Ventana",
            model_name=self._attribute("ScannerModel"),
            device_serial_number=self._attribute("UnitNumber"),
            software_versions=(version,) if version else (),
            objective_power=self._number("Magnification"),
            icc_profile=next((page.iccprofile for page in pages_of(self._tiff) if page.iccprofile), None),
            identity=SlideIdentity(container_id=self._attribute("Barcode1D") or self._attribute("Barcode2D")),
        )

    def close(self) -> None:
        self._tiff.close()
