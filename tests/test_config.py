"""Settings: every size takes the same forms, every bad value is one ConfigurationError naming the
variable and the lamina.toml key, with an example."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.config import Settings, parse_size
from lamina.errors import ConfigurationError

#: Every size setting, with its default.
SIZES = {
    "max_upload_bytes": 4 << 30,
    "max_frames_bytes": 32 << 20,
    "max_transcode_bytes": 1 << 30,
    "blob_cache_bytes": 0,
    "blob_cache_disk_bytes": 0,
    "blob_cache_block_bytes": 1 << 20,
}
#: Every other numeric setting, with a good value and its parsed form.
NUMBERS = {
    "workers": ("3", 3),
    "stow_wait_s": ("2.5", 2.5),
    "job_reports_keep_days": ("0.5", 0.5),
    "verify_limit_mb_s": ("20", 20.0),
    "watch_stable_s": ("0", 0.0),
    "api_threads": ("8", 8),
    "shutdown_grace_s": ("1.5", 1.5),
}


def _toml(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "lamina.toml").write_text(text, "utf-8")
    return home


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("536870912", 512 << 20),
        ("4 GiB", 4 << 30),
        ("512 MiB", 512 << 20),
        ("64MB", 64 * 10**6),
        ("1.5 gib", 3 << 29),
        ("2 GB", 2 * 10**9),
        ("256KiB", 256 << 10),
        ("1_048_576", 1 << 20),
        (" 8 kB ", 8000),
        (1024, 1024),
    ],
)
def test_a_size_is_a_number_of_bytes_or_a_number_and_a_unit(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "GiB", "4 gigs", "4 M", "-1", "inf", "nan", "1e", "4 GB GB", True, 1.5e400]
)
def test_what_is_not_a_size_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize("key", sorted(SIZES))
def test_every_size_setting_takes_units_from_the_environment_and_the_file(tmp_path: Path, key: str) -> None:
    variable = f"LAMINA_{key.upper()}"
    # the block size is bounded (4 KiB to 64 MiB): a value every size setting accepts
    assert getattr(Settings.load(tmp_path, env={variable: "4 MiB"}), key) == 4 << 20
    assert getattr(Settings.load(tmp_path, env={variable: "8MB"}), key) == 8 * 10**6
    assert getattr(Settings.load(tmp_path, env={}), key) == SIZES[key]
    home = _toml(tmp_path / "home", f'{key} = "2 MiB"\n')
    assert getattr(Settings.load(home, env={}), key) == 2 << 20
    _toml(home, f"{key} = 65536\n")
    assert getattr(Settings.load(home, env={}), key) == 65536
    # the environment comes first
    assert getattr(Settings.load(home, env={variable: "1 MiB"}), key) == 1 << 20


@pytest.mark.parametrize("key", sorted(SIZES))
@pytest.mark.parametrize("bad", ["4 gigs", "-5", "nan", "lots"])
def test_a_bad_size_names_the_variable_and_the_key_with_an_example(
    tmp_path: Path, key: str, bad: str
) -> None:
    variable = f"LAMINA_{key.upper()}"
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(tmp_path, env={variable: bad})
    message = str(caught.value)
    assert f"{variable}={bad!r}" in message and f"{key} in lamina.toml" in message
    assert "'4 GiB'" in message and "'64MB'" in message


def test_a_bad_size_in_the_file_is_named_too(tmp_path: Path) -> None:
    home = _toml(tmp_path / "home", "max_upload_bytes = true\n")
    with pytest.raises(ConfigurationError, match=r"max_upload_bytes in lamina\.toml.*'4 GiB'"):
        Settings.load(home, env={})


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_every_numeric_setting_is_read(tmp_path: Path, key: str) -> None:
    text, value = NUMBERS[key]
    assert getattr(Settings.load(tmp_path, env={f"LAMINA_{key.upper()}": text}), key) == value
    home = _toml(tmp_path / "home", f"{key} = {text}\n")
    assert getattr(Settings.load(home, env={}), key) == value


@pytest.mark.parametrize("key", sorted(NUMBERS))
@pytest.mark.parametrize("bad", ["ten", "inf", "nan", "-1", "1e999"])
def test_a_bad_number_is_one_error_naming_the_setting(tmp_path: Path, key: str, bad: str) -> None:
    variable = f"LAMINA_{key.upper()}"
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(tmp_path, env={variable: bad})
    message = str(caught.value)
    assert f"{variable}={bad!r}" in message and f"{key} in lamina.toml" in message and "e.g." in message


@pytest.mark.parametrize(("key", "bad"), [("workers", "2.5"), ("workers", "true"), ("stow_wait_s", "false")])
def test_a_whole_number_or_a_flag_in_the_file_is_refused_where_a_number_belongs(
    tmp_path: Path, key: str, bad: str
) -> None:
    home = _toml(tmp_path / "home", f"{key} = {bad}\n")
    with pytest.raises(ConfigurationError, match=rf"{key} in lamina\.toml"):
        Settings.load(home, env={})


def test_lamina_takes_a_size_with_a_unit_and_refuses_a_bad_one_in_one_line(tmp_path: Path) -> None:
    lamina = [sys.executable, "-m", "lamina", "--home", str(tmp_path / "home"), "slides"]
    good = subprocess.run(
        lamina, env={"LAMINA_MAX_UPLOAD_BYTES": "4 GiB", "PATH": ""}, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        lamina, env={"LAMINA_MAX_UPLOAD_BYTES": "4 gigs", "PATH": ""}, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: LAMINA_MAX_UPLOAD_BYTES='4 gigs'"), bad.stderr


def test_unknown_keys_in_the_file_are_named_once_with_the_nearest_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = _toml(
        tmp_path / "home",
        'max_uplod_bytes = "1 GiB"\nworkers = 2\ncolour = "blue"\n'
        '[s3]\nendpoint = "http://s3"\nregion = "x"\n',
    )
    caplog.set_level(logging.WARNING, logger="lamina.config")

    settings = Settings.load(home, env={})
    Settings.load(home, env={})  # a process loads its settings more than once: one warning

    assert settings.workers == 2 and settings.max_upload_bytes == 4 << 30  # the misspelt key is ignored
    assert not hasattr(settings, "extra")
    (record,) = [r for r in caplog.records if r.name == "lamina.config"]
    message = record.getMessage()
    assert str(home / "lamina.toml") in message
    assert "'max_uplod_bytes' (did you mean 'max_upload_bytes'?)" in message
    assert "'colour'" in message and "'s3.endpoint' (did you mean 's3.endpoint_url'?)" in message
    assert "workers" not in message and "region" not in message


def test_a_file_of_known_keys_is_read_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    known = {item.name for item in dataclasses.fields(Settings)} - {"home", "s3"}
    home = _toml(tmp_path / "home", 'role = "archive"\nwatch = []\n[s3]\nregion = "eu"\n')
    caplog.set_level(logging.WARNING, logger="lamina.config")
    assert Settings.load(home, env={}).role == "archive"
    assert caplog.records == []
    assert {"max_upload_bytes", "blob_cache_bytes", "stow_wait_s"} <= known


def test_lamina_shows_the_unknown_keys_on_its_terminal(tmp_path: Path) -> None:
    home = _toml(tmp_path / "home", "max_uplod_bytes = 5\n")
    done = subprocess.run(
        [sys.executable, "-m", "lamina", "--home", str(home), "slides"],
        capture_output=True,
        text=True,
        env={},
    )
    assert done.returncode == 0, done.stderr
    assert "unknown key(s) 'max_uplod_bytes' (did you mean 'max_upload_bytes'?)" in done.stderr
