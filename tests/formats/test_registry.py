"""Readers come from the ``lamina.formats`` entry points only; one constructor and one detect
contract for all; formats lamina does not read yet are named, not claimed."""

from __future__ import annotations

import inspect
import shutil
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from lamina.archive.discover import discover
from lamina.errors import ConfigurationError, UnsupportedFormatError
from lamina.formats import registry
from lamina.formats.registry import available_formats, detect_format
from lamina.formats.source import SlideSource
from tests.support import REPO, shared_file


def test_the_readers_are_the_entry_points_of_pyproject() -> None:
    # Arrange: the one list of readers
    declared = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["entry-points"][
        registry.GROUP
    ]
    # Act
    found = {cls.format_name: f"{cls.__module__}:{cls.__qualname__}" for cls in available_formats()}
    # Assert: the same, and asked highest priority first
    assert found == declared
    priorities = [cls.priority for cls in available_formats()]
    assert priorities == sorted(priorities, reverse=True)


def test_no_reader_list_other_than_the_entry_points() -> None:
    source = inspect.getsource(registry)
    assert "SvsSource" not in source and "DicomSource" not in source


def test_an_install_without_entry_points_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange: a source tree run without installing it has no entry points
    available_formats.cache_clear()
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    try:
        # Act / Assert
        with pytest.raises(ConfigurationError, match=r"no slide reader is registered.*reinstall lamina"):
            available_formats()
    finally:
        available_formats.cache_clear()


def test_an_entry_point_that_cannot_be_loaded_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="vendor_x", value="lamina.formats.nowhere:Reader", group=registry.GROUP)
    available_formats.cache_clear()
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    try:
        with pytest.raises(ConfigurationError, match=r"'vendor_x' .*cannot be loaded.*reinstall"):
            available_formats()
    finally:
        available_formats.cache_clear()


@pytest.mark.parametrize("reader", available_formats(), ids=lambda cls: cls.format_name)
def test_every_reader_has_the_same_constructor(reader: type[SlideSource]) -> None:
    parameters = list(inspect.signature(reader.__init__).parameters)
    assert parameters == ["self", "path", "options"]
    assert reader.format_name and reader.display_name


def _odd_files(folder: Path) -> list[Path]:
    """Files a detect must answer without raising: empty, a directory, missing, a TIFF header and
    nothing else, random bytes, a DICOM preamble with nothing after it."""
    folder.mkdir()
    empty = folder / "empty.svs"
    empty.write_bytes(b"")
    head = folder / "head.ndpi"
    head.write_bytes(b"II*\x00\x08\x00\x00\x00")
    noise = folder / "noise.tiff"
    noise.write_bytes(bytes(range(256)) * 4)
    preamble = folder / "cut.dcm"
    preamble.write_bytes(b"\x00" * 128 + b"DICM")
    return [empty, head, noise, preamble, folder, folder / "missing.svs"]


@pytest.mark.parametrize("reader", available_formats(), ids=lambda cls: cls.format_name)
def test_detect_answers_without_raising(reader: type[SlideSource], tmp_path: Path) -> None:
    for path in _odd_files(tmp_path / "odd"):
        assert isinstance(reader.detect(path), bool), path


def test_a_tiff_header_named_svs_is_claimed_by_the_svs_reader(tmp_path: Path) -> None:
    # a damaged SVS is claimed by its name, so that its refusal says what is wrong with it
    cut = tmp_path / "cut.svs"
    cut.write_bytes(b"II*\x00\x08\x00\x00\x00")
    assert detect_format(cut).format_name == "aperio_svs"


@pytest.mark.parametrize("name", ["small_vectra.qptiff", "renamed.tif"])
def test_a_qptiff_is_claimed_by_the_qptiff_reader(name: str, tmp_path: Path) -> None:
    # Arrange: the real QPTIFF, also under a plain TIFF name (recognised by its content)
    path = tmp_path / name
    shutil.copyfile(shared_file("perkinelmer-qptiff/small_vectra.qptiff"), path)
    # Act / Assert: the QPTIFF reader wins over the tiled TIFF reader that also claims any TIFF
    assert detect_format(path).format_name == "perkinelmer_qptiff"


def test_a_damaged_tiff_named_qptiff_is_claimed_by_the_qptiff_reader(tmp_path: Path) -> None:
    cut = tmp_path / "cut.qptiff"
    cut.write_bytes(b"II*\x00\x08\x00\x00\x00")
    assert detect_format(cut).format_name == "perkinelmer_qptiff"


def test_a_vsi_and_its_ets_folder_are_one_candidate_named_as_vsi() -> None:
    # Arrange
    folder = shared_file("olympus-vsi")
    # Act
    (candidate,) = discover([folder])
    # Assert
    assert candidate.path.name == "vsi-ets-test-jpg2k.vsi"
    assert [p.suffix for p in candidate.members] == [".vsi", ".ets"]
    assert detect_format(candidate.path).format_name == "olympus_vsi"


def test_a_file_no_reader_claims_lists_the_readers(tmp_path: Path) -> None:
    text = tmp_path / "notes.bin"
    text.write_bytes(b"not a slide")
    with pytest.raises(UnsupportedFormatError) as raised:
        detect_format(text)
    assert "not a slide format lamina reads (DICOM WSI, Aperio SVS" in str(raised.value)
    assert str(raised.value).endswith("tiled pyramidal TIFF)")


def test_a_format_no_reader_claims_is_refused_by_its_name(tmp_path: Path) -> None:
    vms = tmp_path / "scan.vms"
    vms.write_bytes(b"[Virtual Microscope Specimen]\nNoLayers=1\n")
    with pytest.raises(UnsupportedFormatError, match="Hamamatsu VMS files are not supported yet"):
        detect_format(vms)
