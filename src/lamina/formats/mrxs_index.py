"""3DHISTECH MRXS: ``Slidedat.ini`` and ``Index.dat`` read with bounds, as OpenSlide reads them.

Every count, pointer, offset and length is checked against the size of the file it points into
before anything is read; a damaged file is refused with a :class:`CorruptSourceError` naming the
file and the part. The layout is the one of OpenSlide's MIRAX reader (``openslide-vendor-mirax.c``):
``Index.dat`` is ``01.02``, the slide id, a pointer to the hierarchical table (one pointer per zoom
level to a list of pages of ``(image index, offset, length, file number)``) and one to the
non-hierarchical table (one pointer per record: the position buffer, the macro, the label...).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import CorruptSourceError, MissingMetadataError, UnsupportedFormatError

_DAMAGED = "the slide's files are damaged or truncated: copy the slide again from the scanner"
_MAX_SLIDEDAT = 1 << 20
_VERSION = b"01.02"
_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "BMP24": "BMP"}
_POSITION_RECORD = 9

Ini = dict[str, dict[str, str]]


def read_ini(path: Path) -> Ini:
    """Slidedat.ini as GLib's key file reads it: ``[group]``, ``key = value``, ``#`` comments; a
    UTF-8 byte order mark and lines of a value without a key (seen in real files) are skipped."""
    try:
        size = path.stat().st_size
        if size > _MAX_SLIDEDAT:
            raise CorruptSourceError(path, f"{size} bytes, more than the 1 MiB of a Slidedat.ini; {_DAMAGED}")
        raw = path.read_bytes()
    except OSError as exc:
        raise MissingMetadataError(path, f"cannot be read ({exc.strerror})") from exc
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptSourceError(path, f"not text (byte {exc.start}); {_DAMAGED}") from exc
    groups: Ini = {}
    group: dict[str, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "=")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = groups.setdefault(line[1:-1], {})
        elif "=" in line and group is not None:
            key, value = line.split("=", 1)
            group[key.strip()] = value.strip()
        else:
            raise CorruptSourceError(path, f"line {number} is neither [group] nor key = value; {_DAMAGED}")
    return groups


class Keys:
    """Typed access to Slidedat.ini whose errors name the group and the key."""

    def __init__(self, path: Path, ini: Ini) -> None:
        self.path = path
        self.ini = ini

    def text(self, group: str, key: str) -> str:
        value = self.ini.get(group, {}).get(key)
        if value is None:
            raise MissingMetadataError(self.path, f"no {key} in [{group}]; {_DAMAGED}")
        return value

    def integer(self, group: str, key: str, minimum: int = 0) -> int:
        value = self.text(group, key)
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise CorruptSourceError(
                self.path,
                f"[{group}] {key} = {value!r}, not a whole number >= {minimum}; {_DAMAGED}",
            )
        return number

    def real(self, group: str, key: str) -> float:
        value = self.text(group, key)
        try:
            return float(value)
        except ValueError:
            raise CorruptSourceError(
                self.path, f"[{group}] {key} = {value!r}, not a number; {_DAMAGED}"
            ) from None


@dataclass(frozen=True)
class ZoomLevel:
    """One ``Slide zoom level`` section."""

    section: str
    image_format: str  # JPEG, PNG or BMP
    image_size: tuple[int, int]
    concat_exponent: int
    mpp: tuple[float, float]
    overlap: tuple[float, float]
    fill_rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Record:
    """Where a camera image (or a non-hierarchical record) lies: its Data file and bytes."""

    index: int
    file: int
    offset: int
    length: int


@dataclass(frozen=True)
class Slidedat:
    """What Slidedat.ini says about the slide."""

    slide_id: str
    across: int
    down: int
    divisions: int
    objective: float | None
    levels: tuple[ZoomLevel, ...]
    index_file: str
    data_files: tuple[str, ...]
    #: Non-hierarchical record numbers (None: absent).
    positions: int | None
    stitching: int | None
    macro: int | None
    label: int | None
    ini: Ini


def _nonhier(keys: Keys, name: str, value: str | None = None) -> tuple[int, str | None] | None:
    """The record number of NONHIER name (and value), and the value's section, as OpenSlide counts
    them (records follow each other across names)."""
    group = "HIERARCHICAL"
    count = keys.integer(group, "NONHIER_COUNT")
    offset = 0
    for number in range(count):
        values = keys.integer(group, f"NONHIER_{number}_COUNT", 1)
        if keys.text(group, f"NONHIER_{number}_NAME") == name:
            if value is None:
                return offset, None
            for item in range(values):
                if keys.text(group, f"NONHIER_{number}_VAL_{item}") == value:
                    return offset + item, keys.ini[group].get(f"NONHIER_{number}_VAL_{item}_SECTION")
            return None
        offset += values
    return None


def _associated(keys: Keys, value: str, type_key: str) -> int | None:
    found = _nonhier(keys, "Scan data layer", value)
    if found is None:
        return None
    record, section = found
    if section is None or keys.ini.get(section, {}).get(type_key, "JPEG") != "JPEG":
        return None  # OpenSlide too reads JPEG associated images only
    return record


def read_slidedat(path: Path) -> Slidedat:
    keys = Keys(path, read_ini(path))
    general, hier = "GENERAL", "HIERARCHICAL"
    for group in (general, hier, "DATAFILE"):
        if group not in keys.ini:
            raise MissingMetadataError(path, f"no [{group}] group; {_DAMAGED}")
    if keys.integer(hier, "HIER_COUNT", 1) < 1 or keys.text(hier, "HIER_0_NAME") != "Slide zoom level":
        raise UnsupportedFormatError(path, "the first hierarchy (HIER_0) is not the slide zoom levels")
    count = keys.integer(hier, "HIER_0_COUNT", 1)
    levels = []
    for number in range(count):
        section = keys.text(hier, f"HIER_0_VAL_{number}_SECTION")
        if section not in keys.ini:
            raise MissingMetadataError(path, f"no [{section}] (zoom level {number}); {_DAMAGED}")
        name = keys.text(section, "IMAGE_FORMAT")
        if name not in _FORMATS:
            raise UnsupportedFormatError(
                path, f"zoom level {number} holds {name} images: lamina reads JPEG, PNG and BMP24"
            )
        bgr = (
            keys.integer(section, "IMAGE_FILL_COLOR_BGR")
            if "IMAGE_FILL_COLOR_BGR" in keys.ini[section]
            else 0xFFFFFF
        )
        levels.append(
            ZoomLevel(
                section,
                _FORMATS[name],
                (keys.integer(section, "DIGITIZER_WIDTH", 1), keys.integer(section, "DIGITIZER_HEIGHT", 1)),
                keys.integer(section, "IMAGE_CONCAT_FACTOR", 0 if number == 0 else 1),
                (keys.real(section, "MICROMETER_PER_PIXEL_X"), keys.real(section, "MICROMETER_PER_PIXEL_Y")),
                (keys.real(section, "OVERLAP_X"), keys.real(section, "OVERLAP_Y")),
                (bgr & 0xFF, bgr >> 8 & 0xFF, bgr >> 16 & 0xFF),
            )
        )
    if sum(level.concat_exponent for level in levels) > 30:
        raise CorruptSourceError(path, f"the IMAGE_CONCAT_FACTORs add up to more than 30; {_DAMAGED}")
    files = tuple(
        keys.text("DATAFILE", f"FILE_{n}") for n in range(keys.integer("DATAFILE", "FILE_COUNT", 1))
    )
    divisions = 1
    if "CameraImageDivisionsPerSide" in keys.ini[general]:
        divisions = keys.integer(general, "CameraImageDivisionsPerSide", 1)
    objective: float | None = None
    try:
        objective = float(keys.ini[general].get("OBJECTIVE_MAGNIFICATION", "").rstrip("x")) or None
    except ValueError:
        objective = None
    position = _nonhier(keys, "VIMSLIDE_POSITION_BUFFER")
    stitching = _nonhier(keys, "StitchingIntensityLayer") if position is None else None
    return Slidedat(
        slide_id=keys.text(general, "SLIDE_ID"),
        across=keys.integer(general, "IMAGENUMBER_X", 1),
        down=keys.integer(general, "IMAGENUMBER_Y", 1),
        divisions=divisions,
        objective=objective,
        levels=tuple(levels),
        index_file=keys.text(hier, "INDEXFILE"),
        data_files=files,
        positions=None if position is None else position[0],
        stitching=None if stitching is None else stitching[0],
        macro=_associated(keys, "ScanDataLayer_SlideThumbnail", "THUMBNAIL_IMAGE_TYPE"),
        label=_associated(keys, "ScanDataLayer_SlideBarcode", "BARCODE_IMAGE_TYPE"),
        ini=keys.ini,
    )


class IndexFile:
    """Index.dat in memory (a few bytes per camera image), read with bounds."""

    def __init__(self, path: Path, slide_id: str, data_sizes: tuple[int, ...]) -> None:
        self.path = path
        self.data_sizes = data_sizes
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise MissingMetadataError(
                path, f"cannot be read ({exc.strerror}): copy the folder {path.parent.name} whole"
            ) from exc
        head = _VERSION + slide_id.encode("ascii", "replace")
        if not self.data.startswith(head):
            raise CorruptSourceError(
                path,
                f"does not begin with version 01.02 and the slide id of Slidedat.ini; {_DAMAGED}",
            )
        self.hier_root = len(head)
        self.nonhier_root = self.hier_root + 4

    def int32(self, at: int, what: str) -> int:
        if not 0 <= at <= len(self.data) - 4:
            raise CorruptSourceError(
                self.path,
                f"{what} at byte {at} lies outside its {len(self.data)} bytes; {_DAMAGED}",
            )
        value: int = struct.unpack_from("<i", self.data, at)[0]
        return value

    def _record(self, index: int, offset: int, length: int, file: int, what: str) -> Record:
        if offset < 0 or length <= 0 or not 0 <= file < len(self.data_sizes):
            raise CorruptSourceError(
                self.path,
                f"{what} has offset {offset}, length {length} in data file {file} "
                f"(of {len(self.data_sizes)}); {_DAMAGED}",
            )
        return Record(index, file, offset, length)

    def zoom_level(self, level: int) -> list[Record]:
        """The camera images of zoom level ``level``, following the pages' links."""
        table = self.int32(self.hier_root, "the hierarchical root")
        head = self.int32(table + 4 * level, f"the pointer of zoom level {level}")
        if self.int32(head, f"the list of zoom level {level}") != 0:
            raise CorruptSourceError(
                self.path, f"the list of zoom level {level} does not begin with 0; {_DAMAGED}"
            )
        page = self.int32(head + 4, f"the first page of zoom level {level}")
        records: list[Record] = []
        seen: set[int] = set()
        while True:
            if page in seen:
                raise CorruptSourceError(self.path, f"the pages of zoom level {level} loop; {_DAMAGED}")
            seen.add(page)
            count = self.int32(page, f"a page length of zoom level {level}")
            following = self.int32(page + 4, f"a page link of zoom level {level}")
            end = page + 8 + 16 * count
            if count < 0 or end > len(self.data):
                raise CorruptSourceError(
                    self.path,
                    f"a page of zoom level {level} holds {count} images past its end; {_DAMAGED}",
                )
            for at in range(page + 8, end, 16):
                index, offset, length, file = struct.unpack_from("<iiii", self.data, at)
                if index < 0:
                    raise CorruptSourceError(
                        self.path, f"zoom level {level} has image index {index}; {_DAMAGED}"
                    )
                records.append(
                    self._record(index, offset, length, file, f"image {index} of zoom level {level}")
                )
            if following == 0:
                return records
            page = following

    def nonhier(self, number: int, what: str) -> Record:
        """Non-hierarchical record ``number`` (its data page's first item)."""
        table = self.int32(self.nonhier_root, "the non-hierarchical root")
        head = self.int32(table + 4 * number, f"the pointer of the {what}")
        if self.int32(head, f"the list of the {what}") != 0:
            raise CorruptSourceError(self.path, f"the list of the {what} does not begin with 0; {_DAMAGED}")
        page = self.int32(head + 4, f"the page of the {what}")
        if self.int32(page, f"the page of the {what}") < 1:
            raise CorruptSourceError(self.path, f"the page of the {what} is empty; {_DAMAGED}")
        offset, length, file = (self.int32(page + at, f"the {what}") for at in (16, 20, 24))
        return self._record(number, offset, length, file, f"the {what}")


def positions_from(
    data: bytes, compressed: bool, count: int, concat: int, path: Path
) -> list[tuple[int, int]]:
    """The camera positions (level-0 pixels) of the position buffer or the stitching layer."""
    expected = _POSITION_RECORD * count
    if compressed:
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, expected + 1)
        except zlib.error as exc:
            raise CorruptSourceError(
                path, f"the stitching layer's positions cannot be inflated ({exc}); {_DAMAGED}"
            ) from exc
    if len(data) != expected:
        raise CorruptSourceError(
            path,
            f"the position map holds {len(data)} bytes, {count} camera positions need {expected}; {_DAMAGED}",
        )
    out = []
    for at in range(0, expected, _POSITION_RECORD):
        flag, x, y = struct.unpack_from("<Bii", data, at)
        if flag & 0xFE:
            raise CorruptSourceError(path, f"the position buffer has flag {flag} at byte {at}; {_DAMAGED}")
        out.append((x * concat, y * concat))
    return out
