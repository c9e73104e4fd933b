"""Settings: frozen, read once from the environment and ``$LAMINA_HOME/lamina.toml``, passed in.

Precedence: explicit arguments > environment variables > settings file > defaults.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.errors import ConfigurationError

if TYPE_CHECKING:
    from lamina.governance.claims import ClaimsMapping
    from lamina.governance.oidc import IssuerConfig
    from lamina.governance.viewer_client import ViewerClient

DEFAULT_HOME = "lamina-data"

log = logging.getLogger("lamina.config")
#: (file, unknown keys) already warned about: a process loads its settings more than once
_WARNED: set[tuple[Path, tuple[str, ...]]] = set()


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(
        f"LAMINA_VERIFY_AFTER_WRITE={value!r} (or verify_after_write in lamina.toml): use true or false"
    )


_S3_KEYS = {
    "AWS_ENDPOINT_URL": "endpoint_url",
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_DEFAULT_REGION": "region",
}


def _s3_settings(env: dict[str, str], table: object) -> dict[str, str]:
    """The S3 connection as the AWS_* variables boto3 knows, environment first, then lamina.toml."""
    if not isinstance(table, dict):
        raise ConfigurationError("lamina.toml: [s3] must be a table (endpoint_url, access_key_id, ...)")
    found = {}
    for variable, key in _S3_KEYS.items():
        value = env.get(variable) or table.get(key)
        if value:
            found[variable] = str(value)
    return found


def _setting(env: dict[str, str], file_values: dict[str, Any], key: str) -> object:
    """The raw value of ``LAMINA_<KEY>``, else of ``key`` in lamina.toml; None when neither."""
    raw = env.get(f"LAMINA_{key.upper()}") or file_values.get(key)
    return None if raw == "" else raw


def _file(env: dict[str, str], file_values: dict[str, Any], key: str) -> Path | None:
    """The path of ``LAMINA_<KEY>`` (else ``key`` in lamina.toml), absolute; None when unset."""
    raw = _setting(env, file_values, key)
    return None if raw is None else Path(str(raw)).expanduser().absolute()


def _auth(table: object) -> dict[str, Any]:
    """The ``[auth]`` table of lamina.toml, checked: the trusted OpenID provider, and its
    ``[auth.claims]`` mapping."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigurationError("lamina.toml: [auth] must be a table (issuer, discovery_url, audience, ...)")
    from lamina.governance.claims import ClaimsMapping
    from lamina.governance.oidc import IssuerConfig
    from lamina.governance.viewer_client import ViewerClient

    provider = {key: value for key, value in table.items() if key not in ("claims", "viewer")}
    viewer = table.get("viewer")
    return {
        "auth_issuer": IssuerConfig.from_mapping(provider, "lamina.toml [auth]"),
        "auth_claims": ClaimsMapping.from_mapping(table.get("claims", {}), "lamina.toml [auth.claims]"),
        "auth_viewer": None
        if viewer is None
        else ViewerClient.from_mapping(viewer, "lamina.toml [auth.viewer]"),
    }


def _where(key: str, raw: object) -> str:
    """How an error names a setting: the variable, its value, and the key in lamina.toml."""
    return f"LAMINA_{key.upper()}={raw!r} (or {key} in lamina.toml)"


def _number(
    env: dict[str, str], file_values: dict[str, Any], key: str, default: float, kind: type[Any]
) -> Any:
    """A count or a duration: ``kind`` (int or float), finite and not negative."""
    raw = _setting(env, file_values, key)
    if raw is None:
        return kind(default)
    example = f"e.g. {default:g}" if kind is float else f"a whole number, e.g. {int(default)}"
    try:
        if isinstance(raw, bool) or (kind is int and isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(raw)
        value = kind(raw.strip() if isinstance(raw, str) else raw)
        if not math.isfinite(value):
            raise ValueError(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(f"{_where(key, raw)}: expected a number ({example})") from None
    if value < 0:
        raise ConfigurationError(f"{_where(key, raw)}: must not be negative ({example})")
    return value


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"(?P<number>(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*(?P<unit>[a-z]*)")


def parse_size(value: object) -> int:
    """A size in bytes, as every size setting takes it: a number of bytes (``536870912``), or a
    number and a unit (``512 MiB``, ``4 GiB``, ``64MB``, ``1.5 GB``; KiB/MiB/GiB/TiB are powers of
    1024, kB/MB/GB/TB of 1000; case and spaces do not matter). ValueError when it is not one.

    >>> parse_size("4 GiB"), parse_size("64MB"), parse_size(1024)
    (4294967296, 64000000, 1024)
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, str):
        found = _SIZE.fullmatch(value.strip().lower())
        unit = _UNITS.get(found["unit"]) if found else None
        if found is None or unit is None:
            raise ValueError(f"{value!r} is not a size")
        number = found["number"]
        exact = number.replace("_", "").isdigit()
        size = int(number) * unit if exact else float(number) * unit
    else:
        size = value
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"{value!r} is not a size")
    return int(size)


def _bytes(env: dict[str, str], file_values: dict[str, Any], key: str, default: int) -> int:
    """A size setting (:func:`parse_size`); ConfigurationError naming it when it is not a size."""
    raw = _setting(env, file_values, key)
    if raw is None:
        return default
    try:
        return parse_size(raw)
    except ValueError:
        raise ConfigurationError(
            f"{_where(key, raw)}: expected a size in bytes, a number or a number and a unit: e.g. "
            "536870912, '512 MiB', '4 GiB' or '64MB'"
        ) from None


def _cron(raw: object, name: str = "LAMINA_VERIFY_CRON", default: str = "30 2 * * *") -> str | None:
    if raw is None:
        return default
    text = str(raw).strip()
    if text.lower() in ("", "off", "none", "never"):
        return None
    from croniter import croniter

    if not croniter.is_valid(text):
        raise ConfigurationError(f"{name}={text!r}: not a cron line (e.g. '{default}')")
    return text


def _names(env: dict[str, str], file_values: dict[str, Any], key: str) -> tuple[str, ...]:
    """A list setting: ``LAMINA_<KEY>`` separated by commas, or a list in lamina.toml."""
    raw = env.get(f"LAMINA_{key.upper()}")
    if raw is not None:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    value = file_values.get(key, [])
    if not isinstance(value, list):
        raise ConfigurationError(f"lamina.toml: {key} must be a list of strings")
    return tuple(str(part).strip() for part in value if str(part).strip())


def _networks(env: dict[str, str], file_values: dict[str, Any]) -> tuple[str, ...]:
    """``trusted_proxies``: addresses or networks (``10.0.0.0/8``), each checked here."""
    import ipaddress

    found = _names(env, file_values, "trusted_proxies")
    for item in found:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"LAMINA_TRUSTED_PROXIES (or trusted_proxies in lamina.toml): {item!r} is not an IP "
                "address or network; give addresses such as 10.0.0.5 or 10.0.0.0/8, separated by commas"
            ) from None
    return found


def _ae_title(key: str, title: str, example: str) -> str:
    """An AE title of the setting ``key``, checked by DICOM's rules (1 to 16 characters, no
    backslash, no control character)."""
    from lamina.errors import RequestError
    from lamina.peers.entity import check_ae_title

    try:
        return check_ae_title(title)
    except RequestError as exc:
        raise ConfigurationError(
            f"LAMINA_{key.upper()} (or {key} in lamina.toml): {exc.args[0]}; e.g. {example}"
        ) from None


def _folders(env_value: str | None, file_value: object) -> tuple[Path, ...]:
    if env_value:
        return tuple(Path(part).expanduser().absolute() for part in env_value.split(os.pathsep) if part)
    if file_value is None:
        return ()
    if not isinstance(file_value, list):
        raise ConfigurationError("lamina.toml: watch must be a list of folders")
    return tuple(Path(str(part)).expanduser().absolute() for part in file_value)


_STORAGE_CLASSES_READABLE = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
)
_COLD_KEYS = {
    "url": "LAMINA_COLD_URL",
    "storage_class": "LAMINA_COLD_STORAGE_CLASS",
    "restore_delay_s": "LAMINA_COLD_RESTORE_DELAY_S",
}


@dataclass(frozen=True)
class ColdTierSettings:
    """The cold tier (``[tiers.cold]`` in lamina.toml, :mod:`lamina.lifecycle.tiers`).

    Parameters
    ----------
    url
        Where its objects go: a folder (``/mnt/tape`` or ``file:///mnt/tape``) or
        ``s3://bucket/prefix``, reached with the archive's S3 settings (``LAMINA_COLD_URL``).
    storage_class
        The S3 storage class its objects are put in (``LAMINA_COLD_STORAGE_CLASS``), one that is
        read at once (e.g. ``STANDARD_IA``, ``GLACIER_IR``); None leaves the bucket's default.
    restore_delay_s
        Seconds before a restored slide's objects may be read (``LAMINA_COLD_RESTORE_DELAY_S``,
        default 0): models tape or an archive storage class.
    """

    url: str
    storage_class: str | None = None
    restore_delay_s: float = 0.0


def _known_keys(name: str, table: dict[str, Any], keys: Iterable[str]) -> None:
    """A :class:`ConfigurationError` for the first key of the lamina.toml table ``name`` that is
    not one of ``keys``, with the nearest known key."""
    known = list(keys)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"lamina.toml: {name} {key!r} is not a setting{hint}; use {', '.join(known)}"
            )


def _cold_tier(env: dict[str, str], tiers: object) -> ColdTierSettings | None:
    """``[tiers.cold]`` of lamina.toml, each key overridden by its ``LAMINA_COLD_*`` variable;
    None when no cold tier is configured."""
    if tiers is None:
        tiers = {}
    if not isinstance(tiers, dict):
        raise ConfigurationError("lamina.toml: tiers must be a table with a tiers.cold table in it")
    if unknown := [key for key in tiers if key != "cold"]:
        raise ConfigurationError(
            f"lamina.toml: tiers has {', '.join(map(repr, unknown))}: only tiers.cold (the hot tier "
            "is the archive's blob_url)"
        )
    table = tiers.get("cold", {})
    if not isinstance(table, dict):
        raise ConfigurationError(
            "lamina.toml: tiers.cold must be a table (url, storage_class, restore_delay_s)"
        )
    _known_keys("tiers.cold", table, _COLD_KEYS)
    values = {key: env.get(variable) or table.get(key) for key, variable in _COLD_KEYS.items()}
    url = values["url"]
    if not url:
        if values["storage_class"] or values["restore_delay_s"] not in (None, ""):
            raise ConfigurationError(
                "tiers.cold url (LAMINA_COLD_URL) is missing: the cold tier needs a folder or s3://bucket/prefix"
            )
        return None
    where = "LAMINA_COLD_URL (or url in the tiers.cold table of lamina.toml)"
    if not isinstance(url, str):
        raise ConfigurationError(f"{where}={url!r}: expected a folder or s3://bucket/prefix")
    url = url.strip()
    if "://" not in url:
        url = f"file://{Path(url).expanduser().absolute()}"
    elif not url.startswith(("file:///", "s3://")):
        raise ConfigurationError(
            f"{where}={url!r}: use a folder (/mnt/cold or file:///mnt/cold) or s3://bucket/prefix"
        )
    storage_class = values["storage_class"]
    if storage_class:
        storage_class = str(storage_class).strip().upper()
        where_class = "LAMINA_COLD_STORAGE_CLASS (or storage_class in the tiers.cold table of lamina.toml)"
        if not url.startswith("s3://"):
            raise ConfigurationError(
                f"{where_class}={storage_class!r}: a storage class needs an s3:// cold tier"
            )
        if storage_class not in _STORAGE_CLASSES_READABLE:
            raise ConfigurationError(
                f"{where_class}={storage_class!r}: use a class read at once "
                f"({', '.join(_STORAGE_CLASSES_READABLE)}); GLACIER and DEEP_ARCHIVE need a restore "
                "request lamina does not make: model their delay with restore_delay_s on GLACIER_IR"
            )
    raw_delay = values["restore_delay_s"]
    delay = 0.0
    if raw_delay not in (None, ""):
        where_delay = (
            "LAMINA_COLD_RESTORE_DELAY_S (or restore_delay_s in the tiers.cold table of lamina.toml)"
        )
        try:
            if isinstance(raw_delay, bool):
                raise ValueError(raw_delay)
            delay = float(raw_delay.strip() if isinstance(raw_delay, str) else raw_delay)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where_delay}={raw_delay!r}: expected seconds, e.g. 14400") from None
        if not math.isfinite(delay) or delay < 0:
            raise ConfigurationError(f"{where_delay}={raw_delay!r}: seconds, 0 or more, e.g. 14400")
    return ColdTierSettings(url, storage_class or None, delay)


_EXCHANGE_KEYS = {
    "key_file": "LAMINA_EXCHANGE_KEY_FILE",
    "warehouses": None,
    "archive_url": "LAMINA_ARCHIVE_URL",
    "archive_token_file": "LAMINA_ARCHIVE_TOKEN_FILE",
    "limit_mb_per_s": "LAMINA_EXCHANGE_LIMIT_MB_PER_S",
}


@dataclass(frozen=True)
class ExchangeSettings:
    """Slides of interest leaving a site for the archive (``[exchange]`` in lamina.toml,
    :mod:`lamina.exchange`).

    Parameters
    ----------
    key_file
        The site's secret key (``LAMINA_EXCHANGE_KEY_FILE``; None: ``HOME/keys/site.key``, made
        on first use): its pseudonyms, replacement UIDs and date offsets.
    warehouses
        The health-data warehouses the site links with, each with its key file
        (``[exchange.warehouses] NAME = "path"``), by name.
    archive_url
        The archive node the site pushes to (``LAMINA_ARCHIVE_URL``, ``https://...``).
    archive_token_file
        The file holding the site's bearer token at the archive (``LAMINA_ARCHIVE_TOKEN_FILE``).
    limit_mb_per_s
        The push's bandwidth in MB/s (``LAMINA_EXCHANGE_LIMIT_MB_PER_S``; 0, the default: none).
    """

    key_file: Path | None = None
    warehouses: tuple[tuple[str, Path], ...] = ()
    archive_url: str | None = None
    archive_token_file: Path | None = None
    limit_mb_per_s: float = 0.0

    def site_key_file(self, home: Path) -> Path:
        """The site key's file: ``key_file``, else ``home/keys/site.key``."""
        return self.key_file or home / "keys" / "site.key"


def _exchange(env: dict[str, str], table: object) -> ExchangeSettings:
    """``[exchange]`` of lamina.toml, each key overridden by its ``LAMINA_*`` variable."""
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigurationError(
            "lamina.toml: exchange must be a table (key_file, warehouses, archive_url, ...)"
        )
    _known_keys("exchange", table, _EXCHANGE_KEYS)

    def where(key: str) -> str:
        variable = _EXCHANGE_KEYS[key]
        return f"{variable} (or {key} in the exchange table of lamina.toml)"

    def raw(key: str) -> object:
        variable = _EXCHANGE_KEYS[key]
        value = (env.get(variable) if variable else None) or table.get(key)
        return None if value == "" else value

    def path(key: str) -> Path | None:
        value = raw(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigurationError(f"{where(key)}={value!r}: expected a file's path")
        return Path(value).expanduser().absolute()

    warehouses = table.get("warehouses", {})
    if not isinstance(warehouses, dict):
        raise ConfigurationError('lamina.toml: exchange.warehouses must be a table of NAME = "key file path"')
    found: list[tuple[str, Path]] = []
    for name, key_path in warehouses.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", str(name)):
            raise ConfigurationError(
                f"lamina.toml: exchange.warehouses {name!r}: a name is 1 to 64 letters, digits, '.', '_' "
                "or '-'"
            )
        if not isinstance(key_path, str) or not key_path:
            raise ConfigurationError(
                f"lamina.toml: exchange.warehouses {name!r} = {key_path!r}: expected its key file's path"
            )
        found.append((str(name), Path(key_path).expanduser().absolute()))
    url = raw("archive_url")
    if url is not None:
        if not isinstance(url, str) or not url.strip().startswith(("https://", "http://")):
            raise ConfigurationError(
                f"{where('archive_url')}={url!r}: expected the archive node's address, "
                "e.g. https://archive.example.org"
            )
        url = url.strip().rstrip("/")
    limit_raw = raw("limit_mb_per_s")
    limit = 0.0
    if limit_raw is not None:
        try:
            if isinstance(limit_raw, bool):
                raise ValueError(limit_raw)
            limit = float(str(limit_raw).strip())
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{where('limit_mb_per_s')}={limit_raw!r}: expected MB/s, e.g. 20 (0: no limit)"
            ) from None
        if not math.isfinite(limit) or limit < 0:
            raise ConfigurationError(
                f"{where('limit_mb_per_s')}={limit_raw!r}: MB/s, 0 or more, e.g. 20 (0: no limit)"
            )
    return ExchangeSettings(
        key_file=path("key_file"),
        warehouses=tuple(found),
        archive_url=url,
        archive_token_file=path("archive_token_file"),
        limit_mb_per_s=limit,
    )


class Secret:
    """A value that never prints: ``str()`` and ``repr()`` give ``'**********'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"


@dataclass(frozen=True)
class Settings:
    """Where the archive lives and how it behaves.

    Parameters
    ----------
    home
        The data folder (``$LAMINA_HOME``, default ``./lamina-data``).
    database_url
        The catalog; default a SQLite file in ``home``.
    blob_url
        The blob store; default the folder ``home/blobs``.
    role
        ``site`` (a lab) or ``archive`` (the shared archive).
    public_url
        The server's address as clients see it (``LAMINA_PUBLIC_URL``, e.g. behind a reverse
        proxy); absolute URLs in DICOMweb answers start with it.
    viewer_vendor_dir
        Where the viewer's OpenSeadragon build is (``LAMINA_VIEWER_VENDOR``); default the
        checkout's ``node_modules``, which ``scripts/install`` fills from npm.
    max_upload_bytes
        The largest STOW-RS request body accepted (``LAMINA_MAX_UPLOAD_BYTES``, default 4 GiB).
    verify_after_write
        Read every stored object back and check it against the bytes written (XXH3-128 of
        both) before making a slide visible. ``LAMINA_VERIFY_AFTER_WRITE=0`` or
        ``verify_after_write = false`` in lamina.toml turns it off (not recommended).
    replica_url
        An optional second blob store (``LAMINA_REPLICA_URL``, ``replica_url`` in lamina.toml;
        ``file://`` or ``s3://`` like ``blob_url``): every object is also written there at
        ingest, and ``lamina verify --repair`` restores damaged objects from it.
    workers
        Job workers that ``lamina serve`` runs in its own process (``LAMINA_WORKERS``, default
        1; 0 leaves the jobs to ``lamina worker`` processes, PostgreSQL catalog only).
    stow_wait_s
        How long a STOW-RS request waits for its queued job before answering 202
        (``LAMINA_STOW_WAIT_S``, default 600).
    job_reports_keep_days
        How long the report of a queued STOW-RS job whose request answered 202 before it ended is
        kept (``LAMINA_JOB_REPORTS_KEEP_DAYS``, default 7), then removed by the periodic sweep.
    verify_cron
        When the server re-verifies every stored object (``LAMINA_VERIFY_CRON``, a cron line,
        default ``30 2 * * *``; ``off`` for never), read at ``verify_limit_mb_s``
        (``LAMINA_VERIFY_LIMIT_MB_S``, default 50 MB/s) so that serving keeps its bandwidth.
    lifecycle_cron
        When the server runs the care lifecycle (``LAMINA_LIFECYCLE_CRON``, a cron line, default
        ``30 3 * * *``; ``off`` for never): what ``lamina lifecycle run`` does.
    push_cron
        When a site pushes its slides of interest to its archive (``LAMINA_PUSH_CRON``, default
        every ten minutes; ``off`` for never): what ``lamina push`` does, on a site whose
        ``[exchange] archive_url`` is set.
    watch
        Folders the server watches for new slides (``LAMINA_WATCH``, separated by
        ``os.pathsep``; ``watch = [...]`` in lamina.toml), complete after ``watch_stable_s``
        seconds without change (``LAMINA_WATCH_STABLE_S``, default 5).
    s3
        Where an ``s3://`` store is and how to sign in: the standard variables
        ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_DEFAULT_REGION``, else the ``[s3]`` table of lamina.toml (``endpoint_url``,
        ``access_key_id``, ``secret_access_key``, ``region``). Never printed.
    lossless_codec
        The codec of the pixels lamina must re-encode losslessly (``LAMINA_LOSSLESS_CODEC``):
        ``auto`` (the default: JPEG-LS, measured 5 times faster than JPEG 2000 and a little
        smaller, for a slide whose pyramid is re-encoded; JPEG 2000 for the few re-encoded frames
        of a slide whose tiles are copied), ``jpeg-ls`` or ``jpeg2000`` (what OpenSlide 4 reads)
        everywhere; ``lamina ingest --lossless`` chooses per run.
    api_threads
        The bounded thread pool in which ``lamina serve`` runs request work that may block
        (catalog queries, S3 reads, decoding): ``LAMINA_API_THREADS``, default 40.
    allowed_hosts
        Host names (``LAMINA_ALLOWED_HOSTS``, separated by commas) under which clients may address
        the server when ``public_url`` is unset, beside ``localhost``, the loopback addresses and
        the address a request came in on; a request under another name that needs absolute URLs
        gets 400. ``*`` allows any name (not recommended: absolute URLs then follow the client).
    trusted_proxies
        Addresses or networks of reverse proxies (``LAMINA_TRUSTED_PROXIES``, separated by
        commas) whose ``Forwarded`` / ``X-Forwarded-*`` headers are believed; none by default.
    max_frames_bytes
        The largest WADO-RS frames or bulk data answer, in bytes, as stored or as decoded when
        transcoded (``LAMINA_MAX_FRAMES_BYTES``, default 32 MiB).
    max_transcode_bytes
        The most decoded pixel bytes one retrieve of whole instances may transcode to Explicit VR
        Little Endian (``LAMINA_MAX_TRANSCODE_BYTES``, default 1 GiB, at most 4 GiB per instance);
        also the most one instance sent by C-MOVE, C-GET or ``lamina send`` may be, decoded, when
        the peer takes only uncompressed data.
    background_nice
        The nice value at which long work runs (``LAMINA_BACKGROUND_NICE``, 0 to 19, default 19;
        0 for none): slides ingested, fixity runs, job workers, so that tile serving keeps the
        CPU first on a busy host (:mod:`lamina.archive.priority`).
    shutdown_grace_s
        How long ``lamina serve`` lets requests in flight finish after SIGTERM or Ctrl-C
        (``LAMINA_SHUTDOWN_GRACE_S``, default 30).
    blob_cache_bytes, blob_cache_disk_bytes, blob_cache_dir, blob_cache_block_bytes
        The read-through cache of object blocks in front of the blob store
        (:mod:`lamina.archive.blobstore.cache`, ``docs/storage.md``): bytes kept in memory
        (``LAMINA_BLOB_CACHE_BYTES``, e.g. ``512 MiB``; default 0, off), bytes kept on a local
        disk (``LAMINA_BLOB_CACHE_DISK_BYTES``, default 0, off) in ``LAMINA_BLOB_CACHE_DIR``
        (default ``$LAMINA_HOME/cache/blobs``), and the block fetched and kept
        (``LAMINA_BLOB_CACHE_BLOCK_BYTES``, default 1 MiB). Worth it on an S3 store; a folder
        store is read in place.
    dimse_ae_title, dimse_calling_ae_titles
        The DIMSE server's AE title (``LAMINA_DIMSE_AE_TITLE``, default ``LAMINA``;
        ``lamina serve --ae-title`` overrides it), also the calling AE title of ``lamina send``;
        and the calling AE titles allowed to associate with it (``LAMINA_DIMSE_CALLING_AE_TITLES``,
        separated by commas; default any: an allow-list, not a sign-in).
    dimse_max_dataset_bytes, dimse_max_find_matches, dimse_network_timeout_s
        Its limits (:class:`lamina.dimse.DimseOptions`): the largest C-STORE data set
        (``LAMINA_DIMSE_MAX_DATASET_BYTES``, default 4 GiB), the most C-FIND matches answered
        (``LAMINA_DIMSE_MAX_FIND_MATCHES``, default 10,000) and the seconds after which a silent
        association is aborted (``LAMINA_DIMSE_NETWORK_TIMEOUT_S``, default 60).
    dimse_tls_cert, dimse_tls_key, dimse_tls_ca
        DIMSE over TLS (``LAMINA_DIMSE_TLS_CERT``, ``LAMINA_DIMSE_TLS_KEY``: PEM files of the
        server's certificate chain and private key; both set, the DIMSE server accepts TLS
        associations only, TLS 1.2 or later), and ``LAMINA_DIMSE_TLS_CA``: PEM file of the CAs
        whose client certificates are required and verified (default none: no client certificate).
    cold_tier
        The cold tier of the care lifecycle (:class:`ColdTierSettings`, the ``[tiers.cold]`` table
        of lamina.toml or ``LAMINA_COLD_URL``, ``LAMINA_COLD_STORAGE_CLASS``,
        ``LAMINA_COLD_RESTORE_DELAY_S``); None (default) for none. The hot tier is ``blob_url``.
    exchange
        Slides of interest pushed from a site to the archive (:class:`ExchangeSettings`, the
        ``[exchange]`` table of lamina.toml: the site key, the warehouses' keys, the archive's
        address and token, the push's bandwidth).
    auth_issuer, auth_claims
        An OpenID provider whose tokens the node accepts beside its own issuer's, and how their
        claims name the person and their roles per lab: the ``[auth]`` table of lamina.toml
        (:class:`lamina.governance.oidc.IssuerConfig`: ``issuer``, ``discovery_url``,
        ``audience``, ``required_acr``...) and its ``[auth.claims]`` table
        (:class:`lamina.governance.claims.ClaimsMapping`); ``docs/governance.md`` shows them for
        Pro Santé Connect and Keycloak. Default none: only the node's own tokens. ``auth_viewer``:
        its ``[auth.viewer]`` table, the viewer's client at the provider (sign-in by authorization
        code with PKCE: :mod:`lamina.governance.viewer_client`).
    """

    home: Path
    database_url: str
    blob_url: str
    role: str = "site"
    verify_after_write: bool = True
    public_url: str | None = None
    max_upload_bytes: int = 4 << 30
    viewer_vendor_dir: Path | None = None
    replica_url: str | None = None
    workers: int = 1
    stow_wait_s: float = 600.0
    job_reports_keep_days: float = 7.0
    verify_cron: str | None = "30 2 * * *"
    lifecycle_cron: str | None = "30 3 * * *"
    push_cron: str | None = "*/10 * * * *"
    verify_limit_mb_s: float = 50.0
    watch: tuple[Path, ...] = ()
    watch_stable_s: float = 5.0
    api_threads: int = 40
    lossless_codec: str = "auto"
    allowed_hosts: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    max_frames_bytes: int = 32 << 20
    max_transcode_bytes: int = 1 << 30
    shutdown_grace_s: float = 30.0
    background_nice: int = 19
    blob_cache_bytes: int = 0
    blob_cache_disk_bytes: int = 0
    blob_cache_dir: Path | None = None
    blob_cache_block_bytes: int = 1 << 20
    dimse_ae_title: str = "LAMINA"
    dimse_calling_ae_titles: tuple[str, ...] = ()
    dimse_max_dataset_bytes: int = 4 << 30
    dimse_max_find_matches: int = 10_000
    dimse_network_timeout_s: float = 60.0
    dimse_tls_cert: Path | None = None
    dimse_tls_key: Path | None = None
    dimse_tls_ca: Path | None = None
    cold_tier: ColdTierSettings | None = None
    exchange: ExchangeSettings = field(default_factory=ExchangeSettings)
    s3: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    auth_issuer: IssuerConfig | None = field(default=None, compare=False, repr=False)
    auth_claims: ClaimsMapping | None = field(default=None, compare=False, repr=False)
    auth_viewer: ViewerClient | None = field(default=None, compare=False, repr=False)

    @classmethod
    def load(cls, home: Path | str | None = None, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        root = Path(home or env.get("LAMINA_HOME") or DEFAULT_HOME).expanduser().absolute()
        file_values: dict[str, Any] = {}
        toml_path = root / "lamina.toml"
        if toml_path.is_file():
            try:
                file_values = tomllib.loads(toml_path.read_text("utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"{toml_path}: not valid TOML ({exc}); fix or remove it") from exc
            _warn_unknown(toml_path, file_values)
        settings = cls(
            home=root,
            database_url=str(
                env.get("LAMINA_DATABASE_URL")
                or file_values.get("database_url")
                or f"sqlite:///{root / 'catalog.sqlite'}"
            ),
            blob_url=str(
                env.get("LAMINA_BLOB_URL") or file_values.get("blob_url") or f"file://{root / 'blobs'}"
            ),
            role=str(env.get("LAMINA_ROLE") or file_values.get("role") or "site"),
            public_url=env.get("LAMINA_PUBLIC_URL") or file_values.get("public_url") or None,
            viewer_vendor_dir=Path(vendor)
            if (vendor := env.get("LAMINA_VIEWER_VENDOR") or file_values.get("viewer_vendor_dir"))
            else None,
            max_upload_bytes=_bytes(env, file_values, "max_upload_bytes", 4 << 30),
            verify_after_write=_flag(
                env.get("LAMINA_VERIFY_AFTER_WRITE", file_values.get("verify_after_write", True))
            ),
            replica_url=str(replica)
            if (replica := env.get("LAMINA_REPLICA_URL") or file_values.get("replica_url"))
            else None,
            workers=_number(env, file_values, "workers", 1, int),
            stow_wait_s=_number(env, file_values, "stow_wait_s", 600.0, float),
            job_reports_keep_days=_number(env, file_values, "job_reports_keep_days", 7.0, float),
            verify_cron=_cron(env.get("LAMINA_VERIFY_CRON") or file_values.get("verify_cron")),
            lifecycle_cron=_cron(
                env.get("LAMINA_LIFECYCLE_CRON") or file_values.get("lifecycle_cron"),
                "LAMINA_LIFECYCLE_CRON",
                "30 3 * * *",
            ),
            push_cron=_cron(
                env.get("LAMINA_PUSH_CRON") or file_values.get("push_cron"),
                "LAMINA_PUSH_CRON",
                "*/10 * * * *",
            ),
            verify_limit_mb_s=_number(env, file_values, "verify_limit_mb_s", 50.0, float),
            watch=_folders(env.get("LAMINA_WATCH"), file_values.get("watch")),
            watch_stable_s=_number(env, file_values, "watch_stable_s", 5.0, float),
            api_threads=max(1, _number(env, file_values, "api_threads", 40, int)),
            lossless_codec=str(_setting(env, file_values, "lossless_codec") or "auto"),
            allowed_hosts=_names(env, file_values, "allowed_hosts"),
            trusted_proxies=_networks(env, file_values),
            max_frames_bytes=_bytes(env, file_values, "max_frames_bytes", 32 << 20),
            max_transcode_bytes=_bytes(env, file_values, "max_transcode_bytes", 1 << 30),
            shutdown_grace_s=_number(env, file_values, "shutdown_grace_s", 30.0, float),
            background_nice=_number(env, file_values, "background_nice", 19, int),
            blob_cache_bytes=_bytes(env, file_values, "blob_cache_bytes", 0),
            blob_cache_disk_bytes=_bytes(env, file_values, "blob_cache_disk_bytes", 0),
            blob_cache_dir=Path(folder).expanduser().absolute()
            if (folder := env.get("LAMINA_BLOB_CACHE_DIR") or file_values.get("blob_cache_dir"))
            else None,
            blob_cache_block_bytes=_bytes(env, file_values, "blob_cache_block_bytes", 1 << 20),
            dimse_ae_title=_ae_title(
                "dimse_ae_title", str(_setting(env, file_values, "dimse_ae_title") or "LAMINA"), "LAMINA"
            ),
            dimse_calling_ae_titles=tuple(
                _ae_title("dimse_calling_ae_titles", title, "SCANNER1,PACS")
                for title in _names(env, file_values, "dimse_calling_ae_titles")
            ),
            dimse_max_dataset_bytes=_bytes(env, file_values, "dimse_max_dataset_bytes", 4 << 30),
            dimse_max_find_matches=_number(env, file_values, "dimse_max_find_matches", 10_000, int),
            dimse_network_timeout_s=_number(env, file_values, "dimse_network_timeout_s", 60.0, float),
            dimse_tls_cert=_file(env, file_values, "dimse_tls_cert"),
            dimse_tls_key=_file(env, file_values, "dimse_tls_key"),
            dimse_tls_ca=_file(env, file_values, "dimse_tls_ca"),
            s3=_s3_settings(env, file_values.get("s3", {})),
            cold_tier=_cold_tier(env, file_values.get("tiers")),
            exchange=_exchange(env, file_values.get("exchange")),
            **_auth(file_values.get("auth")),
        )
        if not 4096 <= settings.blob_cache_block_bytes <= 64 << 20:
            raise ConfigurationError(
                f"LAMINA_BLOB_CACHE_BLOCK_BYTES={settings.blob_cache_block_bytes}: between 4 KiB and "
                "64 MiB (default 1 MiB)"
            )
        if not 0 <= settings.background_nice <= 19:
            raise ConfigurationError(
                f"LAMINA_BACKGROUND_NICE={settings.background_nice}: a nice value from 0 (long work at "
                "the priority of serving) to 19 (the lowest); default 19"
            )
        if settings.dimse_max_find_matches < 1:
            raise ConfigurationError("LAMINA_DIMSE_MAX_FIND_MATCHES=0: at least 1 (default 10000)")
        if settings.dimse_network_timeout_s <= 0:
            raise ConfigurationError("LAMINA_DIMSE_NETWORK_TIMEOUT_S=0: seconds, more than 0 (default 60)")
        if settings.lossless_codec not in ("auto", "jpeg-ls", "jpeg2000"):
            raise ConfigurationError(
                f"LAMINA_LOSSLESS_CODEC={settings.lossless_codec!r}: 'auto' (the default), 'jpeg-ls' "
                "or 'jpeg2000' (for readers that take only JPEG 2000, such as OpenSlide 4)"
            )
        if settings.role not in ("site", "archive"):
            raise ConfigurationError(f"LAMINA_ROLE={settings.role!r}: must be 'site' or 'archive'")
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _warn_unknown(path: Path, file_values: dict[str, Any]) -> None:
    """Log once the keys of lamina.toml that no setting reads (a misspelt key would otherwise be
    ignored without a word), each with the nearest known key."""
    known = (
        {item.name for item in fields(Settings)}
        - {"home", "auth_issuer", "auth_claims", "auth_viewer", "cold_tier"}
    ) | {"auth", "tiers"}
    unknown = [key for key in file_values if key not in known]
    table = file_values.get("s3")
    if isinstance(table, dict):
        known |= {f"s3.{key}" for key in _S3_KEYS.values()}
        unknown += [f"s3.{key}" for key in table if key not in _S3_KEYS.values()]
    if not unknown or (path, tuple(unknown)) in _WARNED:
        return
    _WARNED.add((path, tuple(unknown)))
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    log.warning(
        "%s: unknown key(s) %s, ignored; the settings are listed in docs/architecture.md#settings",
        path,
        ", ".join(named),
    )
