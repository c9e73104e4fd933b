"""The site's secret keys and what is derived from them.

One key per site (``[exchange] key_file``, ``LAMINA_EXCHANGE_KEY_FILE``; by default
``HOME/keys/site.key``, 32 random bytes made on first use, readable by its owner only) and one per
health-data warehouse (EDS) the site links with (``[exchange.warehouses] NAME = "path"``). From the
site key come:

- the **pseudonyms** of a PatientID and an AccessionNumber: HMAC-SHA-256 of the value, with a
  domain label so that a patient's pseudonym never equals an accession's. A PatientID (LO, 64
  characters) becomes the 64 hexadecimal digits of the MAC; an AccessionNumber (SH, 16 characters)
  the first 80 bits in base 32 (16 characters). A warehouse's pseudonym is the same MAC under the
  warehouse's key: the warehouse computes it over its own records and links; nobody else can;
- the **replacement UIDs** (``2.25.`` and 128 bits of the MAC of the original UID): stable at the
  site, so a slide sent twice is recognised at the archive, and unlinkable without the key;
- each patient's **date offset** (Retain Longitudinal Temporal Information with Modified Dates,
  PS3.15 E.3.6): a whole number of days between 1 and 3,650 taken back from every date of that
  patient, the same for all their slides, so that intervals are kept.

Keys are never printed, logged, or put in an error: :meth:`ExchangeKeys.__repr__` names only the
files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.errors import ConfigurationError

if TYPE_CHECKING:
    from lamina.config import Settings

__all__ = ["KEY_BYTES", "ExchangeKeys", "read_key"]

#: The length of a key, in bytes (HMAC-SHA-256's block is longer; 256 bits are plenty).
KEY_BYTES = 32
#: The most days a patient's dates are moved back.
MAX_DATE_OFFSET_DAYS = 3650


def read_key(path: Path, *, create: bool = False) -> bytes:
    """The key in ``path`` (raw bytes, or their hexadecimal digits on one line); made there, with
    mode 0600, when ``create`` and the file does not exist."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.hex().encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        return key
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"key file {path}: cannot be read ({exc.strerror}); check [exchange] in lamina.toml"
        ) from None
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii")) if len(text) in (2 * KEY_BYTES, 128) else raw
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < KEY_BYTES:
        raise ConfigurationError(
            f"key file {path}: holds {len(key)} bytes, at least {KEY_BYTES} are needed "
            f"(make one with: python -c 'import secrets; print(secrets.token_hex({KEY_BYTES}))' > {path})"
        )
    return key


def _mac(key: bytes, domain: str, value: str) -> bytes:
    return hmac.new(key, f"{domain}\x00{value}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class ExchangeKeys:
    """The site key and the warehouses' keys (the module's docstring)."""

    site: bytes = field(repr=False)
    warehouses: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    where: str = ""

    def __post_init__(self) -> None:
        if len(self.site) < KEY_BYTES:
            raise ConfigurationError(f"the site key holds {len(self.site)} bytes; at least {KEY_BYTES}")

    def __repr__(self) -> str:
        return f"ExchangeKeys(site from {self.where or 'memory'}, warehouses={sorted(self.warehouses)})"

    @classmethod
    def load(cls, site_file: Path, warehouses: Mapping[str, Path] | None = None) -> ExchangeKeys:
        """The keys in these files; the site key is made on first use."""
        return cls(
            read_key(site_file, create=True),
            {name: read_key(path) for name, path in (warehouses or {}).items()},
            where=str(site_file),
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> ExchangeKeys:
        """The keys of a node's ``[exchange]`` settings: the site key (made on first use in
        ``HOME/keys/site.key`` unless ``key_file`` names another) and each warehouse's."""
        exchange = settings.exchange
        return cls.load(exchange.site_key_file(settings.home), dict(exchange.warehouses))

    # -- pseudonyms -----------------------------------------------------------------------------

    def patient_pseudonym(self, patient_id: str, warehouse: str | None = None) -> str:
        """The pseudonym of a PatientID: 64 hexadecimal digits; under ``warehouse``'s key when
        given (:class:`ConfigurationError` for a warehouse with no key)."""
        return _mac(self._key(warehouse), "PatientID", patient_id).hex()

    def accession_pseudonym(self, accession: str, warehouse: str | None = None) -> str:
        """The pseudonym of an AccessionNumber: 16 base-32 characters (SH's limit)."""
        digest = _mac(self._key(warehouse), "AccessionNumber", accession)
        return base64.b32encode(digest[:10]).decode("ascii")

    def _key(self, warehouse: str | None) -> bytes:
        if warehouse is None:
            return self.site
        try:
            return self.warehouses[warehouse]
        except KeyError:
            known = ", ".join(sorted(self.warehouses)) or "none is configured"
            raise ConfigurationError(
                f"no key for the health-data warehouse {warehouse!r} ({known}); add it under "
                "[exchange.warehouses] in lamina.toml"
            ) from None

    # -- what de-identification derives ----------------------------------------------------------

    def uid(self, original: str) -> str:
        """The replacement of a Study, Series, SOP Instance or Frame of Reference UID: ``2.25.``
        and the first 128 bits of its MAC as a decimal number (at most 44 characters)."""
        return "2.25." + str(int.from_bytes(_mac(self.site, "UID", original)[:16], "big"))

    def date_offset_days(self, patient_id: str) -> int:
        """How many days a patient's dates are moved back: 1 to :data:`MAX_DATE_OFFSET_DAYS`."""
        value = int.from_bytes(_mac(self.site, "DateOffset", patient_id)[:8], "big")
        return 1 + value % MAX_DATE_OFFSET_DAYS
