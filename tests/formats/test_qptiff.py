"""PerkinElmer QPTIFF ingest: the real Vectra scan (3 channels, 8-bit, LZW strips) becomes one
DICOM pyramid whose level-0 planes are tifffile's pages pixel for pixel, with each channel's name,
colour and wavelength in its optical path; tiled 16-bit and tiled JPEG scans (written here as
Vectra writes them) keep their stored levels; a damaged QPTIFF is refused in one line naming the
file and the page, with nothing stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import generate_frames

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.errors import CorruptSourceError, MissingMetadataError
from lamina.formats.qptiff import QptiffSource, filter_wavelengths
from lamina.formats.registry import detect_format
from lamina.formats.source import SourceOptions
from lamina.model.geometry import SizeMm
from tests.support import ingest_path, shared_file, stored_file

pytestmark = pytest.mark.backend_independent

QPTIFF = "perkinelmer-qptiff/small_vectra.qptiff"


def _instances(archive: Archive, ingestor: Ingestor, path: Path, tmp_path: Path) -> list[pydicom.Dataset]:
    result = ingest_path(ingestor, path)
    assert result.status == "ingested", result.reason
    assert result.format == "perkinelmer_qptiff"
    rows = archive.catalog.instances(result.slide_id or "")
    return [pydicom.dcmread(stored_file(archive.store, row.blob_sha256, tmp_path / "stored")) for row in rows]


def _planes(ds: pydicom.Dataset) -> np.ndarray:
    """The stored frames assembled into (channel, rows, columns), TILED_FULL order."""
    rows, cols = ds.Rows, ds.Columns
    across = -(-ds.TotalPixelMatrixColumns // cols)
    down = -(-ds.TotalPixelMatrixRows // rows)
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    out = np.zeros((ds.NumberOfOpticalPaths, down * rows, across * cols), dtype)
    jpegls = ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    decode = imagecodecs.jpegls_decode if jpegls else imagecodecs.jpeg2k_decode
    for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)):
        c, at = divmod(index, across * down)
        row, col = divmod(at, across)
        out[c, row * rows : (row + 1) * rows, col * cols : (col + 1) * cols] = decode(frame)
    return out[:, : ds.TotalPixelMatrixRows, : ds.TotalPixelMatrixColumns]


def _base(instances: list[pydicom.Dataset]) -> pydicom.Dataset:
    return max(
        (ds for ds in instances if "VOLUME" in ds.ImageType), key=lambda ds: ds.TotalPixelMatrixColumns
    )


def test_every_channel_is_tifffiles_page_and_named_in_its_optical_path(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    path = shared_file(QPTIFF)
    # Act
    instances = _instances(archive, ingestor, path, tmp_path)
    # Assert: one instance per level (lamina computes 960x720 and 480x360), 3 channels each; the
    # RGB thumbnail, overview and label, each with one brightfield optical path of its own
    volumes = [ds for ds in instances if "VOLUME" in ds.ImageType]
    assert sorted(ds.TotalPixelMatrixColumns for ds in volumes) == [480, 960, 1920]
    others = [ds for ds in instances if "VOLUME" not in ds.ImageType]
    assert sorted(ds.ImageType[2] for ds in others) == ["LABEL", "OVERVIEW", "THUMBNAIL"]
    for other in others:
        assert other.NumberOfOpticalPaths == 1 and other.OpticalPathSequence[0].OpticalPathIdentifier == "4"
    ds = _base(instances)
    assert (ds.NumberOfOpticalPaths, ds.NumberOfFrames) == (3, 3 * 4 * 3)
    assert (ds.PhotometricInterpretation, ds.BitsStored) == ("MONOCHROME2", 8)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    assert float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0]) == (
        pytest.approx(0.0004965, rel=1e-3)
    )
    with tifffile.TiffFile(path) as tiff:
        expected = np.stack([tiff.pages[c].asarray() for c in range(3)])
    assert np.array_equal(_planes(ds), expected)
    paths = ds.OpticalPathSequence
    assert [p.OpticalPathDescription for p in paths] == ["DAPI", "FITC", "Cy3"]
    assert all(p.IlluminationTypeCodeSequence[0].CodeValue == "111743" for p in paths)
    # the colour is the palette's last entry; a single-band excitation filter gives its centre
    ends = [
        tuple(
            int(np.frombuffer(getattr(p, f"{k}PaletteColorLookupTableData"), "<u2")[-1]) // 257
            for k in ("Red", "Green", "Blue")
        )
        for p in paths
    ]
    assert ends == [(0, 0, 255), (0, 255, 0), (255, 255, 0)]
    assert "IlluminationWaveLength" not in paths[0]  # FF01-391/538/649: three bands, no one value
    assert [float(p.IlluminationWaveLength) for p in paths[1:]] == [480.0, 545.0]
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("PerkinElmer", "C11440-50U-53")
    assert paths[0].ObjectiveLensPower == "10"


def test_the_associated_images_are_the_rgb_pages(tmp_path: Path) -> None:
    path = shared_file(QPTIFF)
    # Act
    with QptiffSource(path, SourceOptions()) as source, tifffile.TiffFile(path) as tiff:
        # Assert: each with its own brightfield optical path in the DICOM (the writer's)
        images = {image.flavor.value: image for image in source.associated}
        assert sorted(images) == ["LABEL", "OVERVIEW", "THUMBNAIL"]
        for flavor, page in (("THUMBNAIL", 3), ("OVERVIEW", 4), ("LABEL", 5)):
            assert np.array_equal(images[flavor].decode_region(), tiff.pages[page].asarray()), flavor


def test_the_metadata_comes_from_the_xml() -> None:
    with QptiffSource(shared_file(QPTIFF), SourceOptions()) as source:
        meta = source.metadata
    assert meta.software_versions == ("VectraPolaris 1.0",)
    assert meta.objective_power == 10.0
    assert meta.identity.container_id == "RTM61_1"
    assert [p.fluorescence for p in meta.optical_paths] == [True, True, True]


@pytest.mark.parametrize(
    ("filter_id", "expected"),
    [
        ("FITC_Chroma:ET510LP Emission / Chroma:ET480/40x Excitation", (480.0, None)),
        ("DAPI_Semrock:FF01-453/571/709-25 Emission / Semrock:FF01-391/538/649-25 Excitation", (None, None)),
        ("TR_Semrock:FF01-657/106-25 Emission / Semrock:FF01-578/22-25 Excitation", (578.0, 657.0)),
        ("", (None, None)),
    ],
)
def test_wavelengths_come_from_single_band_filters_only(
    filter_id: str, expected: tuple[float | None, float | None]
) -> None:
    assert filter_wavelengths(filter_id) == expected


def test_a_truncated_qptiff_is_refused_naming_the_file_and_page(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: the scan cut in the middle of its channels
    cut = tmp_path / "in" / "cut.qptiff"
    cut.parent.mkdir()
    cut.write_bytes(shared_file(QPTIFF).read_bytes()[:1_500_000])
    # Act
    result = ingest_path(ingestor, cut)
    # Assert
    assert result.status == "failed"
    reason = result.reason or ""
    assert reason.startswith("truncated: a tile of page 0 ends at byte") and "\n" not in reason, reason
    assert archive.catalog.count_slides() == 0 and list(archive.store.iter_digests()) == []
    with pytest.raises(CorruptSourceError, match=r"^\S*cut\.qptiff: truncated: a tile of page 0 "):
        QptiffSource(cut, SourceOptions())


def _qpi(kind: str, name: str = "", color: str = "") -> str:
    channel = f"<Name>{name}</Name><Color>{color}</Color>" if name else ""
    return (
        '<?xml version="1.0" encoding="utf-16"?><PerkinElmer-QPI-ImageDescription>'
        f"<AcquisitionSoftware>Phenochart</AcquisitionSoftware><ImageType>{kind}</ImageType>{channel}"
        "<Objective>20x</Objective></PerkinElmer-QPI-ImageDescription>"
    )


def _write_tiled(
    path: Path, channels: list[np.ndarray], compression: str | None, spacing: bool = True
) -> None:
    """A tiled QPTIFF as Vectra writes one: channels, thumbnail, then each reduced level's channels."""
    resolution = {"resolution": (20000, 20000), "resolutionunit": "CENTIMETER"} if spacing else {}
    names = [("DAPI", "0,0,255"), ("CD8", "255,0,0")]
    with tifffile.TiffWriter(path) as tiff:

        def page(data: np.ndarray, description: str, tiled: bool = True) -> None:
            tiff.write(
                data,
                tile=(256, 256) if tiled else None,
                compression=compression if tiled else None,
                description=description,
                software="PerkinElmer-QPI",
                metadata=None,
                **resolution,  # type: ignore[arg-type]
            )

        for data, (name, color) in zip(channels, names, strict=True):
            page(data, _qpi("FullResolution", name, color))
        page(np.zeros((32, 48, 3), np.uint8), _qpi("Thumbnail"), tiled=False)
        for data, (name, color) in zip(channels, names, strict=True):
            page(data[::2, ::2].copy(), _qpi("ReducedResolution", name, color))


def test_a_tiled_16_bit_scan_keeps_its_levels_and_samples(tmp_path: Path) -> None:
    # Arrange: 2 channels of 16-bit samples, LZW tiles, a reduced level
    rng = np.random.default_rng(7)
    channels = [rng.integers(0, 65535, (600, 700), dtype=np.uint16) for _ in range(2)]
    path = tmp_path / "scan.qptiff"
    _write_tiled(path, channels, "lzw")
    # Act
    with QptiffSource(path, SourceOptions()) as source:
        # Assert
        assert detect_format(path) is QptiffSource
        assert [(level.size.width, level.optical_paths, level.bits_stored) for level in source.levels] == [
            (700, 2, 16),
            (350, 2, 16),
        ]
        assert source.levels[0].encoding is None and source.levels[0].tile_size.width == 256
        for level, step in zip(source.levels, (1, 2), strict=True):
            for c in range(2):
                plane = level.decode_region(0, c)[..., 0]
                assert plane.dtype == np.uint16
                assert np.array_equal(plane, channels[c][::step, ::step]), (level.size, c)
        assert [p.description for p in source.metadata.optical_paths] == ["DAPI", "CD8"]
        assert [a.flavor.value for a in source.associated] == ["THUMBNAIL"]


def test_tiled_jpeg_channels_are_copied_as_stored(tmp_path: Path) -> None:
    # Arrange
    rng = np.random.default_rng(8)
    channels = [rng.integers(0, 255, (512, 512), dtype=np.uint8) for _ in range(2)]
    path = tmp_path / "scan.qptiff"
    _write_tiled(path, channels, "jpeg")
    # Act
    with QptiffSource(path, SourceOptions()) as source, tifffile.TiffFile(path) as tiff:
        level = source.levels[0]
        # Assert: frame c * 4 + i is tile i of channel c's page, byte for byte after its tables
        assert level.encoding is not None and level.encoding.transfer_syntax == pydicom.uid.JPEGBaseline8Bit
        assert level.source_lossy and level.frame_count == 8
        frames = list(level.iter_frames())
        lengths = level.frame_lengths()
        assert lengths == [len(frame) for frame in frames]
        for index, frame in enumerate(frames):
            c, at = divmod(index, 4)
            page = tiff.pages[c]
            tiff.filehandle.seek(page.dataoffsets[at])
            raw = tiff.filehandle.read(page.databytecounts[at])
            assert frame.endswith(raw[2:])
            assert np.array_equal(
                imagecodecs.jpeg8_decode(frame), level.decode_tile(at % 2, at // 2, 0, c)[..., 0]
            )


def test_a_qptiff_without_resolution_asks_for_mpp(tmp_path: Path) -> None:
    path = tmp_path / "scan.qptiff"
    _write_tiled(path, [np.zeros((300, 300), np.uint8)] * 2, "lzw", spacing=False)
    with pytest.raises(MissingMetadataError, match="--mpp"):
        QptiffSource(path, SourceOptions())
    with QptiffSource(path, SourceOptions(pixel_spacing=SizeMm(0.0005, 0.0005))) as source:
        assert source.levels[0].pixel_spacing == SizeMm(0.0005, 0.0005)


def test_a_damaged_description_is_refused_naming_the_page(tmp_path: Path) -> None:
    # Arrange: the real scan with its second channel's XML cut short (same length: offsets hold)
    path = tmp_path / "bad.qptiff"
    shutil.copyfile(shared_file(QPTIFF), path)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    at = data.find(b"<ImageType>FullResolution", data.find(b"<Name>DAPI") + 1)
    data[at : at + 11] = b"<ImageTypX>"
    path.write_bytes(bytes(data))
    # Act / Assert
    with pytest.raises(CorruptSourceError, match=r"bad\.qptiff: page \d+: its PerkinElmer XML") as raised:
        QptiffSource(path, SourceOptions())
    assert "\n" not in str(raised.value)
