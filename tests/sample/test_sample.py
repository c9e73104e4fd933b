"""Tests for lamina.sample: every generated format is opened by the third-party
reader that must accept it (OpenSlide, tifffile, opentile, wsidicom, dciodvfy)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
import tifffile
from opentile import OpenTile
from opentile.tiff_format import TiffFormat
from wsidicom import WsiDicom

from lamina.sample import MANIFEST_HEADER, SAMPLE_FORMATS, SampleFile, write_samples
from lamina.sample.content import BACKGROUND, label_image, tissue_image
from lamina.sample.identity import make_identity
from lamina.sample.tiff import write_tiled_tiff

WIDTH, HEIGHT = 4096, 3072
MIN_STD = 15.0


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SampleFile]:
    """The default sample set (every format at 4096x3072), written once."""
    written = write_samples(tmp_path_factory.mktemp("samples"))
    return {sample.format: sample for sample in written}


def _levels(factor: int, count: int) -> list[tuple[int, int]]:
    """Level sizes of a pyramid of the default size."""
    return [(WIDTH // factor**index, HEIGHT // factor**index) for index in range(count)]


def _not_blank(pixels: np.ndarray) -> None:
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert float(pixels.std()) > MIN_STD


def _tissue_region(slide: openslide.OpenSlide, level: int = 1) -> np.ndarray:
    """The whole of a reduced level, read through OpenSlide."""
    size = slide.level_dimensions[level]
    return np.asarray(slide.read_region((0, 0), level, size).convert("RGB"))


def test_manifest(samples: dict[str, SampleFile]) -> None:
    dest = next(iter(samples.values())).path.parent
    with (dest / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == MANIFEST_HEADER
    first_line = (dest / "manifest.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first_line == (
        "file,patient_id,patient_name,birth_date,sex,accession_number,specimen_id,stain,organ,diagnosis_code,specimen_type"
    )
    assert len(rows) == 1 + len(SAMPLE_FORMATS)
    by_file = {row[0]: dict(zip(MANIFEST_HEADER[1:], row[1:], strict=True)) for row in rows[1:]}
    assert set(samples) == set(SAMPLE_FORMATS)
    for sample in samples.values():
        assert sample.path.exists()
        assert by_file[sample.path.name] == sample.identity
        identity = sample.identity
        assert "^" in identity["patient_name"]
        assert len(identity["birth_date"]) == 8 and identity["birth_date"].isdigit()
        assert identity["sex"] in {"F", "M"}
        assert identity["specimen_id"].startswith(identity["accession_number"] + "-")
        assert identity["stain"] in {"HE", "PAS", "Masson trichrome"}
        assert identity["diagnosis_code"][-2] == "/"
    assert samples["dicom_wsi"].path.is_dir()
    assert len({sample.identity["patient_id"] for sample in samples.values()}) == len(samples)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'hamamatsu_vms'") as caught:
        write_samples(tmp_path, ["aperio_svs", "hamamatsu_vms"])
    for name in SAMPLE_FORMATS:
        assert name in str(caught.value)
    assert not (tmp_path / "manifest.csv").exists()
    with pytest.raises(ValueError, match="size"):
        write_samples(tmp_path, ["tiled_tiff"], size=(10, 10))


def test_aperio_svs_opens_in_openslide(samples: dict[str, SampleFile]) -> None:
    path = samples["aperio_svs"].path
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "aperio"
    assert list(slide.level_dimensions) == _levels(4, 3)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.499)
    assert slide.properties["aperio.AppMag"] == "20"
    assert slide.properties["aperio.Filename"] == samples["aperio_svs"].identity["specimen_id"]
    assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
    assert slide.associated_images["label"].size == (387, 463)
    assert slide.associated_images["macro"].size == (1280, 431)
    assert slide.associated_images["thumbnail"].size == (1024, 768)
    assert slide.color_profile is not None
    _not_blank(_tissue_region(slide))


def test_aperio_svs_layout(samples: dict[str, SampleFile]) -> None:
    with tifffile.TiffFile(samples["aperio_svs"].path) as tif:
        assert tif.is_svs
        pages = list(tif.pages)
        assert len(pages) == 6
        level0 = pages[0]
        assert level0.description.startswith(
            "Aperio Image Library v12.0.15 \r\n"
            "4096x3072 [0,0 4096x3072] (240x240) JPEG/RGB Q=70|AppMag = 20|StripeWidth = 2040|"
        )
        assert "|MPP = 0.4990|" in level0.description
        assert (level0.tilewidth, level0.tilelength) == (240, 240)
        assert level0.compression == tifffile.COMPRESSION.JPEG
        assert level0.photometric == tifffile.PHOTOMETRIC.RGB
        assert len(level0.jpegtables) == 289  # one DQT and two DHT, as Aperio
        assert 34675 in level0.tags  # ICC profile
        assert 32997 in level0.tags and 282 not in level0.tags  # ImageDepth, no XResolution
        thumb, label, macro = pages[1], pages[4], pages[5]
        assert not thumb.is_tiled and "4096x3072 -> 1024x768 - " in thumb.description
        assert pages[2].description.endswith("(240x240) -> 1024x768 JPEG/RGB Q=70")
        assert label.compression == tifffile.COMPRESSION.LZW and label.subfiletype == 1
        assert label.description == "Aperio Image Library v12.0.15 \nlabel 387x463"
        assert macro.compression == tifffile.COMPRESSION.JPEG and macro.subfiletype == 9
        assert macro.description == "Aperio Image Library v12.0.15 \nmacro 1280x431"
        decoded = level0.asarray()
    region = np.asarray(
        openslide.OpenSlide(samples["aperio_svs"].path).read_region((0, 0), 0, (WIDTH, HEIGHT))
    )[..., :3]
    assert np.abs(decoded.astype(int) - region).mean() < 1.0  # same colours in both readers


def test_aperio_svs_opens_in_opentile(samples: dict[str, SampleFile]) -> None:
    with OpenTile.open(samples["aperio_svs"].path) as tiler:
        assert tiler.format == TiffFormat.SVS
        assert len(tiler.levels) == 3
        assert tiler.levels[0].pixel_spacing.width == pytest.approx(0.000499)
        assert tiler.labels and tiler.overviews and tiler.thumbnails


def test_tiled_tiff_opens_in_openslide(samples: dict[str, SampleFile]) -> None:
    slide = openslide.OpenSlide(samples["tiled_tiff"].path)
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert list(slide.level_dimensions) == _levels(2, 5)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.25)
    _not_blank(_tissue_region(slide))
    with tifffile.TiffFile(samples["tiled_tiff"].path) as tif:
        assert [page.subfiletype for page in tif.pages] == [0, 1, 1, 1, 1]
        assert tif.pages[0].tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER


def test_tiled_tiff_deflate_is_lossless(tmp_path: Path) -> None:
    from lamina.sample.content import make_slide

    slide = make_slide(make_identity(0, 1), (600, 500), 7)
    path = write_tiled_tiff(tmp_path / "deflate.tiff", slide, compression="deflate")
    opened = openslide.OpenSlide(path)
    assert opened.properties["openslide.vendor"] == "generic-tiff"
    region = np.asarray(opened.read_region((0, 0), 0, (600, 500)).convert("RGB"))
    assert np.array_equal(region, slide.pixels)
    with pytest.raises(ValueError, match="compression"):
        write_tiled_tiff(tmp_path / "bad.tiff", slide, compression="webp")


def test_dicom_wsi_opens_in_wsidicom(samples: dict[str, SampleFile]) -> None:
    sample = samples["dicom_wsi"]
    files = sorted(sample.path.glob("*.dcm"))
    assert len(files) == 7  # 5 levels, label, overview
    with WsiDicom.open(sample.path) as wsi:
        assert [level.size.to_tuple() for level in wsi.levels] == _levels(2, 5)
        assert wsi.mpp.width == pytest.approx(0.25)
        assert wsi.read_label().size == (387, 463)
        assert wsi.read_overview().size == (1280, 431)
        _not_blank(np.asarray(wsi.read_region((0, 0), 1, (2048, 1536)).convert("RGB")))
    for file in files:
        dataset = pydicom.dcmread(file, stop_before_pixels=True)
        assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
        assert dataset.PatientID == sample.identity["patient_id"]
        assert str(dataset.PatientName) == sample.identity["patient_name"]
        assert dataset.PatientBirthDate == sample.identity["birth_date"]
        assert dataset.AccessionNumber == sample.identity["accession_number"]
        assert dataset.ContainerIdentifier == sample.identity["specimen_id"]
        description = dataset.SpecimenDescriptionSequence[0]
        assert description.SpecimenIdentifier == sample.identity["specimen_id"]
        if "VOLUME" in dataset.ImageType:
            assert dataset.DimensionOrganizationType == "TILED_FULL"
            assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit


def test_dicom_wsi_passes_dciodvfy(samples: dict[str, SampleFile]) -> None:
    # dciodvfy_errors fails under CI when the tool is missing, and skips with a message elsewhere
    from tests.support import dciodvfy_errors

    for file in sorted(samples["dicom_wsi"].path.glob("*.dcm")):
        assert dciodvfy_errors(file) == [], file.name


def test_dicom_wsi_opens_in_openslide(samples: dict[str, SampleFile]) -> None:
    slide = openslide.OpenSlide(next(samples["dicom_wsi"].path.glob("*.dcm")))
    assert slide.properties["openslide.vendor"] == "dicom"
    assert slide.level_count == 5
    assert set(slide.associated_images) == {"label", "macro"}


def test_ome_tiff_opens_in_opentile(samples: dict[str, SampleFile]) -> None:
    path = samples["ome_tiff"].path
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert 'PhysicalSizeX="0.325"' in (tif.ome_metadata or "")
        assert len(tif.series[0].levels) == 5
    with OpenTile.open(path, 256) as tiler:
        assert tiler.format == TiffFormat.OME_TIFF
        assert len(tiler.levels) == 5
        assert tiler.levels[0].image_size.to_tuple() == (WIDTH, HEIGHT)
        assert tiler.levels[0].pixel_spacing.width == pytest.approx(0.000325)
        assert tiler.levels[2].pixel_spacing.width == pytest.approx(0.0013)
        assert tiler.get_label().get_decoded_tile((0, 0)).shape == (463, 387, 3)
        assert tiler.get_overview().get_decoded_tile((0, 0)).shape == (431, 1280, 3)
        tiles = [tiler.get_level(2).get_decoded_tile((x, y)) for x in range(4) for y in range(3)]
        assert max(float(tile.std()) for tile in tiles) > MIN_STD


def test_philips_tiff_opens_in_opentile(samples: dict[str, SampleFile]) -> None:
    path = samples["philips_tiff"].path
    with tifffile.TiffFile(path) as tif:
        assert tif.is_philips
        assert tif.pages[0].description.startswith("<?xml")
        assert "DPUfsImport" in tif.pages[0].description
        assert tif.pages[0].software == "Philips DP v1.0"
    with OpenTile.open(path, 512) as tiler:
        assert tiler.format == TiffFormat.PHILIPS_TIFF
        assert [level.image_size.to_tuple() for level in tiler.levels] == _levels(2, 4)
        assert tiler.levels[0].pixel_spacing.width == pytest.approx(0.00025)
        assert tiler.levels[1].pixel_spacing.width == pytest.approx(0.0005)
        assert tiler.metadata.scanner_manufacturer == "PHILIPS"
        assert tiler.get_label().get_decoded_tile((0, 0)).shape == (463, 387, 3)
        assert tiler.get_overview().get_decoded_tile((0, 0)).shape == (431, 1280, 3)
        tiles = [tiler.get_level(1).get_decoded_tile((x, y)) for x in range(4) for y in range(3)]
        assert max(float(tile.std()) for tile in tiles) > MIN_STD
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "philips"
    assert slide.level_count == 4
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert set(slide.associated_images) == {"label", "macro"}


def test_hamamatsu_ndpi_opens_in_opentile_and_openslide(samples: dict[str, SampleFile]) -> None:
    path = samples["hamamatsu_ndpi"].path
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ndpi
        level0 = tif.pages[0]
        assert level0.ndpi_tags is not None
        assert level0.ndpi_tags["SlideLabel"] == samples["hamamatsu_ndpi"].identity["specimen_id"]
        assert (level0.tilewidth, level0.tilelength) == (512, 8)  # stripes cut at restart markers
        assert [series.name for series in tif.series][1:] == ["Macro"]
        assert len(tif.series[0].levels) == 3
    with OpenTile.open(path, 512) as tiler:
        assert tiler.format == TiffFormat.NDPI
        assert [level.image_size.to_tuple() for level in tiler.levels] == _levels(4, 3)
        assert tiler.levels[0].pixel_spacing.width == pytest.approx(0.0002268, rel=1e-4)
        assert tiler.metadata.scanner_manufacturer == "Hamamatsu"
        assert tiler.get_overview().get_decoded_tile((0, 0)).shape == (431, 1280, 3)
        tiles = [tiler.get_level(0).get_decoded_tile((x, y)) for x in range(8) for y in range(6)]
        assert max(float(tile.std()) for tile in tiles) > MIN_STD
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "hamamatsu"
    assert slide.level_dimensions[0] == (WIDTH, HEIGHT)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.2268, rel=1e-4)
    assert slide.properties["hamamatsu.SourceLens"] == "40"
    assert set(slide.associated_images) == {"macro"}
    _not_blank(_tissue_region(slide, 2))


def _contents(path: Path) -> dict[str, bytes]:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return {file.name: file.read_bytes() for file in files}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = write_samples(tmp_path / "a", size=(640, 480), seed=5)
    second = write_samples(tmp_path / "b", size=(640, 480), seed=5)
    other = write_samples(tmp_path / "c", ["aperio_svs"], size=(640, 480), seed=6)
    for one, two in zip(first, second, strict=True):
        assert _contents(one.path) == _contents(two.path), one.format
        assert one.identity == two.identity
    assert _contents(first[0].path) != _contents(other[0].path)
    assert first[0].identity != other[0].identity
    assert _contents(tmp_path / "a" / "manifest.csv") == _contents(tmp_path / "b" / "manifest.csv")


def test_sample_does_not_depend_on_the_other_formats(tmp_path: Path, samples: dict[str, SampleFile]) -> None:
    alone = write_samples(tmp_path, ["philips_tiff", "philips_tiff"])
    assert len(alone) == 1
    assert alone[0].identity == samples["philips_tiff"].identity
    assert alone[0].path.read_bytes() == samples["philips_tiff"].path.read_bytes()


def test_tissue_content() -> None:
    pixels = tissue_image(1024, 768, seed=3)
    assert pixels.shape == (768, 1024, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, tissue_image(1024, 768, seed=3))
    background = np.all(np.abs(pixels.astype(int) - BACKGROUND) < 12, axis=2)
    assert 0.2 < background.mean() < 0.95  # some glass, some tissue
    tissue = pixels[~background]
    assert tissue[:, 0].mean() > tissue[:, 1].mean()  # pink/purple: red above green
    assert (tissue.sum(axis=1) < 400).mean() > 0.01  # dark haematoxylin nuclei


def test_label_shows_the_identity() -> None:
    label = np.asarray(label_image(make_identity(0, 0), (387, 463)))
    assert label.shape == (463, 387, 3)
    dark = label.min(axis=2) < 80
    assert 0.02 < dark.mean() < 0.5  # printed text and barcode on white
