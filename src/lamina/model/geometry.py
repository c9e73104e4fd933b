"""Value types that carry their unit in their name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SizePx:
    """A size in pixels (width = columns, height = rows)."""

    width: int
    height: int

    def tiles(self, tile: SizePx) -> SizePx:
        """How many tiles of size ``tile`` cover this size (the last row and column may be partial)."""
        return SizePx(-(-self.width // tile.width), -(-self.height // tile.height))

    @property
    def area(self) -> int:
        return self.width * self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class SizeMm:
    """A pixel spacing or a physical size in millimetres (width = along columns)."""

    width: float
    height: float

    def scaled(self, factor: float) -> SizeMm:
        return SizeMm(self.width * factor, self.height * factor)

    @classmethod
    def from_mpp(cls, mpp_x: float, mpp_y: float | None = None) -> SizeMm:
        """From micrometres per pixel, the unit scanners print."""
        return cls(mpp_x / 1000.0, (mpp_x if mpp_y is None else mpp_y) / 1000.0)

    @property
    def mpp(self) -> float:
        return self.width * 1000.0
