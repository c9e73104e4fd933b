"""Datasets as DICOM JSON (PS3.18 Annex F), computed once at ingest and stored compressed.

Bulk data (Pixel Data, ICC profiles and other large binary values) is not inlined: each such
element gets a ``BulkDataURI`` relative to its instance (``bulkdata/<tag path>``), which the
server makes absolute when it answers, so that the stored form does not depend on the host.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

#: Binary values at least this long go out as bulk data.
BULK_DATA_THRESHOLD = 1024
RELATIVE_PREFIX = "bulkdata/"
_PIXEL_DATA = {"vr": "OB", "BulkDataURI": f"{RELATIVE_PREFIX}7FE00010"}


def _path_handler() -> Any:
    """pydicom calls the handler with the element only; the tag path is tracked here."""

    def handler(element: DataElement) -> str:
        return f"{RELATIVE_PREFIX}{element.tag:08X}"

    return handler


def to_json(dataset: Dataset, with_pixel_data: bool = True) -> dict[str, Any]:
    """The dataset's DICOM JSON; top-level and nested bulk data referenced, not inlined."""
    data: dict[str, Any] = dataset.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_element_handler=_path_handler()
    )
    _nest_paths(data, "")
    # the offset tables describe one encoding of the frames, not the image: not metadata
    data.pop("7FE00001", None)
    data.pop("7FE00002", None)
    if with_pixel_data:
        data["7FE00010"] = dict(_PIXEL_DATA)
    return data


def _nest_paths(data: dict[str, Any], prefix: str) -> None:
    """Give nested bulk data a path through its sequence items: ``00480105/0/00282000``."""
    for tag, element in data.items():
        if "BulkDataURI" in element:
            element["BulkDataURI"] = f"{RELATIVE_PREFIX}{prefix}{tag}"
        if element.get("vr") == "SQ":
            for index, item in enumerate(element.get("Value", [])):
                _nest_paths(item, f"{prefix}{tag}/{index}/")


def pack(data: dict[str, Any]) -> bytes:
    return zlib.compress(orjson.dumps(data), 6)


def unpack(blob: bytes) -> bytes:
    """The stored JSON text (still with relative bulk data URIs)."""
    return zlib.decompress(blob)


def absolute(json_text: bytes, instance_url: str) -> bytes:
    """Make the relative bulk data URIs of stored JSON absolute for ``instance_url``."""
    return json_text.replace(
        f'"BulkDataURI":"{RELATIVE_PREFIX}'.encode(),
        f'"BulkDataURI":"{instance_url}/{RELATIVE_PREFIX}'.encode(),
    )
