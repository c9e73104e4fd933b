"""WADO-RS rendered resources (PS3.18 10.4.1.1.3, 8.3.5) and thumbnails (10.4.1.1.4).

What a browser can show: ``image/jpeg`` (the default) or ``image/png``, chosen by the ``accept``
query parameter or else the Accept header. ``viewport=vw,vh`` scales the image down to fit
(never up: a larger viewport adds no detail), ``viewport=vw,vh,sx,sy,sw,sh`` first takes the
region (sx, sy, sw, sh) of the source; ``quality=1..100`` sets the JPEG quality.

Grey samples of more than 8 bits (fluorescence channels: 16-bit MONOCHROME2) are shown through a
window (PS3.18 8.3.5.1.3): ``window=center,width[,function]``, the function one of VOI LUT
Function's terms (LINEAR, the default, LINEAR_EXACT, SIGMOID; ``linear-exact`` is read too).
Without one, the window is the 0.5th to 99.5th percentiles of the samples rendered (the frame's,
or the whole region's for an instance: one window for all its tiles, so no seams), linear-exact
(their minimum to maximum when the percentiles are equal, as in a sparse plane):
a few hot or dead pixels do not squeeze the rest into a handful of grey levels. 8-bit grey is
windowed only when asked; colour images never are. Then, when the frame's optical path has a
Palette Color Lookup Table (a fluorescence channel's colour), the windowed grey goes through it
and the answer is RGB: the server colours, so a viewer composites channels by adding the images
it is given (canvas ``lighter``), and a thumbnail looks as the viewer does. A windowed frame's
answer says its window in a ``Lamina-Window: center,width,function`` header: the viewer reads the
default window of a channel once, from the smallest level, then asks every tile with it (a window
of each tile's own would show seams between tiles).

A frame of a z-stack or of several channels is addressed by its number (TILED_FULL, optical path
outermost, then focal plane, then rows, then columns). An instance rendered (and a thumbnail) of
such an image is its middle focal plane, every channel windowed on its own, coloured by its
palette and added: what a fluorescence slide looks like at a glance, where its first channel
alone would show one stain out of several.

A stored JPEG frame that nothing changes (no scaling, no region, no quality asked) is sent as
stored, byte for byte: a tiled viewer's tile costs one ranged read, as a frame does. Anything
else is decoded, so every decode is capped: an image (or region) of more than ``max_pixels``
pixels is refused with 413 before any pixel is decoded, and so is a stored stream whose own
header declares more.

An expired slide's series (and a study whose slides all expired) still has its thumbnail: the
JPEG its trace kept (:mod:`lamina.lifecycle.expire`), sent as stored or scaled to the viewport.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import math
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lamina.api.auth import study_instances
from lamina.api.dicomweb import available, frames, multipart
from lamina.api.dicomweb.accept import parse_accept
from lamina.api.dicomweb.index import IndexedInstance, InstanceIndex
from lamina.archive.archive import Archive
from lamina.archive.catalog import InstanceRow
from lamina.errors import (
    IntegrityError,
    NotAcceptableError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
)
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.lifecycle.serving import SlideState, slide_state, study_traces
from lamina.mapping import dicom_json

Pixels = npt.NDArray[np.uint8]
#: Decoded samples: uint8, or uint16 for frames of more than 8 bits.
Samples = npt.NDArray[np.uint8] | npt.NDArray[np.uint16]

JPEG = "image/jpeg"
PNG = "image/png"
#: The most pixels one rendering decodes (a 4096 x 4096 image): larger ones get 413.
MAX_RENDERED_PIXELS = 4096 * 4096
#: The side of a thumbnail's viewport when the request gives none.
THUMBNAIL_SIDE = 256
DEFAULT_QUALITY = 90
#: Rendered images of one SOP instance never change; a series or study may gain instances.
#: ``private``: answers behind sign-in are never for shared caches. A day, not a year: a slide
#: deleted (retention, withdrawal) does not linger in a workstation's browser cache for long.
_CACHE_INSTANCE = "private, max-age=86400"
#: A rendered frame is immutable (per SOP instance, stored object and frame): the browser keeps it
#: without asking again within its age, and after that asks with If-None-Match (304, no body).
_CACHE_FRAME = "private, max-age=86400, immutable"
_CACHE_GROUP = "private, max-age=300"
#: An expired slide's thumbnail never changes (a slide scanned again is another series).
_CACHE_TRACE = "private, max-age=86400"
#: zlib level of PNG answers: 3 is about twice as fast as the default for 10 % more bytes.
_PNG_LEVEL = 3
_JPEG_BASELINE = TransferSyntax.JPEG_BASELINE_8BIT.value
_PICTURE_FLAVORS = ("VOLUME", "THUMBNAIL")
#: The default window of samples of more than 8 bits: these percentiles of the samples rendered.
DEFAULT_WINDOW_PERCENTILES = (0.5, 99.5)
#: VOI LUT Function (0028,1056) terms, with the spellings PS3.18's ``window`` examples use.
_WINDOW_FUNCTIONS = {"LINEAR": "LINEAR", "LINEAR_EXACT": "LINEAR_EXACT", "SIGMOID": "SIGMOID"}
_LAYOUTS_KEPT = 256
#: The header of a windowed frame's answer that says its window: ``center,width,function``.
WINDOW_HEADER = "Lamina-Window"


@dataclass(frozen=True)
class Viewport:
    """``viewport=vw,vh[,sx,sy,sw,sh]``: the box to fit in, and the source region to take."""

    width: int | None
    height: int | None
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh in source pixels


@dataclass(frozen=True)
class Window:
    """``window=center,width[,function]``: the VOI LUT applied to grey samples (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: str = "LINEAR"

    @classmethod
    def spanning(cls, low: float, high: float) -> Window:
        """The linear-exact window that maps ``low`` to black and ``high`` to white."""
        return cls((low + high) / 2, max(high - low, 1e-6), "LINEAR_EXACT")

    def apply(self, samples: npt.NDArray[Any]) -> Pixels:
        """``samples`` as 0..255, rounded to the nearest (half to even)."""
        x = samples.astype(np.float64)
        c, w = self.center, self.width
        if self.function == "LINEAR_EXACT":
            y = (x - c) / w * 255.0 + 127.5
        elif self.function == "SIGMOID":
            y = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        else:  # LINEAR, with its half-pixel offsets (PS3.3 C.11.2.1.2.1)
            y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0 if w > 1 else np.where(x < c - 0.5, 0.0, 255.0)
        return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)


@dataclass(frozen=True)
class RenderOptions:
    media_type: str
    viewport: Viewport | None
    quality: int | None
    window: Window | None = None


@dataclass(frozen=True)
class Layout:
    """What an instance's metadata says of its frames beyond the tile grid: focal planes, optical
    paths, and the colour (Red, Green, Blue palette, as 8-bit tables) of each path that has one."""

    planes: int = 1
    paths: int = 1
    palettes: tuple[Pixels | None, ...] = ()

    def palette(self, path: int) -> Pixels | None:
        return self.palettes[path] if path < len(self.palettes) else None

    @classmethod
    def from_metadata(cls, blob: bytes) -> Layout:
        """From an instance's stored DICOM JSON; tolerant: what is missing or odd counts as absent."""
        if not blob:
            return cls()
        try:
            data = json.loads(dicom_json.unpack(blob))
        except (ValueError, zlib.error):
            return cls()
        planes = _first_int(data, "00480303")
        paths = _first_int(data, "00480302")
        items = data.get("00480105", {}).get("Value") or []
        return cls(planes, paths, tuple(_palette(item) for item in items))


def choose_media_type(request: Request) -> str:
    """``image/jpeg`` or ``image/png`` from ``accept=`` (which wins) or the Accept header; 406 else."""
    wanted = request.query_params.get("accept") or request.headers.get("accept")
    chosen = rendered_media_type(wanted)
    if chosen is None:
        raise NotAcceptableError(f"rendered images are sent as {JPEG} or {PNG}; ask for one of them")
    return chosen


@functools.lru_cache(maxsize=256)
def rendered_media_type(wanted: str | None) -> str | None:
    """``image/jpeg`` or ``image/png`` for an Accept value (clients repeat a few: parsed once);
    None when neither will do."""
    for media_range in parse_accept(wanted):
        if media_range.quality <= 0:
            continue
        media_type = media_range.media_type
        if media_type in (JPEG, PNG):
            return media_type
        if media_type in ("image/*", "*/*"):
            return JPEG
    return None


#: The options of a rendered frame asked for without parameters, as JPEG: the stored frame.
STORED_JPEG = RenderOptions(JPEG, None, None, None)


def stored_as_rendered(row: InstanceRow) -> bool:
    """Whether a frame of ``row`` rendered as JPEG without parameters is its stored bytes: JPEG
    baseline colour (grey frames may have a palette; MONOCHROME1 is inverted)."""
    return (
        row.transfer_syntax_uid == _JPEG_BASELINE
        and row.samples_per_pixel != 1
        and row.photometric_interpretation != "MONOCHROME1"
    )


def parse_viewport(text: str) -> Viewport:
    """``vw,vh`` (one of the two may be empty) or ``vw,vh,sx,sy,sw,sh``; 400 when malformed."""
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 6):
        raise RequestError("viewport", f"{text!r}: give vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        numbers = [int(piece) if piece else None for piece in pieces]
    except ValueError as exc:
        raise RequestError("viewport", f"{text!r}: the values are whole numbers of pixels") from exc
    width, height = numbers[0], numbers[1]
    if (width is None and height is None) or any(n is not None and n <= 0 for n in (width, height)):
        raise RequestError("viewport", f"{text!r}: vw and vh are positive; one of them may be left empty")
    if len(numbers) == 2:
        return Viewport(width, height)
    sx, sy, sw, sh = numbers[2:]
    if sx is None or sy is None or sw is None or sh is None or sx < 0 or sy < 0 or sw <= 0 or sh <= 0:
        raise RequestError(
            "viewport", f"{text!r}: sx,sy are offsets >= 0 and sw,sh sizes > 0 (flipping is not supported)"
        )
    return Viewport(width, height, (sx, sy, sw, sh))


def parse_quality(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        quality = int(text)
    except ValueError as exc:
        raise RequestError("quality", f"{text!r} is not a whole number from 1 to 100") from exc
    if not 1 <= quality <= 100:
        raise RequestError("quality", f"{quality} is not from 1 to 100")
    return quality


def parse_window(text: str | None) -> Window | None:
    """``center,width[,function]`` (PS3.18 8.3.5.1.3); None when absent; 400 naming ``window`` else."""
    if text is None or not text.strip():
        return None
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 3):
        raise RequestError("window", f"{text!r}: give center,width or center,width,function")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError as exc:
        raise RequestError("window", f"{text!r}: center and width are numbers") from exc
    if not (math.isfinite(center) and math.isfinite(width)):
        raise RequestError("window", f"{text!r}: center and width are finite numbers")
    name = pieces[2].upper().replace("-", "_") if len(pieces) == 3 else "LINEAR"
    function = _WINDOW_FUNCTIONS.get(name)
    if function is None:
        raise RequestError("window", f"{text!r}: the function is LINEAR, LINEAR_EXACT or SIGMOID")
    if width < (1 if function == "LINEAR" else 0) or width == 0:
        least = ">= 1 for LINEAR" if function == "LINEAR" else "> 0"
        raise RequestError("window", f"{text!r}: the width is {least}")
    return Window(center, width, function)


def default_window(samples: npt.NDArray[Any]) -> Window:
    """The window of samples rendered without one: their 0.5th to 99.5th percentiles (numpy's
    linear interpolation), linear-exact; when those are equal (a sparse plane: a few cells on a
    black field), their minimum to maximum; a flat image gets a window one sample wide."""
    low, high = (float(v) for v in np.percentile(samples, DEFAULT_WINDOW_PERCENTILES))
    if high <= low:
        low, high = float(samples.min()), float(samples.max())
    return Window.spanning(low, high if high > low else low + 1)


def render_options(request: Request, default_viewport: Viewport | None = None) -> RenderOptions:
    text = request.query_params.get("viewport")
    viewport = parse_viewport(text) if text else default_viewport
    return RenderOptions(
        choose_media_type(request),
        viewport,
        parse_quality(request.query_params.get("quality")),
        parse_window(request.query_params.get("window")),
    )


def fit(width: int, height: int, viewport: Viewport | None) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` image scaled down, aspect kept, to fit the viewport."""
    if viewport is None:
        return width, height
    scales = [1.0]
    if viewport.width is not None:
        scales.append(viewport.width / width)
    if viewport.height is not None:
        scales.append(viewport.height / height)
    scale = min(scales)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def declared_size(stream: bytes, transfer_syntax: str) -> tuple[int, int] | None:
    """(columns, rows) that a compressed frame's own header declares, read before decoding."""
    if stream.startswith(b"\xff\x4f\xff\x51") and len(stream) >= 24:  # JPEG 2000 codestream, SIZ
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", stream[8:24])
        return xsiz - xosiz, ysiz - yosiz
    if stream.startswith(codec.SOI):
        pos = 2
        while pos + 9 <= len(stream) and stream[pos] == 0xFF:
            marker = stream[pos + 1]
            if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
                pos += 1 if marker == 0xFF else 2
                continue
            # SOF0..SOF15 (but DHT, JPG and DAC) and JPEG-LS's SOF55 carry the image size
            if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
                rows, columns = struct.unpack(">HH", stream[pos + 5 : pos + 9])
                return columns, rows
            if marker == 0xDA:
                break
            (length,) = struct.unpack(">H", stream[pos + 2 : pos + 4])
            pos += 2 + length
        return None
    return None


class Renderer:
    """The rendered and thumbnail endpoints, with their limits.

    Parameters
    ----------
    max_pixels
        The most pixels one request may decode (image, region or frame); more is answered 413.
    thumbnail_side
        The viewport of a thumbnail when the request gives none.
    """

    def __init__(self, max_pixels: int = MAX_RENDERED_PIXELS, thumbnail_side: int = THUMBNAIL_SIDE) -> None:
        self.max_pixels = max_pixels
        self.thumbnail_side = thumbnail_side
        self._layouts: OrderedDict[tuple[str, str], Layout] = OrderedDict()
        self._layouts_lock = threading.Lock()

    def layout(self, found: IndexedInstance) -> Layout:
        """The instance's focal planes, optical paths and palettes, read once from its metadata."""
        key = (found.row.sop_instance_uid, found.row.blob_sha256)
        with self._layouts_lock:
            if key in self._layouts:
                self._layouts.move_to_end(key)
                return self._layouts[key]
        layout = Layout.from_metadata(found.row.metadata)
        with self._layouts_lock:
            self._layouts[key] = layout
            while len(self._layouts) > _LAYOUTS_KEPT:
                self._layouts.popitem(last=False)
        return layout

    def frame_palette(self, found: IndexedInstance, number: int) -> Pixels | None:
        """The palette of the optical path of frame ``number`` (TILED_FULL, optical path outermost),
        or None: colour frames, paths without one, frames not in the full order."""
        row = found.row
        if row.samples_per_pixel != 1:
            return None
        layout = self.layout(found)
        tiles = math.ceil(row.total_pixel_matrix_columns / max(1, row.columns)) * math.ceil(
            row.total_pixel_matrix_rows / max(1, row.rows)
        )
        if layout.paths == 1:
            return layout.palette(0)
        if row.number_of_frames != tiles * layout.planes * layout.paths:
            return None
        return layout.palette((number - 1) // (tiles * layout.planes))

    def routes(self) -> list[BaseRoute]:
        """Routes relative to the DICOMweb root; they never match what the WADO-RS routes match."""
        study = "/studies/{study}"
        series = study + "/series/{series}"
        instance = series + "/instances/{instance}"
        # plain (sync) endpoints: Starlette runs them in its thread pool, so decoding never blocks
        return [
            Route(instance + "/frames/{frames}/rendered", self.frame_rendered),
            Route(instance + "/rendered", self.instance_rendered),
            Route(instance + "/thumbnail", self.instance_thumbnail),
            Route(series + "/thumbnail", self.series_thumbnail),
            Route(study + "/thumbnail", self.study_thumbnail),
            Route(series + "/rendered", self.series_rendered),
            Route(study + "/rendered", self.study_rendered),
        ]

    # -- endpoints --------------------------------------------------------------------------------
    def frame_rendered(self, request: Request) -> Response:
        found = self._instance(request)
        numbers = frames.parse_frame_numbers(request.path_params["frames"], found.row.number_of_frames)
        if len(numbers) != 1:
            raise RequestError("frames", "a rendered frame is one frame: ask for each frame on its own")
        options = render_options(request)
        row = found.row
        tag = frame_etag(row, numbers[0], options)
        if not_modified(request, tag):
            return Response(status_code=304, headers=_frame_headers(tag))
        palette = self.frame_palette(found, numbers[0])
        data = frames.read_frames(found, numbers, request.app.state.archive)[0]
        if palette is None and self._can_send_stored(found, options, row.columns, row.rows):
            return _image(data, JPEG, _CACHE_FRAME, tag)
        region = _clip(options.viewport, row.columns, row.rows)
        self._check_size(region[2], region[3], "the frame")
        samples = self.decode(found, data)
        sx, sy, sw, sh = region
        part = samples[sy : sy + sh, sx : sx + sw]
        window = options.window
        if window is None and part.shape[2] == 1 and part.dtype != np.uint8:
            window = default_window(part)
        answer = self._encode(self.display(part, row, palette, window), options, _CACHE_FRAME)
        answer.headers["ETag"] = tag
        if window is not None:
            # the window applied, so that a viewer asks every tile of the image with the same one
            answer.headers[WINDOW_HEADER] = f"{window.center:.10g},{window.width:.10g},{window.function}"
        return answer

    def instance_rendered(self, request: Request) -> Response:
        found = self._instance(request)
        return self._render_instance(
            found, render_options(request), request.app.state.archive, _CACHE_INSTANCE
        )

    def instance_thumbnail(self, request: Request) -> Response:
        found = self._instance(request)
        options = render_options(request, self._default_viewport())
        return self._render_instance(found, options, request.app.state.archive, _CACHE_INSTANCE)

    def series_thumbnail(self, request: Request) -> Response:
        """The slide's thumbnail; an expired slide's is the one its trace kept."""
        archive: Archive = request.app.state.archive
        params = request.path_params
        rows = archive.catalog.instances_in(params["study"], params["series"])
        if not rows:
            state = slide_state(archive.catalog, params["series"])
            if state is not None and state.expired:
                return self._trace_thumbnail(request, state)
            raise NotFoundError(
                f"series {params['series']} of study {params['study']} is not in this archive"
            )
        return self._thumbnail(request, rows)

    def study_thumbnail(self, request: Request) -> Response:
        """The thumbnail of the study's first slide (catalog order); of a study whose slides all
        expired, the first one their traces kept."""
        study = request.path_params["study"]
        rows = study_instances(request)
        if not rows:
            archive: Archive = request.app.state.archive
            only = request.scope.get("state", {}).get("series_allowed")
            kept = [state for state in study_traces(archive.catalog, study, only) if state.expired]
            pictured = [state for state in kept if state.thumbnail_sha256]
            if pictured:
                return self._trace_thumbnail(request, pictured[0])
            if kept:
                raise kept[0].gone()
            raise NotFoundError(f"study {study} is not in this archive")
        # the study's first series (catalog order) stands for the study
        first = rows[0].series_instance_uid
        return self._thumbnail(request, [row for row in rows if row.series_instance_uid == first])

    def series_rendered(self, request: Request) -> Response:
        available.opening(request)
        archive: Archive = request.app.state.archive
        params = request.path_params
        rows = archive.catalog.instances_in(params["study"], params["series"])
        if not rows:
            available.nothing_in_series(request, "no such study or series with images in this archive")
        return self._render_all(request, rows)

    def study_rendered(self, request: Request) -> Response:
        rows = study_instances(request)
        if not rows:
            available.nothing_in_study(request, "no such study or series with images in this archive")
        return self._render_all(request, rows)

    def _render_all(self, request: Request, rows: list[InstanceRow]) -> Response:
        """Every image instance rendered, as one multipart/related answer (PS3.18 10.4.1.1.3).

        Slide levels are large: without a ``viewport`` a level over the size limit is refused
        (413), so ask with e.g. ``viewport=1024,1024``.
        """
        pictures = [row for row in rows if row.number_of_frames > 0 and row.rows > 0]
        if not pictures:
            raise NotFoundError("no such study or series with images in this archive")
        options = render_options(request)
        index: InstanceIndex = request.app.state.index
        parts = []
        for row in pictures:
            found = index.get(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
            answer = self._render_instance(found, options, request.app.state.archive, _CACHE_GROUP)
            parts.append((str(answer.media_type or options.media_type), bytes(answer.body)))
        boundary = multipart.boundary()
        return Response(
            multipart.body(parts, boundary),
            headers={
                "Content-Type": multipart.content_type(options.media_type, boundary),
                "Cache-Control": _CACHE_GROUP,
            },
        )

    # -- the work ---------------------------------------------------------------------------------
    def _default_viewport(self) -> Viewport:
        return Viewport(self.thumbnail_side, self.thumbnail_side)

    def _instance(self, request: Request) -> IndexedInstance:
        index: InstanceIndex = request.app.state.index
        params = request.path_params
        return index.get(params["study"], params["series"], params["instance"])

    def _thumbnail(self, request: Request, rows: list[InstanceRow]) -> Response:
        options = render_options(request, self._default_viewport())
        chosen = self.thumbnail_source(rows, options.viewport)
        index: InstanceIndex = request.app.state.index
        found = index.get(chosen.study_instance_uid, chosen.series_instance_uid, chosen.sop_instance_uid)
        return self._render_instance(found, options, request.app.state.archive, _CACHE_GROUP)

    def _trace_thumbnail(self, request: Request, state: SlideState) -> Response:
        """The JPEG an expired slide's trace kept, as stored, or scaled down to the ``viewport``
        asked for (or encoded as PNG when asked); 410 when the rule kept no thumbnail."""
        if not state.thumbnail_sha256:
            raise state.gone()
        archive: Archive = request.app.state.archive
        try:
            jpeg = b"".join(archive.store.open(state.thumbnail_sha256))
        except (NotFoundError, FileNotFoundError):
            raise IntegrityError(
                f"the thumbnail kept by the trace of expired slide {state.slide_id} is missing from the store"
            ) from None
        text = request.query_params.get("viewport")
        options = render_options(request, parse_viewport(text) if text else None)
        if options.media_type == JPEG and options.quality is None and options.viewport is None:
            return _image(jpeg, JPEG, _CACHE_TRACE)
        picture = Image.open(io.BytesIO(jpeg))
        pixels = np.asarray(picture.convert("L" if picture.mode == "L" else "RGB"))
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        width, height = pixels.shape[1], pixels.shape[0]
        sx, sy, sw, sh = _clip(options.viewport, width, height)
        if (
            options.media_type == JPEG
            and options.quality is None
            and (sx, sy, sw, sh) == (0, 0, width, height)
            and fit(width, height, options.viewport) == (width, height)
        ):
            return _image(jpeg, JPEG, _CACHE_TRACE)  # a larger viewport adds no detail
        return self._encode(pixels[sy : sy + sh, sx : sx + sw], options, _CACHE_TRACE)

    def thumbnail_source(self, rows: list[InstanceRow], viewport: Viewport | None) -> InstanceRow:
        """The smallest pyramid level or THUMBNAIL image that still fills the viewport (the cheapest
        one to scale down without losing detail), else the largest one within the pixel limit."""
        pictures = [
            row
            for row in rows
            if row.flavor in _PICTURE_FLAVORS
            and row.total_pixel_matrix_columns * row.total_pixel_matrix_rows <= self.max_pixels
        ]
        if not pictures:
            if any(row.flavor in _PICTURE_FLAVORS for row in rows):
                raise PayloadTooLargeError(
                    f"every image of this slide is over the {self.max_pixels}-pixel rendering limit"
                )
            raise NotFoundError("this series has no slide image (only label or overview images)")
        pictures.sort(key=lambda row: row.total_pixel_matrix_columns * row.total_pixel_matrix_rows)
        for row in pictures:
            width, height = row.total_pixel_matrix_columns, row.total_pixel_matrix_rows
            if viewport is None or fit(width, height, viewport) != (width, height):
                return row
        return pictures[-1]

    def _can_send_stored(
        self, found: IndexedInstance, options: RenderOptions, width: int, height: int
    ) -> bool:
        row = found.row
        return (
            options.media_type == JPEG
            and options.quality is None
            and options.window is None
            and row.transfer_syntax_uid == _JPEG_BASELINE
            and row.photometric_interpretation != "MONOCHROME1"
            and (options.viewport is None or options.viewport.region is None)
            and fit(width, height, options.viewport) == (width, height)
        )

    def _check_size(self, width: int, height: int, what: str) -> None:
        if width * height > self.max_pixels:
            raise PayloadTooLargeError(
                f"{what} is {width} x {height} pixels, over the {self.max_pixels}-pixel rendering limit; "
                "render a smaller pyramid level, a region (viewport=vw,vh,sx,sy,sw,sh) or its frames"
            )

    def _render_instance(
        self, found: IndexedInstance, options: RenderOptions, archive: Archive, cache: str
    ) -> Response:
        row = found.row
        width, height = row.total_pixel_matrix_columns, row.total_pixel_matrix_rows
        single = row.number_of_frames == 1 and (row.columns, row.rows) == (width, height)
        layout = self.layout(found) if row.samples_per_pixel == 1 else Layout()
        plain = layout.planes == layout.paths == 1 and layout.palette(0) is None
        if single and plain and self._can_send_stored(found, options, width, height):
            return _image(frames.read_frames(found, [1], archive)[0], JPEG, cache)
        sx, sy, sw, sh = _clip(options.viewport, width, height)
        self._check_size(sw, sh, "the image" if (sw, sh) == (width, height) else "the region")
        across = math.ceil(width / row.columns)
        down = math.ceil(height / row.rows)
        if row.number_of_frames < across * down:
            raise NotAcceptableError(
                f"the {row.number_of_frames} frames of this instance are not a full {across} x {down} "
                "tile grid (TILED_SPARSE); fetch its frames instead"
            )
        first_col, last_col = sx // row.columns, (sx + sw - 1) // row.columns
        first_row, last_row = sy // row.rows, (sy + sh - 1) // row.rows
        tiles = [
            (col, line) for line in range(first_row, last_row + 1) for col in range(first_col, last_col + 1)
        ]
        per_plane = across * down
        # a z-stack or several channels in the full order: the middle plane, every channel added
        stacked = row.number_of_frames == per_plane * layout.planes * layout.paths
        plane = layout.planes // 2 if stacked else 0
        paths = range(layout.paths) if stacked else range(1)
        total: npt.NDArray[np.uint16] | None = None
        for path in paths:
            first = (plane + path * layout.planes) * per_plane
            numbers = [first + line * across + col + 1 for col, line in tiles]
            canvas = self._assemble(
                found, frames.read_frames(found, numbers, archive), tiles, (sx, sy, sw, sh)
            )
            shown = self.display(canvas, row, layout.palette(path), options.window)
            if len(paths) == 1:
                return self._encode(shown, options, cache)
            colour = np.broadcast_to(shown, (*shown.shape[:2], 3)).astype(np.uint16)
            total = colour if total is None else total + colour
        assert total is not None
        return self._encode(np.minimum(total, 255).astype(np.uint8), options, cache)

    def _assemble(
        self,
        found: IndexedInstance,
        stored: list[bytes],
        tiles: list[tuple[int, int]],
        region: tuple[int, int, int, int],
    ) -> npt.NDArray[Any]:
        """The region (sx, sy, sw, sh) of one plane of one path from its decoded tiles."""
        row = found.row
        sx, sy, sw, sh = region
        canvas: npt.NDArray[Any] | None = None
        for (col, line), data in zip(tiles, stored, strict=True):
            pixels = self.decode(found, data)
            if canvas is None:  # white under 8-bit tiles, as before; black under deeper (fluorescence)
                fill = 255 if pixels.dtype == np.uint8 else 0
                canvas = np.full((sh, sw, row.samples_per_pixel), fill, dtype=pixels.dtype)
            left, top = col * row.columns - sx, line * row.rows - sy
            # the part of this tile inside the region, in tile and in canvas coordinates
            x0, y0 = max(0, -left), max(0, -top)
            x1, y1 = min(pixels.shape[1], sw - left), min(pixels.shape[0], sh - top)
            if x1 > x0 and y1 > y0:
                canvas[top + y0 : top + y1, left + x0 : left + x1] = pixels[y0:y1, x0:x1]
        assert canvas is not None
        return canvas

    def display(
        self, samples: npt.NDArray[Any], row: InstanceRow, palette: Pixels | None, window: Window | None
    ) -> Pixels:
        """Decoded samples as 8-bit pixels to encode: grey of more than 8 bits (or any grey, when a
        ``window`` is asked) through the window, then through the optical path's ``palette`` (RGB);
        colour, and 8-bit grey without window or palette, unchanged."""
        if samples.shape[2] != 1:
            return samples.astype(np.uint8, copy=False)
        inverted = row.photometric_interpretation == "MONOCHROME1"
        shown: Pixels
        if samples.dtype != np.uint8 or window is not None:
            stored = 255 - samples if inverted and samples.dtype == np.uint8 else samples  # as stored
            shown = (window or default_window(stored)).apply(stored)
            if inverted:
                shown = 255 - shown
        else:
            shown = samples.astype(np.uint8, copy=False)
        if palette is not None:
            return palette[shown[..., 0]]
        return shown

    def decode(self, found: IndexedInstance, data: bytes) -> Samples:
        """One stored frame as RGB (or grey) pixels, shape (rows, columns, samples): uint8, or
        uint16 grey for frames of more than 8 bits (MONOCHROME1 is inverted for 8-bit only: deeper
        samples are inverted once windowed, by :meth:`display`); 413 before decoding when it is
        over the limit."""
        row = found.row
        syntax = row.transfer_syntax_uid
        pixels: Samples
        if syntax == TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value:
            expected = row.rows * row.columns * row.samples_per_pixel
            if len(data) < expected:
                raise NotAcceptableError(f"a native frame of {len(data)} bytes is shorter than {expected}")
            if row.samples_per_pixel == 1 and len(data) >= 2 * expected:  # 16 bits allocated
                return (
                    np.frombuffer(data, "<u2", expected).astype(np.uint16).reshape(row.rows, row.columns, 1)
                )
            pixels = np.frombuffer(data, np.uint8, expected).reshape(
                row.rows, row.columns, row.samples_per_pixel
            )
            if row.photometric_interpretation.startswith("YBR_FULL"):
                return np.asarray(Image.fromarray(pixels, "YCbCr").convert("RGB"))
        else:
            size = declared_size(data, syntax) or (row.columns, row.rows)
            self._check_size(*size, "a stored frame")
            try:
                pixels = codec.decode(
                    data, FrameEncoding(TransferSyntax(syntax), row.photometric_interpretation)
                )
            except ValueError as exc:
                raise NotAcceptableError(f"frames stored as {syntax} cannot be rendered here") from exc
        if row.photometric_interpretation == "MONOCHROME1" and pixels.dtype == np.uint8:
            pixels = 255 - pixels
        return pixels

    def _encode(self, pixels: Pixels, options: RenderOptions, cache: str) -> Response:
        height, width = pixels.shape[:2]
        size = fit(width, height, options.viewport)
        image = pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., :3]
        if size != (width, height):
            image = np.asarray(
                Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            )
        image = np.ascontiguousarray(image)
        if options.media_type == PNG:
            return _image(bytes(imagecodecs.png_encode(image, level=_PNG_LEVEL)), PNG, cache)
        quality = options.quality or DEFAULT_QUALITY
        return _image(bytes(imagecodecs.jpeg8_encode(image, level=quality)), JPEG, cache)


def _first_int(data: dict[str, Any], tag: str) -> int:
    """The first value of an integer attribute of DICOM JSON, at least 1 (1 when absent)."""
    found = (data.get(tag) or {}).get("Value") or [1]
    try:
        return max(1, int(found[0]))
    except (TypeError, ValueError):
        return 1


def _lut(item: dict[str, Any], color: str) -> Pixels | None:
    """One Palette Color Lookup Table of an optical path item, resampled to 256 8-bit entries."""
    descriptor_tag, data_tag = {"Red": ("00281101", "00281201"), "Green": ("00281102", "00281202"),
                                "Blue": ("00281103", "00281203")}[color]  # fmt: skip
    descriptor = (item.get(descriptor_tag) or {}).get("Value") or []
    element = item.get(data_tag) or {}
    if len(descriptor) != 3 or "InlineBinary" not in element:
        return None  # a table sent as bulk data is not fetched for this: the channel shows grey
    bits = int(descriptor[2])
    raw = base64.b64decode(element["InlineBinary"])
    table = np.frombuffer(raw, "<u2" if bits > 8 else np.uint8)
    entries = int(descriptor[0]) or 65536
    table = table[:entries]
    if table.size == 0:
        return None
    # the window gives 0..255: spread over the table's entries, then to 8 bits
    index = np.rint(np.arange(256) * (table.size - 1) / 255).astype(np.intp)
    values = table[index].astype(np.uint32)
    return (values >> 8 if bits > 8 else values).astype(np.uint8)


def _palette(item: dict[str, Any]) -> Pixels | None:
    """The (256, 3) RGB table of an optical path item's palette, or None without a whole one."""
    tables = [_lut(item, color) for color in ("Red", "Green", "Blue")]
    if any(table is None for table in tables):
        return None
    return np.stack([t for t in tables if t is not None], axis=1)


def _clip(viewport: Viewport | None, width: int, height: int) -> tuple[int, int, int, int]:
    """The viewport's source region within a ``width`` x ``height`` image (the whole by default)."""
    if viewport is None or viewport.region is None:
        return 0, 0, width, height
    sx, sy, sw, sh = viewport.region
    if sx >= width or sy >= height:
        raise RequestError("viewport", f"the region starts outside the {width} x {height} image")
    return sx, sy, min(sw, width - sx), min(sh, height - sy)


def _image(data: bytes, media_type: str, cache: str, etag: str | None = None) -> Response:
    headers = {"Cache-Control": cache, "Vary": "Accept"}
    if etag is not None:
        headers["ETag"] = etag
    return Response(data, media_type=media_type, headers=headers)


def frame_etag(row: InstanceRow, number: int, options: RenderOptions) -> str:
    """The strong ETag of a rendered frame: its instance's stored object (by content), the frame,
    and what was asked (media type, viewport, quality, window): the same tag, the same bytes.
    Computed before anything is read, so a revalidation costs no read."""
    key = f"{row.sop_instance_uid}|{row.blob_sha256}|{number}|{options!r}"
    return '"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'


def not_modified(request: Request, tag: str) -> bool:
    """Whether the request's If-None-Match names ``tag`` (or ``*``)."""
    return frames.matches(request.headers.get("if-none-match"), tag)


def _frame_headers(tag: str) -> dict[str, str]:
    """The headers a 304 repeats (RFC 9110 15.4.5): its validator and caching."""
    return {"ETag": tag, "Cache-Control": _CACHE_FRAME, "Vary": "Accept"}


def routes(max_pixels: int = MAX_RENDERED_PIXELS) -> list[BaseRoute]:
    """The rendered and thumbnail routes, for ``dicomweb.routes()``."""
    return Renderer(max_pixels).routes()
