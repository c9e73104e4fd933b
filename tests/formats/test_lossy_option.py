"""``lamina ingest --lossy QUALITY``: pixels lamina must re-encode are written as JPEG at that
quality, recorded in each instance; without it they are lossless; copied tiles never change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import generate_frames

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.formats import codec
from lamina.model.geometry import SizeMm
from tests.support import dciodvfy_errors, ingest_path, shared_file, stored_file

pytestmark = pytest.mark.backend_independent

DEFLATE = "aperio-synthetic/boxes.tiff"  # tiled, Deflate: decoded and re-encoded
JPEG = "aperio/CMU-1-Small-Region.svs"  # JPEG tiles: copied


def _level0(archive: Archive, slide_id: str, tmp_path: Path) -> Path:
    base = next(r for r in archive.catalog.instances(slide_id) if r.level == 0)
    return stored_file(archive.store, base.blob_sha256, tmp_path / "stored")


@pytest.mark.parametrize("quality", [None, 80])
def test_re_encoded_pixels_are_lossless_unless_lossy_is_asked(
    archive: Archive, ingestor: Ingestor, tmp_path: Path, quality: int | None
) -> None:
    # Act
    result = ingest_path(
        ingestor, shared_file(DEFLATE), pixel_spacing=SizeMm.from_mpp(0.5), lossy_quality=quality
    )
    # Assert
    assert result.status == "ingested", result.reason
    path = _level0(archive, result.slide_id or "", tmp_path)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    source = tifffile.imread(shared_file(DEFLATE), level=0)
    frame = next(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    size = (int(ds.Columns), int(ds.Rows))
    if quality is None:
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
        assert ds.LossyImageCompression == "00"
        pixels = codec.decode(frame, codec.lossless_encoding(3, "jpeg-ls"), size)
        rows, cols = min(size[1], source.shape[0]), min(size[0], source.shape[1])
        assert np.array_equal(pixels[:rows, :cols], source[:rows, :cols])
        return
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(ds.LossyImageCompressionRatio) > 1
    pixels = codec.decode(frame, codec.lossy_encoding(3), size).astype(float)
    rows, cols = min(size[1], source.shape[0]), min(size[0], source.shape[1])
    error = np.mean((pixels[:rows, :cols] - source[:rows, :cols]) ** 2)
    assert 10 * np.log10(255**2 / max(error, 1e-9)) > 30  # close, not equal: JPEG at quality 80


def test_copied_tiles_are_never_re_encoded(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    # Act
    result = ingest_path(ingestor, shared_file(JPEG), lossy_quality=10)
    # Assert: level 0's frames are the scanner's JPEG tiles, whatever the quality asked
    assert result.status == "ingested", result.reason
    ds = pydicom.dcmread(_level0(archive, result.slide_id or "", tmp_path))
    with tifffile.TiffFile(shared_file(JPEG)) as tiff:
        page = tiff.pages[0]
        fh = tiff.filehandle
        fh.seek(page.dataoffsets[0])
        first_tile = fh.read(page.databytecounts[0])
    frame = next(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    assert frame.rstrip(b"\0").endswith(first_tile[2:].rstrip(b"\0"))  # the entropy-coded data as stored


def test_jpeg_ls_is_the_other_lossless_choice(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    # Act
    result = ingest_path(
        ingestor, shared_file(DEFLATE), pixel_spacing=SizeMm.from_mpp(0.5), lossless="jpeg-ls"
    )
    # Assert: every level JPEG-LS lossless, every pixel of level 0 the source's
    assert result.status == "ingested", result.reason
    rows = [r for r in archive.catalog.instances(result.slide_id or "") if r.level is not None]
    assert {r.transfer_syntax_uid for r in rows} == {pydicom.uid.JPEGLSLossless}
    path = _level0(archive, result.slide_id or "", tmp_path)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "RGB" and ds.LossyImageCompression == "00"
    source = tifffile.imread(shared_file(DEFLATE), level=0)
    size = (int(ds.Columns), int(ds.Rows))
    frame = next(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    pixels = codec.decode(frame, codec.lossless_encoding(3, "jpeg-ls"), size)
    rows_, cols = min(size[1], source.shape[0]), min(size[0], source.shape[1])
    assert np.array_equal(pixels[:rows_, :cols], source[:rows_, :cols])


def test_jpeg_ls_keeps_16_bit_samples() -> None:
    samples = np.random.default_rng(1).integers(0, 65535, (64, 48, 1), dtype=np.uint16)
    encoding = codec.lossless_encoding(1, "jpeg-ls")
    assert np.array_equal(codec.decode(codec.encode(samples, encoding), encoding), samples)
