"""Source slide -> DICOM WSI instances, streamed, with the frame index recorded.

One series per scan; one instance per pyramid level (TILED_FULL) plus LABEL, OVERVIEW and
THUMBNAIL. Frames a source hands over in a DICOM transfer syntax are copied byte for byte;
anything else is decoded and re-encoded (losslessly when the pixels were never lossy).

An instance is written in one pass: the dataset, an Extended Offset Table (the frame lengths
are known before the frames are read), then the frames. The byte offset of every frame inside
the written object is returned so that a tile can later be served by one ranged read.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from lamina.errors import CorruptSourceError, LaminaError, StorageError
from lamina.formats import codec
from lamina.formats.dicom_header import tag_trail, trail_words
from lamina.formats.dicom_modules import SeriesContext, build_dataset
from lamina.formats.pyramid import GeneratedLevel, complete_pyramid
from lamina.formats.source import Buffer, FrameEncoding, Pixels, SlideSource, SourceImage
from lamina.model.enums import (
    DerivedPixelContrastValues,
    ImageFlavorValues,
    LossyImageCompressionMethodValues,
    LossyImageCompressionValues,
    PixelDataCharacteristicsValues,
    image_type,
)
from lamina.model.geometry import SizeMm
from lamina.model.slide import SlideIdentity

_ITEM = struct.Struct("<II")
_ITEM_TAG = 0xE000FFFE
_PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_EMPTY_BOT = _ITEM.pack(_ITEM_TAG, 0)
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_CHUNK = 4 << 20
_SPOOL_IN_MEMORY = 64 << 20

#: Attributes lamina computes for the frames it writes; never copied from a DICOM source.
_CONTROLLED = {
    "PixelData",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "DimensionOrganizationType",
    "PerFrameFunctionalGroupsSequence",
    "DimensionIndexSequence",
    "DimensionOrganizationSequence",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "SOPInstanceUID",
    "SpecificCharacterSet",
    "NumberOfOpticalPaths",
    "TotalPixelMatrixFocalPlanes",
}


class Sink(Protocol):
    def write_parts(self, parts: list[Buffer], size: int) -> object:
        """Write the concatenation of ``parts`` (``size`` bytes in all; buffers stay untouched
        until written)."""


@dataclass(frozen=True)
class PlannedInstance:
    """What will be written for one image, decided before anything is written."""

    image: SourceImage
    sop_instance_uid: str
    image_type: list[str]
    instance_number: int
    level: int | None  # pyramid level index for VOLUME images
    encoding: FrameEncoding
    copy: bool  # frames copied as stored (True) or re-encoded (False)
    #: JPEG quality of re-encoded lossy frames
    quality: int = codec.JPEG_QUALITY


@dataclass(frozen=True)
class WrittenInstance:
    plan: PlannedInstance
    size: int
    frame_offsets: npt.NDArray[np.uint64]
    frame_lengths: npt.NDArray[np.uint32]
    dataset: Dataset
    repairs: tuple[str, ...]

    @property
    def lossy(self) -> bool:
        return str(self.dataset.get("LossyImageCompression", "")) == LossyImageCompressionValues.LOSSY


def _image_type(image: SourceImage, level: int | None) -> list[str]:
    if image.dataset is not None and "ImageType" in image.dataset and not isinstance(image, GeneratedLevel):
        return [str(value) for value in image.dataset.ImageType]
    original, derived = PixelDataCharacteristicsValues.ORIGINAL, PixelDataCharacteristicsValues.DERIVED
    none, resampled = DerivedPixelContrastValues.NONE, DerivedPixelContrastValues.RESAMPLED
    if image.flavor is ImageFlavorValues.VOLUME:
        if level == 0:
            return image_type(original, ImageFlavorValues.VOLUME, none)
        return image_type(derived, ImageFlavorValues.VOLUME, resampled)
    if image.flavor is ImageFlavorValues.THUMBNAIL:
        return image_type(derived, ImageFlavorValues.THUMBNAIL, resampled)
    return image_type(original, image.flavor, none)


def describe_image(plan: PlannedInstance) -> str:
    """How a reason names an image: ``level 2``, ``level 5 (computed from level 4)``, ``the label``."""
    if plan.level is None:
        return f"the {plan.image.flavor.lower()} image"
    if isinstance(plan.image, GeneratedLevel):
        return f"level {plan.level} (computed from level {plan.level - 1})"
    return f"level {plan.level}"


def plan_slide(
    source: SlideSource,
    new_uid: Callable[[], str],
    lossy_quality: int | None = None,
    lossless: str = codec.DEFAULT_LOSSLESS,
) -> list[PlannedInstance]:
    """Every instance the slide becomes: the full pyramid, then the associated images.

    ``lossy_quality`` (``lamina ingest --lossy QUALITY``, 1 to 100): the 8-bit pixels lamina
    re-encodes are written as JPEG at that quality instead of losslessly; frames copied as stored
    stay as they are, and samples of more than 8 bits stay lossless. ``lossless``
    (``--lossless``): the codec of pixel-exact frames, ``auto`` or one of
    ``codec.LOSSLESS_CODECS`` (:func:`codec.lossless_codec_of`)."""
    images: list[tuple[SourceImage, int | None]] = [
        (image, level) for level, image in enumerate(complete_pyramid(source.levels))
    ]
    base = images[0][0]
    lossless = codec.lossless_codec_of(lossless, base.encoding is not None)
    for image in source.associated:
        if image.flavor is ImageFlavorValues.THUMBNAIL and image.pixel_spacing is None and base.pixel_spacing:
            # a thumbnail shows the whole base level: its spacing follows from the sizes
            image.pixel_spacing = SizeMm(
                base.pixel_spacing.width * base.size.width / image.size.width,
                base.pixel_spacing.height * base.size.height / image.size.height,
            )
        images.append((image, None))
    plans = []
    for number, (image, level) in enumerate(images, start=1):
        copy = image.encoding is not None
        quality = codec.JPEG_QUALITY
        if copy:
            assert image.encoding is not None
            encoding = image.encoding
        elif image.bits_stored > 8:
            # JPEG baseline holds 8 bits: deeper samples are kept lossless
            encoding = codec.lossless_encoding(image.samples_per_pixel, lossless)
        elif image.source_lossy and (isinstance(image, GeneratedLevel) or image.lossy_ratio is None):
            # computed pixels of a lossy slide (JPEG keeps the pyramid's size in proportion), or
            # lossy pixels whose compression ratio is unknown (DICOM needs one: ours is known)
            encoding = codec.lossy_encoding(image.samples_per_pixel)
        else:
            encoding = codec.lossless_encoding(image.samples_per_pixel, lossless)
        if not copy and lossy_quality is not None and image.bits_stored <= 8:
            encoding, quality = codec.lossy_encoding(image.samples_per_pixel), lossy_quality
        kept = image.dataset is not None and not isinstance(image, GeneratedLevel)
        uid = str(image.dataset.SOPInstanceUID) if kept else new_uid()
        plans.append(
            PlannedInstance(image, uid, _image_type(image, level), number, level, encoding, copy, quality)
        )
    return plans


#: Frames encoded side by side (the encoders release the GIL); decoding stays in one thread, since
#: not every reader's ``decode_tile`` may be called from several.
_ENCODERS = os.cpu_count() or 1


class TileObserver(Protocol):
    """Told of every tile decoded to be re-encoded (the next level is made from them): ``half``
    runs in the encoders' threads, ``place`` in frame order."""

    def half(self, col: int, row: int, pixels: Pixels) -> Pixels: ...

    def place(self, col: int, row: int, z: int, c: int, half: Pixels) -> None: ...


def _encode_tile(
    pixels: Pixels, encoding: FrameEncoding, quality: int, observer: TileObserver | None, col: int, row: int
) -> tuple[bytes, Pixels | None]:
    """One tile's frame, and its half for the next level (in an encoder's thread)."""
    half = observer.half(col, row, pixels) if observer is not None else None
    return codec.encode(pixels, encoding, quality, 1), half


def _encoded_frames(
    image: SourceImage,
    encoding: FrameEncoding,
    path: Path | None,
    name: str,
    quality: int,
    on_tile: TileObserver | None = None,
) -> Iterator[bytes]:
    """The image's tiles decoded and encoded again, in frame order. Tiles are decoded one after
    the other and encoded by a pool of one thread per core, at most two tiles per thread ahead
    (memory: a few tiles). A tile that cannot be decoded is refused here with the image and the
    tile (the readers name the page or frame when they know it)."""
    grid = image.grid
    with ThreadPoolExecutor(_ENCODERS, thread_name_prefix="lamina-encode") as pool:
        pending: deque[tuple[tuple[int, int, int, int], Future[tuple[bytes, Pixels | None]]]] = deque()

        def done() -> bytes:
            (col, row, z, c), future = pending.popleft()
            frame, half = future.result()
            if on_tile is not None and half is not None:
                on_tile.place(col, row, z, c, half)
            return frame

        for z, c in image.planes():
            for row in range(grid.height):
                for col in range(grid.width):
                    try:
                        pixels = image.decode_tile(col, row, z, c)
                    except LaminaError:
                        raise
                    except Exception as exc:
                        where = f"tile ({col}, {row})" + (
                            f" of focal plane {z + 1}, channel {c + 1}"
                            if image.frame_count > grid.area
                            else ""
                        )
                        raise CorruptSourceError(
                            path or Path("?"),
                            f"{name}, {where} cannot be decoded: {codec.damage(exc)}; "
                            "the file is damaged: copy it again from the scanner",
                        ) from exc
                    task = pool.submit(_encode_tile, pixels, encoding, quality, on_tile, col, row)
                    pending.append(((col, row, z, c), task))
                    if len(pending) >= 2 * _ENCODERS:
                        yield done()
        while pending:
            yield done()


#: What a generated level must not take from the level it was computed from.
_OWN_TO_GENERATED = {
    "ImageType",
    "SharedFunctionalGroupsSequence",
    "ImagedVolumeWidth",
    "ImagedVolumeHeight",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
}


def _origin_dataset(image: SourceImage) -> Dataset | None:
    """The DICOM source's dataset an image descends from (generated levels: their ancestor's)."""
    while isinstance(image, GeneratedLevel):
        image = image.parent
    return image.dataset if isinstance(image.dataset, Dataset) else None


def _overlay(built: Dataset, original: Dataset, generated: bool) -> tuple[str, ...]:
    """Keep the source's attributes over lamina's defaults; return what lamina had to add."""
    skip = _CONTROLLED | _OWN_TO_GENERATED if generated else _CONTROLLED
    repairs = (
        ()
        if generated
        else tuple(
            element.keyword
            for element in built
            if element.keyword and element.keyword not in original and element.keyword not in _CONTROLLED
        )
    )
    for tag in list(original.keys()):
        # private attributes are not kept, nor decoded (a damaged one must not stop the copy)
        if tag.group in (0x0002, 0x7FE0) or tag.is_private:
            continue
        element = original[tag]
        if element.keyword in skip:
            continue
        if element.keyword == "SharedFunctionalGroupsSequence":
            _merge_shared(built, element.value)
            continue
        if element.keyword == "ImagedVolumeDepth" and not element.value:
            continue
        if element.value in (None, "", b"") and element.keyword in built:
            continue  # an empty type 2 value where lamina knows better
        built[element.tag] = element
    return repairs


def _merge_shared(built: Dataset, original: Sequence[Dataset]) -> None:
    """The source's shared functional groups over lamina's, keeping lamina's where the source's
    are missing or invalid (no WholeSlideMicroscopyImageFrameTypeSequence, zero SliceThickness)."""
    if not original:
        return
    ours, theirs = built.SharedFunctionalGroupsSequence[0], original[0]
    for element in theirs:
        if element.keyword == "PixelMeasuresSequence" and element.value:
            measures = element.value[0]
            if "PixelSpacing" not in measures:
                continue
            if not measures.get("SliceThickness"):
                measures.SliceThickness = ours.PixelMeasuresSequence[0].SliceThickness
        ours[element.tag] = element


def write_instance(
    plan: PlannedInstance,
    ctx: SeriesContext,
    sink: Sink,
    spool_dir: Path | None = None,
    on_tile: TileObserver | None = None,
) -> WrittenInstance:
    """Write one Part-10 object to ``sink`` and return where each frame landed in it.

    ``on_tile`` is told of every tile of an image that is re-encoded (the next level is made from
    them: :mod:`lamina.formats.quarters`)."""
    image = plan.image
    lengths = image.frame_lengths() if plan.copy else None
    spool = None
    if lengths is None:
        spool = tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(spool_dir) if spool_dir else None)  # noqa: SIM115 - closed below
        frames = (
            image.iter_frames()
            if plan.copy
            else _encoded_frames(
                image, plan.encoding, ctx.source_path, describe_image(plan), plan.quality, on_tile
            )
        )
        collected = []
        for frame in frames:
            spool.write(frame)
            collected.append(len(frame))
        lengths = collected
        spool.seek(0)
    length_array = np.asarray(lengths, dtype=np.uint64)
    padded = length_array + (length_array & 1)
    sample_bytes = 2 if image.bits_stored > 8 else 1
    raw = image.frame_count * image.tile_size.area * image.samples_per_pixel * sample_bytes
    total = int(length_array.sum())
    lossy: tuple[str, float | None] | None = None
    if plan.encoding.lossy_method is not None:
        # these frames are lossy: the ratio is theirs
        lossy = (plan.encoding.lossy_method, raw / total if total else None)
    elif image.source_lossy:
        # stored losslessly, but the pixels went through a lossy compression before
        lossy = (image.lossy_method or LossyImageCompressionMethodValues.ISO_10918_1, image.lossy_ratio)
    dataset = build_dataset(
        ctx, image, plan.encoding, plan.sop_instance_uid, plan.image_type, plan.instance_number, lossy
    )
    repairs: tuple[str, ...] = ()
    origin = _origin_dataset(image)
    if origin is not None:
        repairs = _overlay(dataset, origin, isinstance(image, GeneratedLevel))
    item_starts = np.concatenate(([0], np.cumsum(padded + 8)[:-1])).astype(np.uint64)
    dataset.ExtendedOffsetTable = item_starts.astype("<u8").tobytes()
    dataset.ExtendedOffsetTableLengths = padded.astype("<u8").tobytes()
    header = io.BytesIO()
    try:
        pydicom.dcmwrite(header, dataset, enforce_file_format=True)
    except Exception as exc:  # a value kept from a DICOM source that pydicom cannot encode
        trail = tag_trail(exc)
        raise CorruptSourceError(
            ctx.source_path or Path("?"),
            f"{describe_image(plan)}: {trail_words(trail) if trail else 'an attribute'} cannot be "
            "written as DICOM; the file is damaged: export it again from the source system",
        ) from exc
    head = header.getvalue() + _PIXEL_DATA_HEADER + _EMPTY_BOT
    sink.write_parts([head], len(head))
    written = _stream_frames(
        sink, iter_spool(spool, lengths) if spool is not None else image.iter_frame_parts(), lengths
    )
    sink.write_parts([_SEQ_DELIMITER], len(_SEQ_DELIMITER))
    if spool is not None:
        spool.close()
    offsets = (item_starts + np.uint64(len(head) + 8)).astype(np.uint64)
    size = len(head) + written + len(_SEQ_DELIMITER)
    return WrittenInstance(plan, size, offsets, length_array.astype(np.uint32), dataset, repairs)


def iter_spool(
    spool: tempfile.SpooledTemporaryFile[bytes], lengths: Sequence[int]
) -> Iterator[Sequence[Buffer]]:
    for length in lengths:
        yield (spool.read(length),)


def _stream_frames(sink: Sink, frames: Iterator[Sequence[Buffer]], lengths: Sequence[int]) -> int:
    """Write each frame as an item, in batches of a few MB of buffers (no copy in Python);
    check that every frame has the length announced in the offset table."""
    batch: list[Buffer] = []
    pending = written = count = 0
    pack = _ITEM.pack
    for parts, expected in zip(frames, lengths, strict=False):
        size = len(parts[0]) if len(parts) == 1 else sum(map(len, parts))
        if size != expected:
            raise StorageError(f"frame {count + 1} is {size} bytes, {expected} were announced")
        odd = size & 1
        batch.append(pack(_ITEM_TAG, size + odd))
        batch.extend(parts)
        if odd:
            batch.append(b"\x00")
        count += 1
        pending += 8 + size + odd
        if pending >= _CHUNK:
            sink.write_parts(batch, pending)
            written += pending
            batch, pending = [], 0
    if count != len(lengths):
        raise StorageError(f"{count} frames read, {len(lengths)} expected")
    if batch:
        sink.write_parts(batch, pending)
        written += pending
    return written


def series_context(
    source: SlideSource,
    identity_override: SlideIdentity | None,
    new_uid: Callable[[], str],
    container_id: str,
    created: dt.datetime,
) -> SeriesContext:
    """UIDs kept from a DICOM source, otherwise made for this scan."""
    meta = source.metadata
    identity = meta.identity
    if identity_override is not None:
        identity = identity.merged(identity_override)
    return SeriesContext(
        study_instance_uid=meta.study_instance_uid or new_uid(),
        series_instance_uid=meta.series_instance_uid or new_uid(),
        frame_of_reference_uid=meta.frame_of_reference_uid or new_uid(),
        dimension_organization_uid=new_uid(),
        specimen_uid=new_uid(),
        container_id=identity.container_id or container_id,
        identity=identity,
        metadata=meta,
        created=created,
        source_path=source.path,
    )
