"""Synthetic but realistic whole-slide image files, for demos and tests.

:func:`write_samples` writes one slide per requested format into a folder,
each with its own fake patient and specimen, plus ``manifest.csv`` mapping
every file to its identity::

    from pathlib import Path
    from lamina.sample import write_samples

    samples = write_samples(Path("demo"))            # every format, 4096x3072
    samples = write_samples(Path("t"), ["aperio_svs"], size=(1024, 768), seed=3)

The formats imitate what the vendors' and third-party writers produce (see
the modules :mod:`~lamina.sample.svs`, :mod:`~lamina.sample.tiff`,
:mod:`~lamina.sample.dicom`, :mod:`~lamina.sample.ome`,
:mod:`~lamina.sample.philips`, :mod:`~lamina.sample.ndpi`,
:mod:`~lamina.sample.histech`, :mod:`~lamina.sample.mrxs`). Output is
deterministic for a given seed, and a format's slide does not depend on which
other formats are written with it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import InvalidValueError
from lamina.sample.content import SlideContent, make_slide
from lamina.sample.identity import MANIFEST_FIELDS, Identity, make_identity

__all__ = ["MANIFEST_HEADER", "SAMPLE_FORMATS", "SampleFile", "write_samples"]

SAMPLE_FORMATS: tuple[str, ...] = (
    "aperio_svs",
    "tiled_tiff",
    "dicom_wsi",
    "ome_tiff",
    "philips_tiff",
    "hamamatsu_ndpi",
    "histech_tiff",
    "zeiss_czi",
    "leica_scn",
    "roche_bif",
    "mirax_mrxs",
)
"""Formats :func:`write_samples` can write, in the default order."""

MANIFEST_HEADER: tuple[str, ...] = ("file", *MANIFEST_FIELDS)
"""Header row of ``manifest.csv``."""

_MIN_SIDE = 64
#: The number of formats when the first samples were written: a format's tissue comes from
#: ``seed * 7 + its index``, so that adding a format changes no other format's sample.
_SEED_STRIDE = 7


@dataclass(frozen=True)
class SampleFile:
    """One written sample slide.

    Attributes
    ----------
    path : pathlib.Path
        The file, or the folder of a DICOM WSI series.
    format : str
        One of :data:`SAMPLE_FORMATS`.
    identity : dict of str to str
        The manifest columns (``patient_id`` ... ``diagnosis_code``).
    """

    path: Path
    format: str
    identity: dict[str, str]


def _write_svs(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.svs import write_svs

    return write_svs(dest / "aperio_svs.svs", slide, identity, seed)


def _write_tiff(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.tiff import write_tiled_tiff

    return write_tiled_tiff(dest / "tiled_tiff.tiff", slide)


def _write_dicom(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.dicom import write_dicom_wsi

    folder = dest / "dicom_wsi"
    if folder.is_dir():
        for stale in folder.glob("*.dcm"):
            stale.unlink()
    return write_dicom_wsi(folder, slide, identity, seed)


def _write_ome(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.ome import write_ome_tiff

    return write_ome_tiff(dest / "ome_tiff.ome.tiff", slide, identity)


def _write_philips(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.philips import write_philips_tiff

    return write_philips_tiff(dest / "philips_tiff.tiff", slide, identity)


def _write_ndpi(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.ndpi import write_ndpi

    return write_ndpi(dest / "hamamatsu_ndpi.ndpi", slide, identity)


def _write_histech(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.histech import write_histech_tiff

    return write_histech_tiff(dest / "histech_tiff.tiff", slide)


def _write_czi(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.czi import write_czi

    return write_czi(dest / "zeiss_czi.czi", slide)


def _write_scn(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.scn import write_scn

    return write_scn(dest / "leica_scn.scn", slide, identity)


def _write_mrxs(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.mrxs import write_mrxs

    return write_mrxs(dest / "mirax_mrxs.mrxs", slide, identity)


def _write_bif(dest: Path, slide: SlideContent, identity: Identity, seed: int) -> Path:
    from lamina.sample.bif import write_bif

    return write_bif(dest / "roche_bif.bif", slide, identity)


_WRITERS: dict[str, Callable[[Path, SlideContent, Identity, int], Path]] = {
    "aperio_svs": _write_svs,
    "tiled_tiff": _write_tiff,
    "dicom_wsi": _write_dicom,
    "ome_tiff": _write_ome,
    "philips_tiff": _write_philips,
    "hamamatsu_ndpi": _write_ndpi,
    "histech_tiff": _write_histech,
    "zeiss_czi": _write_czi,
    "leica_scn": _write_scn,
    "roche_bif": _write_bif,
    "mirax_mrxs": _write_mrxs,
}


def _check(formats: Sequence[str] | None, size: tuple[int, int]) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    chosen = list(dict.fromkeys(SAMPLE_FORMATS if formats is None else formats))
    for name in chosen:
        if name not in _WRITERS:
            valid = ", ".join(SAMPLE_FORMATS)
            raise InvalidValueError(f"unknown sample format {name!r}; valid formats: {valid}")
    if len(size) != 2 or min(size) < _MIN_SIDE:
        raise InvalidValueError(f"size must be (width, height) of at least {_MIN_SIDE} px, got {size}")
    return chosen


def write_samples(
    dest: Path,
    formats: Sequence[str] | None = None,
    *,
    size: tuple[int, int] = (4096, 3072),
    seed: int = 0,
    label_size: tuple[int, int] = (387, 463),
    overview_size: tuple[int, int] = (1280, 431),
) -> list[SampleFile]:
    """Write synthetic whole-slide images and their ``manifest.csv``.

    Parameters
    ----------
    dest : pathlib.Path
        Output folder, created if missing. Sample files of the same names are
        overwritten.
    formats : sequence of str, optional
        Formats to write, from :data:`SAMPLE_FORMATS` (default: all of them).
        Duplicates are written once.
    size : tuple of int, optional
        ``(width, height)`` of level 0, default 4096x3072.
    seed : int, optional
        Seed of the tissue pixels, the identities and the UIDs.
    label_size, overview_size : tuple of int, optional
        ``(width, height)`` of the label and macro photos, default Aperio's 387x463 and
        1280x431 (smaller ones make small files, e.g. the fuzzing corpus).

    Returns
    -------
    list of SampleFile
        One per format, in the requested order.

    Raises
    ------
    lamina.errors.InvalidValueError
        (a ValueError) For an unknown format (the message lists the valid ones) or a size
        smaller than 64 pixels.
    """
    chosen = _check(formats, size)
    dest.mkdir(parents=True, exist_ok=True)
    samples = []
    for name in chosen:
        index = SAMPLE_FORMATS.index(name)
        identity = make_identity(seed, index)
        slide = make_slide(identity, size, seed * _SEED_STRIDE + index, label_size, overview_size)
        path = _WRITERS[name](dest, slide, identity, seed)
        samples.append(SampleFile(path, name, identity.as_dict()))
    with (dest / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_HEADER)
        for sample in samples:
            row = [sample.path.name, *(sample.identity[key] for key in MANIFEST_FIELDS)]
            writer.writerow(row)
    return samples
