"""OME-TIFF pyramid sample, as exported by QuPath or bfconvert.

Written with tifffile's OME writer:

* OME image 0, named after the specimen ID: level 0 in the first main IFD,
  256x256 JPEG tiles (YCbCr 4:2:0, self-contained), with the reduced levels
  (downsampled by 2 until the short side is at most one tile) in its SubIFDs
  (NewSubfileType = 1). ``Pixels`` carries ``PhysicalSizeX/Y`` in um.
* OME image 1 ``label`` and OME image 2 ``macro``: one-strip JPEG images, the
  naming that opentile and QuPath use for associated images.

The OME-XML sits in the ImageDescription of the first IFD, with a UUID
derived from the specimen ID (so the file is reproducible); tifffile reports
``is_ome`` and opentile opens the file with its OME-TIFF tiler.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from lamina.sample.content import SlideContent, pyramid
from lamina.sample.identity import Identity

__all__ = ["MPP", "TILE", "write_ome_tiff"]

TILE = 256
MPP = 0.325
QUALITY = 85


def _physical(mpp: float) -> dict[str, Any]:
    return {
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }


def write_ome_tiff(path: Path, slide: SlideContent, identity: Identity) -> Path:
    """Write a pyramidal OME-TIFF with label and macro images.

    Parameters
    ----------
    path : pathlib.Path
        Output file (``.ome.tiff``).
    slide : SlideContent
        Tissue, label and macro pixels.
    identity : Identity
        The specimen ID names the main OME image.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    levels = pyramid(slide.pixels, 2, TILE)
    jpeg: dict[str, Any] = {
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": QUALITY},
        "subsampling": (2, 2),
        "software": False,
        "maxworkers": 2,
    }
    per_cm = 1e4 / MPP
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(
            levels[0],
            subifds=len(levels) - 1,
            tile=(TILE, TILE),
            resolution=(per_cm, per_cm),
            resolutionunit="CENTIMETER",
            metadata={
                "axes": "YXS",
                "Name": identity.specimen_id,
                "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"lamina-sample:{identity.specimen_id}")),
                **_physical(MPP),
            },
            **jpeg,
        )
        for level in levels[1:]:
            scale = slide.pixels.shape[1] / level.shape[1]
            tif.write(
                level,
                subfiletype=1,
                tile=(TILE, TILE),
                resolution=(per_cm / scale, per_cm / scale),
                resolutionunit="CENTIMETER",
                **jpeg,
            )
        for name, image in (("label", slide.label), ("macro", slide.overview)):
            pixels = np.asarray(image.convert("RGB"))
            tif.write(
                pixels,
                rowsperstrip=pixels.shape[0],
                metadata={"axes": "YXS", "Name": name},
                **jpeg,
            )
    return path
