"""The Accept header of a WADO-RS request, read as PS3.18 8.7 says."""

from __future__ import annotations

from dataclasses import dataclass, field


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
