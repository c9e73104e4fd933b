"""Philips iSyntax, read through libisyntax (pyisyntax): pixel-exact.

iSyntax stores a slide as Philips' own wavelet coefficients (lossy, in no codec DICOM carries), so
every level is decoded by libisyntax, one tile at a time, and written losslessly (JPEG 2000): the
DICOM's pixels are libisyntax's. The pixels went through the scanner's lossy compression, so the
instances say so (LossyImageCompression ``01``, method ``PHILIPS_ISYNTAX``: DICOM's defined terms
name no method for it, and lamina adds this one; the ratio is the level's pixels over the file's
bytes, a lower bound). The label and macro images are the JPEGs the file holds.

No valid iSyntax file can be written here (no writer exists outside Philips' software) and no
small real one is public, so this reader is tested on what can be: the refusal of a damaged or
truncated file. Its pixel path is libisyntax's ``read_region``, as OpenSlide's iSyntax support
(which also uses libisyntax) reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lamina.errors import CorruptSourceError, MissingMetadataError
from lamina.formats import codec
from lamina.formats.source import Pixels, SlideMetadata, SlideSource, SourceImage, SourceOptions
from lamina.model.enums import ImageFlavorValues, LossyImageCompressionMethodValues
from lamina.model.geometry import SizeMm, SizePx
from lamina.model.slide import SlideIdentity

#: An iSyntax file starts with its XML header.
MAGIC = b"<?xml"
TILE = 512
_DAMAGED = "the file is damaged or truncated: copy it again from the scanner"


def _fatal(path: Path, what: str, exc: Exception) -> CorruptSourceError:
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "no detail given"
    return CorruptSourceError(path, f"{what}: libisyntax says {detail!r}; {_DAMAGED}")


class IsyntaxLevel(SourceImage):
    """One level: 512x512 tiles of RGB asked of libisyntax."""

    def __init__(
        self, source: IsyntaxSource, level: int, size: SizePx, spacing: SizeMm, ratio: float
    ) -> None:
        self._source = source
        self._level = level
        self.flavor = ImageFlavorValues.VOLUME
        self.size = size
        self.tile_size = SizePx(min(TILE, size.width), min(TILE, size.height))
        self.samples_per_pixel = 3
        self.pixel_spacing = spacing
        self.encoding = None
        self.source_lossy = True
        self.lossy_method = LossyImageCompressionMethodValues.PHILIPS_ISYNTAX
        self.lossy_ratio = ratio

    def decode_tile(self, col: int, row: int, z: int = 0, c: int = 0) -> Pixels:
        tw, th = self.tile_size.width, self.tile_size.height
        width = min(tw, self.size.width - col * tw)
        height = min(th, self.size.height - row * th)
        try:
            rgba = self._source.slide.read_region(col * tw, row * th, width, height, self._level)
        except Exception as exc:
            raise _fatal(self._source.path, f"level {self._level}, tile ({col}, {row})", exc) from exc
        out = np.full((th, tw, 3), 255, np.uint8)
        out[:height, :width] = np.asarray(rgba)[..., :3]
        return out


class IsyntaxSource(SlideSource):
    format_name = "philips_isyntax"
    display_name = "Philips iSyntax"
    priority = 60
    suffixes = (".isyntax",)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return cls.named_like(path)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(path, options)
        from isyntax import ISyntax

        try:
            self.slide: Any = ISyntax.open(path)
        except Exception as exc:
            raise _fatal(path, "the iSyntax header cannot be read", exc) from exc
        try:
            self._open(options)
        except BaseException:
            self.close()
            raise

    def _open(self, options: SourceOptions) -> None:
        slide, path = self.slide, self.path
        try:
            count = int(slide.level_count)
            sizes = [tuple(int(v) for v in slide.level_dimensions[n]) for n in range(count)]
            mpp = (float(slide.mpp_x), float(slide.mpp_y))
        except Exception as exc:
            raise _fatal(path, "the levels cannot be read", exc) from exc
        spacing = options.pixel_spacing
        if spacing is None and mpp[0] > 0 and mpp[1] > 0:
            spacing = SizeMm(mpp[0] / 1000.0, mpp[1] / 1000.0)
        if spacing is None:
            raise MissingMetadataError(path, "the iSyntax header gives no pixel size; give it with --mpp")
        if not sizes or min(min(size) for size in sizes) <= 0:
            raise CorruptSourceError(path, f"the levels' sizes {sizes} hold an empty level; {_DAMAGED}")
        stored = max(1, path.stat().st_size)
        base = sizes[0]
        self._levels = [
            IsyntaxLevel(
                self,
                n,
                SizePx(width, height),
                SizeMm(spacing.width * base[0] / width, spacing.height * base[1] / height),
                base[0] * base[1] * 3 / stored,
            )
            for n, (width, height) in enumerate(sizes)
        ]
        self._associated = [
            image
            for image in (
                self._jpeg(slide.read_label_image_jpeg(), ImageFlavorValues.LABEL),
                self._jpeg(slide.read_macro_image_jpeg(), ImageFlavorValues.OVERVIEW),
            )
            if image is not None
        ]
        barcode = str(getattr(slide, "barcode", None) or "").strip()[:64]
        self._metadata = SlideMetadata(
            manufacturer="Philips", identity=SlideIdentity(container_id=barcode or None)
        )

    def _jpeg(self, data: Any, flavor: ImageFlavorValues) -> SourceImage | None:
        from lamina.formats.images import DecodedImage

        if not data:
            return None
        stream = bytes(data)
        try:
            pixels = codec.decode(stream, codec.lossy_encoding(3))
        except Exception as exc:
            raise _fatal(self.path, f"the {flavor.lower()} image", exc) from exc
        image = DecodedImage(pixels, flavor, None, source_lossy=True)
        image.lossy_method = LossyImageCompressionMethodValues.ISO_10918_1
        image.lossy_ratio = image.size.area * 3 / len(stream)
        return image

    @property
    def metadata(self) -> SlideMetadata:
        return self._metadata

    def close(self) -> None:
        slide = getattr(self, "slide", None)
        if slide is not None:
            slide.close()
