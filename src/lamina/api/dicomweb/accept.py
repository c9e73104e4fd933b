"""The Accept header of a WADO-RS request, read as PS3.18 8.7 says."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom import uid


@dataclass(frozen=True)
class MediaRange:
    """One acceptable answer: ``multipart/related; type="application/octet-stream";
    transfer-syntax=...`` is media type multipart/related with ``part_type`` and ``transfer_syntax``."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def part_type(self) -> str:
        """The media type of each part (``type=`` of a multipart range, or the type itself)."""
        if self.media_type == "multipart/related":
            return self.params.get("type", "application/octet-stream").lower()
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(header: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges in the client's order of preference (``*/*`` when there is no header)."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = []
    for index, item in enumerate(_split(header, ",")):
        pieces = _split(item, ";")
        media_type = pieces[0].strip().lower()
        if not media_type:
            continue
        params: dict[str, str] = {}
        quality = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            elif name:
                params[name] = value
        ranges.append((-quality, index, MediaRange(media_type, params, quality)))
    return [entry[2] for entry in sorted(ranges)] or [MediaRange("*/*")]


#: PS3.18 Table 8.7.3-4 and 8.7.3-5: the media type that carries bulk data (a frame) of each
#: transfer syntax. Uncompressed data is ``application/octet-stream``; compressed data has its own.
BULK_MEDIA_TYPES: dict[str, str] = {
    uid.ExplicitVRLittleEndian: "application/octet-stream",
    uid.JPEGBaseline8Bit: "image/jpeg",
    uid.JPEGExtended12Bit: "image/jpeg",
    uid.JPEGLossless: "image/jpeg",
    uid.JPEGLosslessSV1: "image/jpeg",
    uid.JPEGLSLossless: "image/jls",
    uid.JPEGLSNearLossless: "image/jls",
    uid.JPEG2000Lossless: "image/jp2",
    uid.JPEG2000: "image/jp2",
    uid.JPEG2000MCLossless: "image/jpx",
    uid.JPEG2000MC: "image/jpx",
    uid.HTJ2KLossless: "image/jphc",
    uid.HTJ2KLosslessRPCL: "image/jphc",
    uid.HTJ2K: "image/jphc",
    uid.RLELossless: "image/dicom-rle",
}

#: Transfer syntaxes whose pixel data has lost information: a server holding only these may
#: send them when the client names no transfer syntax (PS3.18 8.7.3.3).
LOSSY_SYNTAXES = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLSNearLossless,
        uid.JPEG2000,
        uid.JPEG2000MC,
        uid.HTJ2K,
    }
)


def bulk_media_type(transfer_syntax: str) -> str:
    """The media type of bulk data in ``transfer_syntax`` (``application/octet-stream`` when the
    syntax has none of its own)."""
    return BULK_MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")


def bulk_part_type(transfer_syntax: str) -> str:
    """The Content-Type of one part of bulk data: its media type and its transfer syntax."""
    return f"{bulk_media_type(transfer_syntax)}; transfer-syntax={transfer_syntax}"
