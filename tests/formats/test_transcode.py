"""The export for readers that take only JPEG 2000 (``lamina export --transfer-syntax jpeg2000``):
JPEG-LS frames rewritten losslessly, the instance otherwise the same, the rest copied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
from click.testing import CliRunner
from pydicom import uid
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom

from lamina.archive.archive import Archive
from lamina.archive.ingest import Ingestor
from lamina.cli import cli
from lamina.errors import CorruptSourceError
from lamina.formats.transcode import to_jpeg2000
from lamina.sample import write_samples
from tests.support import dciodvfy_errors, ingest_path

pytestmark = pytest.mark.backend_independent


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(pydicom.dcmread(path).pixel_array)


def test_a_pixel_exact_slide_exports_in_jpeg2000_with_the_same_pixels(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    # Arrange: a CZI, whose pyramid lamina re-encodes (JPEG-LS by default)
    (sample,) = write_samples(tmp_path / "in", ["zeiss_czi"], size=(700, 600))
    result = ingest_path(ingestor, sample.path)
    assert result.status == "ingested", result.reason
    stored = archive.export(tmp_path / "stored", [result.slide_id or ""])[0]
    assert {
        pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID for f in stored.files
    } == {uid.JPEGLSLossless}
    with pytest.raises(openslide.OpenSlideError, match="Unsupported transfer syntax"):
        openslide.OpenSlide(stored.files[0])
    # Act
    rewritten = archive.export(tmp_path / "j2k", [result.slide_id or ""], transfer_syntax="jpeg2000")[0]
    # Assert: the same instances, frames in JPEG 2000 lossless, pixels equal, conformant
    for before, after in zip(stored.files, rewritten.files, strict=True):
        old = pydicom.dcmread(before, stop_before_pixels=True)
        new = pydicom.dcmread(after)
        assert new.file_meta.TransferSyntaxUID == uid.JPEG2000Lossless
        assert new.SOPInstanceUID == old.SOPInstanceUID and new.LossyImageCompression == "00"
        assert new.PhotometricInterpretation == ("YBR_RCT" if new.SamplesPerPixel == 3 else "MONOCHROME2")
        assert len(list(generate_frames(new.PixelData, number_of_frames=new.NumberOfFrames))) == (
            new.NumberOfFrames
        )
        assert np.array_equal(_pixels(after), _pixels(before)), after.name
        assert dciodvfy_errors(after) == [], after.name
    slide = openslide.OpenSlide(rewritten.files[0])
    assert slide.dimensions == (700, 600)
    assert WsiDicom.open(rewritten.folder).size.width == 700


def test_frames_in_other_syntaxes_are_left_as_stored(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    (sample,) = write_samples(tmp_path / "in", ["aperio_svs"])
    result = ingest_path(ingestor, sample.path)
    stored = archive.export(tmp_path / "stored", [result.slide_id or ""])[0]
    rewritten = archive.export(tmp_path / "j2k", [result.slide_id or ""], transfer_syntax="jpeg2000")[0]
    assert [f.read_bytes() for f in rewritten.files] == [f.read_bytes() for f in stored.files]
    assert not to_jpeg2000(stored.files[0], tmp_path / "unused.dcm")
    assert not (tmp_path / "unused.dcm").exists()


def test_a_damaged_frame_is_named_and_nothing_is_written(
    archive: Archive, ingestor: Ingestor, tmp_path: Path
) -> None:
    (sample,) = write_samples(tmp_path / "in", ["zeiss_czi"], size=(700, 600))
    result = ingest_path(ingestor, sample.path)
    (level0, *_) = archive.export(tmp_path / "stored", [result.slide_id or ""])[0].files
    data = bytearray(level0.read_bytes())
    ds = pydicom.dcmread(level0)
    frame = next(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    at = bytes(data).index(frame)
    data[at + 2 : at + 40] = b"\xff" * 38  # the JPEG-LS header of frame 1 overwritten
    level0.write_bytes(bytes(data))
    target = tmp_path / "out.dcm"
    with pytest.raises(CorruptSourceError, match="frame 1 cannot be decoded"):
        to_jpeg2000(level0, target)
    assert not target.exists() and not (tmp_path / "out.dcm.part").exists()


def test_the_command_line_exports_in_jpeg2000(archive: Archive, ingestor: Ingestor, tmp_path: Path) -> None:
    (sample,) = write_samples(tmp_path / "in", ["zeiss_czi"], size=(300, 200))
    result = ingest_path(ingestor, sample.path)
    out = CliRunner().invoke(
        cli,
        ["export", str(tmp_path / "out"), "--slide", result.slide_id or "", "--transfer-syntax", "jpeg2000"],
        env={"LAMINA_HOME": str(archive.settings.home)},
    )
    assert out.exit_code == 0, out.output
    files = sorted((tmp_path / "out" / (result.slide_id or "")).glob("*.dcm"))
    assert files and all(
        pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID == uid.JPEG2000Lossless
        for f in files
    )
    bad = CliRunner().invoke(cli, ["export", str(tmp_path / "x"), "--transfer-syntax", "jpeg-xl"])
    assert bad.exit_code == 2 and "'stored', 'jpeg2000'" in bad.output
