"""The metadata of Olympus/Evident cellSens VSI slides: the ``.vsi`` file's property tree.

A VSI slide is a ``NAME.vsi`` file and a folder ``_NAME_/stackN/frame_t_*.ets`` holding the tiles
(:mod:`lamina.formats.ets`). The ``.vsi`` is a little-endian classic TIFF whose first page is a
small JPEG preview; right after the 8-byte TIFF header, at byte offset 8, starts Olympus's binary
property tree, which says what the ETS files do not: each image stack's name, true size, pixel
spacing, which tile coordinate index is Z, C or T, the channels, the objective, the date.

The tree is made of *volumes*. A volume is a 24-byte header (size 24, magic 21321, version, the
int64 offset of its first field from the header, the field count in the low 28 bits of ``flags``)
and a chain of fields. A field is a 16-byte header (int32 type, int32 tag, uint32 offset of the
next field from the volume header -- 0 for the last --, int32 data size), an int32 second tag when
bit 27 of the type is set (an index: which image, frame, dimension or channel), then:

- when bit 28 is set (extended), a nested structure given by the low 24 bits of the type: 0, a
  sequence of volumes whose data ends ``data size + field header`` bytes after the *enclosing*
  volume's header; 1 or 2, one volume right after the field header; others (10, a TIFF IFD; 11,
  vector data) are skipped;
- else a value of the low 24 bits' type (UTF-16 text, integers, doubles, vectors of them, RGB
  triples), stored after the header, or, when bit 30 is set, the data size itself.

The tags used (Bio-Formats ``CellSensReader`` and slideio ``vsi/vsitags.hpp`` name them):

- document (tag 2): 34 product name, 35 product version -> ``software``;
- the collection (2000) holds one multidimensional image volume (2001, second tag: its index) per
  image stack; in it:

  - 2003 the size of each dimension (in the order of the dimension descriptions);
  - the first image frame (2002) with external file properties (2018): 2053 image boundary
    (x, y, width, height) -> ``size``;
  - stack properties (2005): 2030 stack name, 2074 stack type, 2015 creation time (Unix seconds),
    2019 pixel spacing in 2020's unit, 2043 microscope (a list of devices whose optical properties,
    120114, hold 120060 objective magnification, 120061 numerical aperture and 100049 the
    camera's bit depth), 21000/175122 the stack's folder name (``stack1``);
  - dimension descriptions (2007, second tag *d*: coordinate index ``d + 2`` in the ETS file),
    each with dimension parameters (2008) whose 2023 says the dimension (1 Z, 2 T, 3 lambda,
    4 C, 9 phase); Z's 2013 is the Z step; C's parameters, one per channel (second tag), hold
    2419 channel name, 2417 emission wavelength, 2474 excitation wavelength (cellSens writes the
    dye's excitation maximum there; neither reader names it) and 2004 the display LUT.

  A physical value (a step, a wavelength) is a volume with 268435456 (its unit, as ``10^-6m^1``)
  and 268435458 (the value).

Read as Bio-Formats (``CellSensReader.readTags``) and slideio (``vsi/vsifile.cpp``) read it. The
parser is bounded: every offset, count and length is checked against the file's size before it
is used, nesting is at most :data:`MAX_DEPTH` volumes deep, fields of a volume only go forward,
and the number of fields and volumes read is at most one per 16 bytes of the file.
"""

from __future__ import annotations

import enum
import math
import mmap
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lamina.errors import CorruptSourceError, UnsupportedFormatError
from lamina.formats.ets import EtsAxes

VOLUME_HEADER = struct.Struct("<HHIqII")  # 24 bytes
FIELD_HEADER = struct.Struct("<iiIi")  # 16 bytes
VOLUME_MAGIC = 21321
MAX_DEPTH = 32  # the real file nests 9 deep
MAX_TEXT_BYTES = 1 << 16  # a name or a unit; longer text is not one we read

# field type bits
_EXTRA_TAG = 0x08000000
_EXTENDED = 0x10000000
_INLINE = 0x40000000
_NEW_VOLUME_HEADER, _PROPERTY_SET_VOLUME, _NEW_MDIM_VOLUME_HEADER = 0, 1, 2

# value types: struct code per item
_SCALARS = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "q", 8: "Q", 9: "f", 10: "d"}
_SCALARS |= {12: "B", 14: "I", 17: "q", 18: "d", 271: "I", 272: "I", 273: "I"}
_INT_VECTORS = {256, 257, 258, 259, 267, 274, 275, 276, 277, 8195, 8199, 8200, 8470}
_DOUBLE_VECTORS = {11, 260, 261, 262, 263, 264, 265, 266, 268, 279, 280}
_TEXT = {13, 8192}
_RGB, _BGR = 269, 270

# tags
DOCUMENT, PRODUCT_NAME, PRODUCT_VERSION = 2, 34, 35
COLLECTION, IMAGE_VOLUME, IMAGE_FRAME, DIMENSION_SIZE = 2000, 2001, 2002, 2003
STACK_PROPERTIES, DIMENSION_DESCRIPTION, DIMENSION_PARAMETERS = 2005, 2007, 2008
EXTERNAL_FILE, IMAGE_BOUNDARY = 2018, 2053
STACK_NAME, STACK_TYPE, CREATION_TIME = 2030, 2074, 2015
RWC_FRAME_SCALE, RWC_FRAME_UNIT, MICROSCOPE = 2019, 2020, 2043
STACK_EXTRA, STACK_FOLDER = 21000, 175122
OPTICAL_PROPERTIES, OBJECTIVE_MAG, NUMERICAL_APERTURE, BIT_DEPTH = 120114, 120060, 120061, 100049
DIMENSION_INDEX, Z_INCREMENT = 2023, 2013
CHANNEL_NAME, DIMENSION_NAME, EMISSION, EXCITATION, DISPLAY_LUT = 2419, 2021, 2417, 2474, 2004
UNITS, VALUE = 268435456, 268435458
TIFF_MAKE, TIFF_MODEL = 271, 272

_UNIT = re.compile(r"10\^(-?\d+)m\^1")  # cellSens writes lengths as "10^-6m^1"
_FOLDER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


class VsiStackType(enum.IntEnum):
    """Stack properties' 2074 (slideio ``vsi::StackType``); a stack without it is an image."""

    IMAGE = 0
    OVERVIEW = 1
    SAMPLE_MASK = 2
    FOCUS_IMAGE = 4
    EFI_SHARPNESS_MAP = 8
    EFI_HEIGHT_MAP = 16
    EFI_TEXTURE_MAP = 32
    EFI_STACK = 64
    MACRO = 256
    FOCUS_POINTS = 1024
    UNKNOWN = 0xFFFF


@dataclass(frozen=True)
class VsiChannel:
    """One channel of a fluorescence stack.

    ``excitation_nm`` and ``emission_nm`` are the dye's maxima cellSens records (tags 2474 and
    2417), not the laser line; ``None`` where the file does not say. ``color`` is the display
    LUT's tint (its last entry), as (red, green, blue)."""

    name: str
    excitation_nm: float | None
    emission_nm: float | None
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class VsiImage:
    """One image stack (a "scene"), stored in one ``stackN`` folder of ETS files.

    ``axes`` says which tile coordinate index is Z, C and T in its ETS file, for
    :func:`lamina.formats.ets.read_ets`; ``channels`` is empty for a stack with no C dimension
    (a brightfield RGB scan). Every other field is ``None`` where the file does not say it."""

    name: str
    stack: str | None
    size: tuple[int, int] | None
    pixel_spacing_um: tuple[float, float] | None
    z_spacing_um: float | None
    z_planes: int
    channels: tuple[VsiChannel, ...]
    axes: EtsAxes
    objective_power: float | None
    objective_na: float | None
    bit_depth: int | None
    acquired: datetime | None
    stack_type: VsiStackType = VsiStackType.IMAGE


@dataclass(frozen=True)
class VsiDocument:
    """A ``.vsi`` file's metadata.

    ``images`` are the stacks of type image (stack type 0, or a stack whose properties do not
    say); ``other_images`` the rest, in file order, each with its ``stack_type``: overview,
    macro, sample mask, focus and EFI maps. ``manufacturer`` and ``model_name`` are the TIFF
    page's Make and Model (cellSens writes the camera there); ``software`` is the document's
    product name and version (``OLYMPUS cellSens Dimension 3.1``)."""

    path: Path
    images: tuple[VsiImage, ...]
    manufacturer: str | None
    model_name: str | None
    software: str | None
    other_images: tuple[VsiImage, ...] = ()


def read_vsi(path: Path | str) -> VsiDocument:
    """Read a ``.vsi`` file's property tree and the TIFF page's Make and Model (no pixels).

    Raises
    ------
    UnsupportedFormatError
        Not a little-endian TIFF with a cellSens property volume at byte offset 8.
    CorruptSourceError
        An offset, count or length that does not fit the file, a field chain that goes back, or
        volumes nested too deep; the message names the field and its byte offset.
    """
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(8 + VOLUME_HEADER.size)
        size = fh.seek(0, 2)
        if len(head) < 8 + VOLUME_HEADER.size or head[:4] != b"II*\0":
            raise UnsupportedFormatError(
                path,
                f"not a cellSens VSI file: it does not start with a little-endian TIFF header "
                f"(got {head[:4]!r})",
            )
        if VOLUME_HEADER.unpack_from(head, 8)[:2] != (VOLUME_HEADER.size, VOLUME_MAGIC):
            raise UnsupportedFormatError(
                path, "not a cellSens VSI file: a TIFF without the cellSens property volume at byte offset 8"
            )
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            tree = _Tree(path, buf, size)
            root = _Field(tag=-2, second=-1, kind=0, inline=False, at=0, data_at=8, size=0)
            tree.volume(8, 1, root.children)
            make, model = _tiff_make_model(path, buf, size)
            return _document(path, tree, root, make, model)


@dataclass(slots=True)
class _Field:
    tag: int
    second: int  # -1: none
    kind: int  # the value type, or the extended type for a nested structure
    inline: bool
    at: int  # byte offset of the field header
    data_at: int
    size: int  # data size, or the value when inline
    extended: bool = False
    children: list[_Field] = field(default_factory=list)

    def child(self, tag: int) -> _Field | None:
        return next((c for c in self.children if c.tag == tag), None)

    def each(self, tag: int) -> Iterator[_Field]:
        return (c for c in self.children if c.tag == tag)

    def path(self, *tags: int) -> _Field | None:
        node: _Field | None = self
        for tag in tags:
            node = node.child(tag) if node is not None else None
        return node


class _Tree:
    """Reads volumes into :class:`_Field` lists, checking each offset against the file's size."""

    def __init__(self, path: Path, buf: mmap.mmap | bytes, size: int) -> None:
        self.path, self.buf, self.size = path, buf, size
        self.budget = size // 16 + 1  # one field or volume per 16 bytes at most

    def corrupt(self, message: str) -> CorruptSourceError:
        return CorruptSourceError(
            self.path, f"VSI property tree: {message}: the file is truncated or damaged"
        )

    def spend(self, at: int) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise self.corrupt(f"more fields than the file can hold (at byte offset {at}): a loop")

    def is_volume(self, at: int) -> bool:
        return at + VOLUME_HEADER.size <= self.size and VOLUME_HEADER.unpack_from(self.buf, at)[:2] == (
            VOLUME_HEADER.size,
            VOLUME_MAGIC,
        )

    def volume(self, at: int, depth: int, into: list[_Field]) -> int:
        """Read the volume at ``at`` into ``into``; return the byte offset where its data ends."""
        self.spend(at)
        if depth > MAX_DEPTH:
            raise self.corrupt(f"the volume at byte offset {at} is nested more than {MAX_DEPTH} deep")
        if at + VOLUME_HEADER.size > self.size:
            raise self.corrupt(
                f"the volume header at byte offset {at} ends past the end of the file ({self.size} bytes)"
            )
        header_size, magic, _version, first, flags, _ = VOLUME_HEADER.unpack_from(self.buf, at)
        if (header_size, magic) != (VOLUME_HEADER.size, VOLUME_MAGIC):
            raise self.corrupt(f"no volume header at byte offset {at} (size {header_size}, magic {magic})")
        count = flags & 0x0FFFFFFF
        if count == 0:  # an empty volume (its first-field offset is then 0)
            return at + VOLUME_HEADER.size
        field_at: int = at + first
        if first < VOLUME_HEADER.size or field_at > self.size:
            raise self.corrupt(
                f"the first-field offset {first} of the volume at byte offset {at} (at byte offset {at + 8}) "
                f"points outside the file ({self.size} bytes)"
            )
        if count * FIELD_HEADER.size > self.size - field_at:
            raise self.corrupt(
                f"the field count {count} of the volume at byte offset {at} (at byte offset {at + 16}) "
                f"does not fit the {self.size - field_at} bytes left in the file"
            )
        end = field_at
        for _ in range(count):
            node, end_of_field = self.field(at, field_at, depth)
            end = max(end, end_of_field)
            if node is None:
                break
            into.append(node)
            next_at: int = FIELD_HEADER.unpack_from(self.buf, field_at)[2]
            if next_at == 0:
                break
            if at + next_at <= field_at:
                raise self.corrupt(
                    f"the next-field offset {next_at} of tag {node.tag} (at byte offset {field_at + 8}) "
                    "points back"
                )
            field_at = at + next_at
        return end

    def field(self, volume_at: int, at: int, depth: int) -> tuple[_Field | None, int]:
        self.spend(at)
        if at + FIELD_HEADER.size > self.size:
            raise self.corrupt(
                f"the field header at byte offset {at} ends past the end of the file ({self.size} bytes)"
            )
        kind_bits, tag, _next, data_size = FIELD_HEADER.unpack_from(self.buf, at)
        pos = at + FIELD_HEADER.size
        second = -1
        if kind_bits & _EXTRA_TAG:
            if pos + 4 > self.size:
                raise self.corrupt(
                    f"the second tag of the field at byte offset {at} is past the end of the file"
                )
            (second,) = struct.unpack_from("<i", self.buf, pos)
            pos += 4
        if tag < 0:  # an end marker: both readers stop the volume here
            return None, pos
        kind, inline, extended = kind_bits & 0xFFFFFF, bool(kind_bits & _INLINE), bool(kind_bits & _EXTENDED)
        node = _Field(tag, second, kind, inline, at, pos, data_size, extended)
        where = f"tag {tag} (field at byte offset {at})"
        if extended and kind == _NEW_VOLUME_HEADER:
            # its data size counts from the enclosing volume's header, less this field's header
            data_end = volume_at + data_size + (pos - at)
            if not pos <= data_end <= self.size:
                raise self.corrupt(
                    f"{where}: its data size {data_size} (at byte offset {at + 12}) ends at byte offset "
                    f"{data_end}, outside the file ({self.size} bytes)"
                )
            start = pos
            while start + VOLUME_HEADER.size <= data_end and (start == pos or self.is_volume(start)):
                after = self.volume(start, depth + 1, node.children)
                if after <= start:
                    break
                start = after
            return node, data_end
        if extended and kind in (_PROPERTY_SET_VOLUME, _NEW_MDIM_VOLUME_HEADER):
            return node, self.volume(pos, depth + 1, node.children)
        if inline:
            return node, pos
        if data_size < 0 or pos + data_size > self.size:
            raise self.corrupt(
                f"{where}: its {data_size} bytes of data (size at byte offset {at + 12}) end past the end of "
                f"the file ({self.size} bytes)"
            )
        return node, pos + data_size

    # values

    def text(self, node: _Field | None) -> str | None:
        if (
            node is None
            or node.inline
            or node.extended
            or node.kind not in _TEXT
            or node.size > MAX_TEXT_BYTES
        ):
            return None
        raw = bytes(self.buf[node.data_at : node.data_at + node.size - node.size % 2])
        value = raw.decode("utf-16-le", errors="replace").split("\0", 1)[0].strip()
        return value or None

    def numbers(self, node: _Field | None) -> tuple[float, ...]:
        """A numeric value's items (one for a scalar); () for anything else."""
        if node is None or node.extended:
            return ()
        if node.inline:
            return (float(node.size),)
        if node.kind in _SCALARS:
            code = _SCALARS[node.kind]
        elif node.kind in _INT_VECTORS:
            code = "i"
        elif node.kind in _DOUBLE_VECTORS:
            code = "d"
        else:
            return ()
        item = struct.calcsize(code)
        count = min(node.size // item, 64)  # the vectors read are 2 to 10 long
        values = struct.unpack_from(f"<{count}{code}", self.buf, node.data_at) if count else ()
        return tuple(float(v) for v in values if math.isfinite(v))

    def number(self, node: _Field | None) -> float | None:
        values = self.numbers(node)
        return values[0] if len(values) == 1 else None

    def rgb(self, node: _Field | None) -> tuple[int, int, int] | None:
        """The last entry of an RGB or BGR array (a LUT's tint)."""
        if node is None or node.inline or node.extended or node.kind not in (_RGB, _BGR) or node.size < 3:
            return None
        at = node.data_at + (node.size // 3 - 1) * 3
        a, b, c = self.buf[at], self.buf[at + 1], self.buf[at + 2]
        return (a, b, c) if node.kind == _RGB else (c, b, a)

    def physical(self, node: _Field | None, exponent: int) -> float | None:
        """A physical value (a volume with units and value) in units of ``10**exponent`` metres;
        a value without units is taken to be in those units, as both readers take it."""
        if node is None:
            return None
        value = self.number(node.child(VALUE))
        units = self.text(node.child(UNITS))
        if value is None:
            return None
        if units is None:
            return value
        match = _UNIT.fullmatch(units)
        return value * 10.0 ** (int(match.group(1)) - exponent) if match else None


def _document(path: Path, tree: _Tree, root: _Field, make: str | None, model: str | None) -> VsiDocument:
    document = root.child(DOCUMENT)
    name = tree.text(document.child(PRODUCT_NAME)) if document else None
    version = tree.text(document.child(PRODUCT_VERSION)) if document else None
    software = " ".join(v for v in (name, version) if v) or None
    images: list[VsiImage] = []
    others: list[VsiImage] = []
    collection = root.child(COLLECTION)
    for volume in collection.each(IMAGE_VOLUME) if collection else ():
        image = _image(tree, volume)
        (images if image.stack_type is VsiStackType.IMAGE else others).append(image)
    return VsiDocument(path, tuple(images), make, model, software, tuple(others))


def _image(tree: _Tree, volume: _Field) -> VsiImage:
    props = volume.child(STACK_PROPERTIES)
    stack_type = VsiStackType.UNKNOWN if props is None else VsiStackType.IMAGE
    if props is not None and (code := tree.number(props.child(STACK_TYPE))) is not None:
        stack_type = (
            VsiStackType(int(code)) if int(code) in {t.value for t in VsiStackType} else VsiStackType.UNKNOWN
        )
    size = None
    for frame in volume.each(IMAGE_FRAME):
        bounds = tree.numbers(frame.path(EXTERNAL_FILE, IMAGE_BOUNDARY))
        if len(bounds) == 4 and bounds[2] > 0 and bounds[3] > 0:
            size = (int(bounds[2]), int(bounds[3]))
            break
    spacing = None
    if props is not None:
        scale = tree.numbers(props.child(RWC_FRAME_SCALE))
        unit = tree.text(props.child(RWC_FRAME_UNIT))
        match = _UNIT.fullmatch(unit) if unit is not None else None
        factor = 10.0 ** (int(match.group(1)) + 6) if match else (1.0 if unit is None else None)
        if len(scale) == 2 and factor is not None and scale[0] > 0 and scale[1] > 0:
            spacing = (scale[0] * factor, scale[1] * factor)
    folder = tree.text(props.path(STACK_EXTRA, STACK_FOLDER)) if props else None
    sizes = tree.numbers(volume.child(DIMENSION_SIZE))
    axes, z_planes, z_spacing, channels = _dimensions(tree, volume, sizes)
    power, na, bits = _microscope(tree, props.child(MICROSCOPE) if props else None)
    return VsiImage(
        name=(tree.text(props.child(STACK_NAME)) if props else None) or "",
        stack=folder if folder is not None and _FOLDER.fullmatch(folder) else None,
        size=size,
        pixel_spacing_um=spacing,
        z_spacing_um=z_spacing,
        z_planes=z_planes,
        channels=channels,
        axes=axes,
        objective_power=power,
        objective_na=na,
        bit_depth=bits,
        acquired=_timestamp(tree.number(props.child(CREATION_TIME)) if props else None),
        stack_type=stack_type,
    )


def _dimensions(
    tree: _Tree, volume: _Field, sizes: tuple[float, ...]
) -> tuple[EtsAxes, int, float | None, tuple[VsiChannel, ...]]:
    """The ETS axes, Z planes and step, and channels from the dimension descriptions."""
    index: dict[int, int] = {}  # dimension meaning (1 Z, 2 T, 4 C) -> description number d
    z_spacing: float | None = None
    channels: tuple[VsiChannel, ...] = ()
    for description in volume.each(DIMENSION_DESCRIPTION):
        d = description.second
        params = list(description.each(DIMENSION_PARAMETERS))
        meaning = next((tree.number(m) for p in params if (m := p.child(DIMENSION_INDEX))), None)
        if meaning is None or not 0 <= d < 16 or int(meaning) in index:
            continue
        index[int(meaning)] = d
        if meaning == 1:
            z_spacing = next((tree.physical(z, -6) for p in params if (z := p.child(Z_INCREMENT))), None)
        elif meaning == 4:
            channels = tuple(_channel(tree, p) for p in sorted(params, key=lambda p: p.second))
    z_at = index.get(1)
    z_planes = int(sizes[z_at]) if z_at is not None and z_at < len(sizes) and sizes[z_at] >= 1 else 1

    def axis(meaning: int) -> int | None:
        return index[meaning] + 2 if meaning in index else None

    return EtsAxes(z=axis(1), c=axis(4), t=axis(2)), z_planes, z_spacing, channels


def _channel(tree: _Tree, params: _Field) -> VsiChannel:
    name = tree.text(params.child(CHANNEL_NAME)) or tree.text(params.child(DIMENSION_NAME)) or ""
    lut = params.child(DISPLAY_LUT)
    return VsiChannel(
        name=name,
        excitation_nm=_positive(tree.physical(params.child(EXCITATION), -9)),
        emission_nm=_positive(tree.physical(params.child(EMISSION), -9)),
        color=tree.rgb(lut.child(VALUE)) if lut is not None else None,
    )


def _microscope(tree: _Tree, microscope: _Field | None) -> tuple[float | None, float | None, int | None]:
    """Objective magnification and NA (the device that has them) and the camera's bit depth."""
    power = na = None
    bits = None
    for device in microscope.children if microscope else ():
        optics = device.child(OPTICAL_PROPERTIES)
        if optics is None:
            continue
        if power is None and (value := _positive(tree.number(optics.child(OBJECTIVE_MAG)))) is not None:
            power, na = value, _positive(tree.number(optics.child(NUMERICAL_APERTURE)))
        if bits is None and (depth := tree.number(optics.child(BIT_DEPTH))) is not None and 1 <= depth <= 64:
            bits = int(depth)
    return power, na, bits


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _timestamp(seconds: float | None) -> datetime | None:
    if seconds is None or not 0 < seconds < 253402300800:  # before year 10000
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _tiff_make_model(path: Path, buf: mmap.mmap | bytes, size: int) -> tuple[str | None, str | None]:
    """The first TIFF page's Make and Model (ASCII tags 271 and 272)."""
    (ifd_at,) = struct.unpack_from("<I", buf, 4)
    if ifd_at + 2 > size:
        raise CorruptSourceError(
            path,
            f"the first TIFF IFD offset {ifd_at} (at byte offset 4) points past the end of the file "
            f"({size} bytes)",
        )
    (count,) = struct.unpack_from("<H", buf, ifd_at)
    if ifd_at + 2 + count * 12 > size:
        raise CorruptSourceError(
            path,
            f"the TIFF IFD at byte offset {ifd_at} ({count} entries) ends past the end of the file "
            f"({size} bytes)",
        )
    found: dict[int, str | None] = {}
    for n in range(count):
        entry = ifd_at + 2 + n * 12
        tag, kind, length, offset = struct.unpack_from("<HHII", buf, entry)
        if tag not in (TIFF_MAKE, TIFF_MODEL) or kind != 2:
            continue
        at = entry + 8 if length <= 4 else offset
        if at + length > size:
            raise CorruptSourceError(
                path,
                f"TIFF tag {tag} (entry at byte offset {entry}) has {length} bytes past the end of the file",
            )
        text = bytes(buf[at : at + min(length, MAX_TEXT_BYTES)]).split(b"\0", 1)[0]
        found[tag] = text.decode("ascii", errors="replace").strip() or None
    return found.get(TIFF_MAKE), found.get(TIFF_MODEL)
