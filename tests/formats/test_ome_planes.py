"""OME-TIFF of channels and focal planes: a 16-bit fluorescence z-stack with a SubIFD pyramid and an
8-bit grey z-stack, written by tifffile, become DICOM whose every plane of every channel is
tifffile's array, with the channels' optical paths and the planes' spacing; signed samples and
time series are refused in one line, with nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import generate_frames

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.formats import codec
from lamina.formats.ome_planes import ome_color, read_ome_pixels
from lamina.formats.source import FrameEncoding
from tests.support import dciodvfy_errors, ingest_path, shared_file, stored_file

pytestmark = pytest.mark.backend_independent

REAL = "ome-tiff-nonwsi/multi-channel-z-series.ome.tif"


def _stack(shape: tuple[int, ...], dtype: Any, seed: int) -> np.ndarray:
    """Smooth gradients with noise: every plane and channel different, compressible."""
    rng = np.random.default_rng(seed)
    *outer, height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    top = 4095 if dtype == np.uint16 else 255
    planes = [
        ((xx * (i + 1) + yy * 3 + i * 97) % (top + 1) + rng.integers(0, 8, (height, width))).clip(0, top)
        for i in range(int(np.prod(outer)))
    ]
    return np.asarray(planes, dtype).reshape(shape)


def _write(path: Path, data: np.ndarray, metadata: dict[str, Any], levels: int = 1, **options: Any) -> Path:
    """An OME-TIFF of ``data`` (axes in ``metadata``) whose pyramid is ``levels - 1`` SubIFDs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, ome=True) as tiff:
        tiff.write(data, tile=(128, 128), subifds=levels - 1, metadata=metadata, **options)
        for level in range(1, levels):
            step = 2**level
            tiff.write(data[..., ::step, ::step], tile=(128, 128), subfiletype=1, **options)
    return path


def _stored(archive: Archive, ingestor: Ingestor, path: Path, tmp_path: Path) -> list[pydicom.Dataset]:
    result = ingest_path(ingestor, path)
    assert result.status == "ingested", result.reason
    assert result.format == "ome_tiff"
    rows = sorted(archive.catalog.instances(result.slide_id or ""), key=lambda r: r.level or 0)
    files = [stored_file(archive.store, row.blob_sha256, tmp_path / "stored") for row in rows]
    for file in files:
        assert dciodvfy_errors(file) == [], file
    return [pydicom.dcmread(file) for file in files]


def _plane(ds: pydicom.Dataset, z: int = 0, c: int = 0) -> np.ndarray:
    """Plane (z, c) of a TILED_FULL instance, decoded and stitched (grey: 2-D)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    across = -(-int(ds.TotalPixelMatrixColumns) // cols)
    down = -(-int(ds.TotalPixelMatrixRows) // rows)
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    planes = int(ds.get("TotalPixelMatrixFocalPlanes", 1))
    encoding = FrameEncoding(ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation)
    samples = int(ds.SamplesPerPixel)
    out = np.zeros((down * rows, across * cols, samples), np.uint16 if ds.BitsAllocated == 16 else np.uint8)
    first = (z + c * planes) * across * down
    for index in range(across * down):
        row, col = divmod(index, across)
        tile = codec.decode(frames[first + index], encoding, (cols, rows))
        out[row * rows : (row + 1) * rows, col * cols : (col + 1) * cols] = tile
    out = out[: int(ds.TotalPixelMatrixRows), : int(ds.TotalPixelMatrixColumns)]
    return out[..., 0] if samples == 1 else out


def test_a_16bit_fluorescence_z_stack_is_every_plane_of_every_channel(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: 2 channels x 3 focal planes of 12 significant bits, Deflate tiles, 2 SubIFD levels
    data = _stack((2, 3, 300, 400), np.uint16, seed=1)
    metadata = {
        "axes": "CZYX",
        "PhysicalSizeX": 0.5,
        "PhysicalSizeY": 0.5,
        "PhysicalSizeZ": 2.0,
        "SignificantBits": 12,
        "Channel": {
            "Name": ["DAPI", "FITC"],
            "ExcitationWavelength": [405.0, 488.0],
            "EmissionWavelength": [461.0, 520.0],
            "Color": [-16776961, 16711935],  # blue, green (RGBA, signed)
        },
    }
    path = _write(tmp_path / "in" / "stack.ome.tif", data, metadata, levels=2, compression="zlib")
    # Act
    level0, level1, *_ = _stored(archive, ingestor, path, tmp_path)  # then levels lamina computes
    # Assert: TILED_FULL, optical path outermost, then focal plane (PS3.3 C.7.6.17.3)
    assert (level0.TotalPixelMatrixFocalPlanes, level0.NumberOfOpticalPaths) == (3, 2)
    # BitsStored is enumerated 16 for WSI (not OME's SignificantBits)
    assert (level0.BitsAllocated, level0.BitsStored, level0.PhotometricInterpretation) == (
        16,
        16,
        "MONOCHROME2",
    )
    assert level0.LossyImageCompression == "00"
    measures = level0.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(0.002)
    assert float(measures.PixelSpacing[0]) == pytest.approx(0.0005)
    paths = level0.OpticalPathSequence
    assert [p.OpticalPathDescription for p in paths] == ["DAPI (emission 461 nm)", "FITC (emission 520 nm)"]
    assert [float(p.IlluminationWaveLength) for p in paths] == [405.0, 488.0]
    assert all(p.IlluminationTypeCodeSequence[0].CodeValue == "111743" for p in paths)
    for c in range(2):
        for z in range(3):
            assert np.array_equal(_plane(level0, z, c), data[c, z]), f"channel {c + 1}, plane {z + 1}"
    assert (level1.TotalPixelMatrixColumns, level1.TotalPixelMatrixRows) == (200, 150)
    assert np.array_equal(_plane(level1, 2, 1), data[1, 2, ::2, ::2])  # the file's level, as stored


def test_an_8bit_grey_jpeg_z_stack_is_copied_plane_by_plane(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: 4 focal planes (ZYX) of JPEG tiles, no channel names
    data = _stack((4, 200, 260), np.uint8, seed=2)
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 1.5}
    path = _write(tmp_path / "in" / "z.ome.tif", data, metadata, compression="jpeg")
    # Act
    (ds, *_) = _stored(archive, ingestor, path, tmp_path)
    # Assert: the tiles copied as stored: each plane is tifffile's decoding of them
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    assert (ds.TotalPixelMatrixFocalPlanes, ds.NumberOfOpticalPaths, ds.BitsStored) == (4, 1, 8)
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(0.0015)
    assert ds.OpticalPathSequence[0].IlluminationTypeCodeSequence[0].CodeValue == "111744"
    theirs = tifffile.imread(path)
    for z in range(4):
        assert np.array_equal(_plane(ds, z), theirs[z]), f"focal plane {z + 1}"


def test_the_real_int8_file_is_refused_saying_how_to_fix_it(archive: Archive, ingestor: Ingestor) -> None:
    # Act: Bio-Formats' int8 sample, 3 channels x 5 planes
    result = ingest_path(ingestor, shared_file(REAL))
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert "int8 samples" in reason and "unsigned" in reason and "\n" not in reason
    assert result.name == "multi-channel-z-series.ome.tif"  # the summary line names it
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


def test_a_time_series_is_refused(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    # Arrange: 3 time points of one channel
    data = _stack((3, 1, 64, 64), np.uint16, seed=3)
    metadata = {"axes": "TCYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    path = _write(tmp_path / "in" / "time.ome.tif", data, metadata)
    # Act
    result = ingest_path(ingestor, path)
    # Assert
    assert result.status == "failed"
    assert "a time series of 3 time points" in (result.reason or "")
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []


def test_a_stack_without_pixel_spacing_names_mpp(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    path = _write(tmp_path / "in" / "bare.ome.tif", _stack((2, 64, 64), np.uint16, 4), {"axes": "ZYX"})
    result = ingest_path(ingestor, path)
    assert result.status == "failed"
    assert "no pixel spacing" in (result.reason or "") and "--mpp" in (result.reason or "")


def test_float_samples_are_refused(ingestor: Ingestor, tmp_path: Path) -> None:
    data = _stack((2, 64, 64), np.uint16, 5).astype(np.float32)
    path = _write(tmp_path / "in" / "float.ome.tif", data, {"axes": "CYX", "PhysicalSizeX": 0.5})
    result = ingest_path(ingestor, path)
    assert result.status == "failed"
    assert "float32 samples" in (result.reason or "")


def test_ome_xml_units_colours_objective_and_date() -> None:
    # Arrange
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" Creator="QuPath">'
        '<Instrument ID="Instrument:0"><Microscope Manufacturer="Zeiss" Model="Axio"/>'
        '<Objective ID="Objective:0" NominalMagnification="10"/>'
        '<Objective ID="Objective:1" NominalMagnification="40"/></Instrument>'
        '<Image ID="Image:0"><AcquisitionDate>2024-05-06T07:08:09.1234567</AcquisitionDate>'
        '<ObjectiveSettings ID="Objective:1"/>'
        '<Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" PhysicalSizeY="0.25" PhysicalSizeZ="0.002" '
        'PhysicalSizeZUnit="mm" SignificantBits="14">'
        '<Channel Name="Cy5" IlluminationType="Epifluorescence" EmissionWavelength="0.67" '
        'EmissionWavelengthUnit="µm" Color="-16776961"/></Pixels></Image></OME>'
    )
    # Act
    pixels = read_ome_pixels(xml)
    # Assert
    assert pixels.spacing is not None and pixels.spacing.width == pytest.approx(0.00025)
    assert pixels.spacing.height == pytest.approx(0.00025)
    assert pixels.z_spacing_mm == pytest.approx(0.002)
    assert (pixels.significant_bits, pixels.objective_power, pixels.fluorescence) == (14, 40.0, True)
    (channel,) = pixels.channels
    assert (channel.description, channel.color) == ("Cy5", (255, 0, 0))
    assert channel.emission_nm == pytest.approx(670.0)
    assert pixels.acquired is not None and pixels.acquired.microsecond == 123456
    assert (pixels.manufacturer, pixels.model_name, pixels.creator) == ("Zeiss", "Axio", "QuPath")
    assert ome_color("-1") == (255, 255, 255) and ome_color("x") is None
    assert read_ome_pixels("<not xml") == read_ome_pixels("<OME/>")


def test_stripped_channels_and_an_rgb_z_stack_are_decoded(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: 2 channels in Deflate strips of 37 rows (decoded in bands); 2 RGB focal planes
    grey = _stack((2, 560, 520), np.uint16, seed=6)
    metadata = {"axes": "CYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    stripped = tmp_path / "in" / "strips.ome.tif"
    stripped.parent.mkdir()
    tifffile.imwrite(stripped, grey, ome=True, metadata=metadata, rowsperstrip=37, compression="zlib")
    rgb = np.stack([_stack((3, 200, 300), np.uint8, seed=7 + z).transpose(1, 2, 0) for z in range(2)])
    coloured = _write(tmp_path / "rgb" / "rgb.ome.tif", rgb, {"axes": "ZYXS", "PhysicalSizeX": 0.5})
    # Act
    (channels, *_) = _stored(archive, ingestor, stripped, tmp_path)
    (planes, *_) = _stored(archive, ingestor, coloured, tmp_path)
    # Assert
    assert (channels.NumberOfOpticalPaths, channels.Rows) == (2, 512)
    for c in range(2):
        assert np.array_equal(_plane(channels, 0, c), grey[c]), f"channel {c + 1}"
    assert (planes.TotalPixelMatrixFocalPlanes, planes.SamplesPerPixel) == (2, 3)
    assert planes.LossyImageCompression == "00"
    for z in range(2):
        assert np.array_equal(_plane(planes, z), rgb[z]), f"focal plane {z + 1}"
