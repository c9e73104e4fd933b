"""``[exchange]`` in lamina.toml and its variables: read, with defaults; a wrong value is one
error naming the variable and the key; ExchangeKeys.for_settings reads the files named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lamina.config import Settings
from lamina.errors import ConfigurationError
from lamina.exchange.keys import ExchangeKeys


def _home(tmp_path: Path, text: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "lamina.toml").write_text(text, "utf-8")
    return home


def test_the_exchange_table_and_its_variables(tmp_path: Path) -> None:
    eds = tmp_path / "eds.key"
    eds.write_text("ab" * 32 + "\n")
    home = _home(
        tmp_path,
        f'[exchange]\narchive_url = "https://archive.example.org/"\nlimit_mb_per_s = 20\n'
        f'[exchange.warehouses]\neds-hcl = "{eds}"\n',
    )
    # Act
    settings = Settings.load(home, env={"LAMINA_ARCHIVE_TOKEN_FILE": str(tmp_path / "token")})
    # Assert
    exchange = settings.exchange
    assert exchange.archive_url == "https://archive.example.org"
    assert exchange.limit_mb_per_s == 20.0
    assert exchange.archive_token_file == tmp_path / "token"
    assert exchange.site_key_file(settings.home) == settings.home / "keys" / "site.key"
    keys = ExchangeKeys.for_settings(settings)
    assert (settings.home / "keys" / "site.key").stat().st_mode & 0o777 == 0o600
    assert keys.warehouses["eds-hcl"] == bytes.fromhex("ab" * 32)
    assert keys.patient_pseudonym("P1") != keys.patient_pseudonym("P1", "eds-hcl")
    # defaults
    plain = Settings.load(tmp_path / "other", env={}).exchange
    assert (plain.archive_url, plain.limit_mb_per_s, plain.warehouses) == (None, 0.0, ())


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[exchange]\nlimit_mb_per_s = -1\n", {}, "LAMINA_EXCHANGE_LIMIT_MB_PER_S (or limit_mb_per_s"),
        ("", {"LAMINA_EXCHANGE_LIMIT_MB_PER_S": "fast"}, "LAMINA_EXCHANGE_LIMIT_MB_PER_S"),
        ("", {"LAMINA_ARCHIVE_URL": "ftp://archive"}, "LAMINA_ARCHIVE_URL (or archive_url"),
        (
            '[exchange]\narchive_ur = "https://a"\n',
            {},
            "exchange 'archive_ur' is not a setting (did you mean",
        ),
        ("[exchange]\nwarehouses = 3\n", {}, "exchange.warehouses must be a table"),
        ('[exchange.warehouses]\n"a b" = "/k"\n', {}, "exchange.warehouses 'a b'"),
    ],
)
def test_a_wrong_value_names_the_setting(tmp_path: Path, text: str, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match="^(lamina.toml: )?" + re.escape(named)):
        Settings.load(_home(tmp_path, text), env=env)
