"""Lossless: the DICOM frames are the source's compressed tiles, and decode to the same pixels."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import tifffile
from pydicom.encaps import generate_frames

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.formats.codec import jpeg_info
from lamina.model.geometry import SizeMm
from tests.support import ingest_path, shared_file, stored_file


def _level0_frames(archive: Archive, slide_id: str, folder: Path) -> tuple[pydicom.Dataset, list[bytes]]:
    row = next(r for r in archive.catalog.instances(slide_id) if r.level == 0)
    ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, folder))
    return ds, list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


def _source_tiles(path: Path) -> tuple[tifffile.TiffPage, list[bytes]]:
    tiff = tifffile.TiffFile(path)
    page = tiff.pages[0]
    handle = tiff.filehandle
    tiles = []
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        handle.seek(offset)
        tiles.append(handle.read(count))
    return page, tiles


def _entropy_coded(stream: bytes) -> bytes:
    """The bytes after the start-of-scan header: what a re-encode would change."""
    sos = stream.index(b"\xff\xda")
    length = int.from_bytes(stream[sos + 2 : sos + 4], "big")
    return stream[sos + 2 + length :].rstrip(b"\x00")


def test_every_level0_tile_of_real_jpeg_svs_is_copied_and_decodes_identically(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange
    source = shared_file("aperio/CMU-1-Small-Region.svs")
    # Act
    result = ingest_path(ingestor, source)
    # Assert
    assert result.status == "ingested", result.reason
    ds, frames = _level0_frames(archive, result.slide_id or "", tmp_path)
    page, tiles = _source_tiles(source)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.LossyImageCompression == "01"
    assert len(frames) == len(tiles) == 130
    for index, (frame, tile) in enumerate(zip(frames, tiles, strict=True)):
        assert _entropy_coded(frame) == _entropy_coded(tile), f"tile {index} was re-encoded"
        expected, _, _ = page.decode(tile, index, jpegtables=page.jpegtables)
        decoded = imagecodecs.jpeg8_decode(frame)
        assert np.array_equal(np.asarray(expected).reshape(decoded.shape), decoded), f"tile {index}"
    # Aperio's RGB-coded JPEG is marked as such, so any decoder gets the same colours
    assert jpeg_info(frames[0]).rgb_coded
    assert ds.PhotometricInterpretation == "RGB"


def test_every_level0_tile_of_real_jpeg2000_svs_is_byte_identical(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    source = shared_file("aperio/tcga-cr-7395-01a-01-ts1.svs")
    result = ingest_path(ingestor, source, pixel_spacing=SizeMm.from_mpp(0.25))
    assert result.status == "ingested", result.reason
    ds, frames = _level0_frames(archive, result.slide_id or "", tmp_path)
    page, tiles = _source_tiles(source)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    assert ds.LossyImageCompressionMethod == "ISO_15444_1"
    assert len(frames) == len(tiles)
    for index, (frame, tile) in enumerate(zip(frames, tiles, strict=True)):
        assert frame.rstrip(b"\x00") == tile.rstrip(b"\x00"), f"tile {index} differs"
    for index in (0, len(tiles) // 2, len(tiles) - 1):
        expected, _, _ = page.decode(tiles[index], index)
        decoded = imagecodecs.jpeg2k_decode(frames[index])
        assert np.array_equal(np.asarray(expected).reshape(decoded.shape), decoded)


def test_dicom_input_frames_are_copied_byte_for_byte(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    source = shared_file("dicom-wsi2dcm/jpeg.dicom")
    original = pydicom.dcmread(source)
    expected = list(generate_frames(original.PixelData, number_of_frames=int(original.NumberOfFrames)))
    result = ingest_path(ingestor, source)
    assert result.status == "ingested", result.reason
    ds, frames = _level0_frames(archive, result.slide_id or "", tmp_path)
    assert [f.rstrip(b"\x00") for f in frames] == [f.rstrip(b"\x00") for f in expected]
    # identity is kept, never re-invented
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.StudyInstanceUID == original.StudyInstanceUID
    assert ds.SeriesInstanceUID == original.SeriesInstanceUID


def test_uncompressed_and_jpegls_inputs_are_reencoded_losslessly(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    for name in ("dicom-wsi2dcm/raw.dicom", "dicom-highdicom/sm_image_jpegls.dcm"):
        source = shared_file(name)
        original = pydicom.dcmread(source)
        result = ingest_path(ingestor, source)
        assert result.status == "ingested", result.reason
        ds, frames = _level0_frames(archive, result.slide_id or "", tmp_path)
        # a re-encoded pyramid is JPEG-LS lossless (codec.lossless_codec_of)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
        assert ds.LossyImageCompression == "00"
        decoded = np.stack([imagecodecs.jpegls_decode(frame) for frame in frames])
        assert np.array_equal(decoded.reshape(original.pixel_array.shape), original.pixel_array), name


def test_frame_index_points_at_each_frame(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    result = ingest_path(ingestor, shared_file("aperio/CMU-1-Small-Region.svs"))
    for row in archive.catalog.instances(result.slide_id or ""):
        ds = pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path))
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        offsets = np.frombuffer(row.frame_offsets, "<u8")
        lengths = np.frombuffer(row.frame_lengths, "<u4")
        assert len(offsets) == len(frames) == row.number_of_frames
        for frame, offset, length in zip(frames, offsets, lengths, strict=True):
            # the index records the frame's own length; its item may carry one pad byte
            assert len(frame) - int(length) in (0, 1)
            assert archive.store.read_range(row.blob_sha256, int(offset), int(length)) == frame[: int(length)]
