"""Zeiss CZI samples, written with libCZI's writer (pylibCZIrw).

* :func:`write_czi`: a brightfield slide as Axio Scan writes one in layout: Bgr24 camera tiles of
  512x512 (blue first) that overlap their neighbours by 32 pixels, as stitched mosaics do, with
  the scaling, the objective and the acquisition time in the metadata. The tiles are stored
  uncompressed (libCZI's writer has no JPEG XR, the codec of real scans), which the independent
  reader slideio also reads.
* :func:`write_czi_fluorescence`: grey 16-bit channels with focal planes, named and coloured.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lamina.sample.content import SlideContent

__all__ = ["MPP", "TILE", "write_czi", "write_czi_fluorescence"]

TILE = 512
OVERLAP = 32
MPP = 0.2195  # an Axio Scan 20x objective's pixel size, µm


def _write(
    path: Path,
    planes: dict[tuple[int, int], NDArray[np.generic]],
    mpp: float,
    names: dict[int, str] | None = None,
    z_step_um: float | None = None,
) -> None:
    import pylibCZIrw.czi as pyczi

    path.unlink(missing_ok=True)
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for (c, z), pixels in planes.items():
            height, width = pixels.shape[:2]
            step = TILE - OVERLAP
            for top in range(0, max(1, height - OVERLAP), step):
                for left in range(0, max(1, width - OVERLAP), step):
                    tile = np.ascontiguousarray(pixels[top : top + TILE, left : left + TILE])
                    writer.write(tile, location=(left, top), plane={"C": c, "Z": z, "T": 0})
        writer.write_metadata(
            document_name=path.stem,
            channel_names=names,
            scale_x=mpp * 1e-6,
            scale_y=mpp * 1e-6,
            scale_z=z_step_um * 1e-6 if z_step_um else None,
        )
    _deterministic(path)


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_FILE_GUIDS = slice(32 + 16, 32 + 48)  # PrimaryFileGuid and FileGuid of the ZISRAWFILE segment


def _deterministic(path: Path) -> None:
    """Replace the random GUIDs libCZI's writer puts in the file header and in each subblock's
    metadata (RetilingId) by ones derived from the file's name, so that the same slide makes the
    same bytes (the samples are deterministic)."""
    data = bytearray(path.read_bytes())
    base = uuid.uuid5(uuid.NAMESPACE_URL, f"lamina-sample:{path.name}")
    data[_FILE_GUIDS] = base.bytes + base.bytes
    count = iter(range(1 << 62))

    def derived(match: re.Match[bytes]) -> bytes:
        return str(uuid.uuid5(base, str(next(count)))).encode()

    path.write_bytes(_UUID.sub(derived, bytes(data)))


def write_czi(path: Path, slide: SlideContent) -> Path:
    """Write the slide's tissue as a brightfield CZI (``path``, ``.czi``); returns ``path``."""
    bgr = np.ascontiguousarray(slide.pixels[..., ::-1])
    _write(path, {(0, 0): bgr}, MPP)
    return path


def write_czi_fluorescence(
    path: Path,
    size: tuple[int, int] = (700, 600),
    channels: tuple[str, ...] = ("DAPI", "FITC"),
    planes: int = 3,
    seed: int = 0,
) -> tuple[Path, NDArray[np.uint16]]:
    """Write grey 16-bit ``channels`` x ``planes`` of ``size`` (width, height); returns the path and
    the pixels written, shape ``(channels, planes, height, width)``."""
    rng = np.random.default_rng(seed)
    width, height = size
    data = rng.integers(0, 4096, (len(channels), planes, height, width), dtype=np.uint16)
    _write(
        path,
        {(c, z): data[c, z] for c in range(len(channels)) for z in range(planes)},
        0.325,
        names=dict(enumerate(channels)),
        z_step_um=0.5,
    )
    return path, data
