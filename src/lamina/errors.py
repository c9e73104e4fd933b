"""The one error hierarchy of lamina.

``except LaminaError`` catches every error lamina raises on purpose. Each message names the
file, field or parameter concerned and says how to fix it; callers print it as one line, with
no traceback.
"""

from __future__ import annotations

import errno
import math
from pathlib import Path


class LaminaError(Exception):
    """Base of every error lamina raises on purpose."""


class ConfigurationError(LaminaError):
    """A setting is missing or wrong (environment, settings file or command-line option)."""


def quote_name(name: object) -> str:
    """A file name as a one-line message shows it: as it is, or quoted as Python's ``repr`` quotes
    it when it holds a control character (a newline, an escape) or another unprintable one."""
    text = str(name)
    return text if text.isprintable() else repr(text)


class SourceError(LaminaError):
    """A slide file cannot be ingested. ``path`` names the file, ``reason`` says why and how to fix."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{quote_name(self.path)}: {reason}")


class UnsupportedFormatError(SourceError):
    """No reader recognises the file as a slide."""


class CorruptSourceError(SourceError):
    """The file looks like a supported format but is truncated or damaged."""


class MissingMetadataError(SourceError):
    """The file lacks something the DICOM output needs (pixel spacing, ...), and nothing gave it."""


class ManifestError(LaminaError):
    """The manifest file is malformed; the message names the file, row and field."""


class InvalidValueError(LaminaError, ValueError):
    """A value does not fit the DICOM attribute it is for (format, length, characters); the
    message says what is expected. Also a ValueError, as the model's callers caught before."""


class CodecError(LaminaError, ValueError):
    """A frame cannot be decoded or encoded: its bytes are damaged, or its encoding is not one
    lamina handles; the message names the codec and what is wrong. Also a ValueError, as the
    codec's callers caught before."""


class StorageError(LaminaError):
    """The blob store or the catalog failed (disk full, permissions, digest mismatch)."""


class InsufficientStorageError(StorageError):
    """No space left where lamina writes (a disk full, a quota reached). ``where`` names the place
    (the blob store folder, the catalog, a spool folder); the message says what to free or move.
    What was being written is removed: nothing is left half-written."""

    #: The ``errno`` of a write that failed for lack of space: a full disk, a quota reached.
    ERRNOS = (errno.ENOSPC, errno.EDQUOT)

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(message)


class UnavailableError(StorageError):
    """A service that may come back (an S3 endpoint down, throttling, a 5xx): the work is retried
    later rather than reported as failed at once."""


class IntegrityError(StorageError):
    """Stored bytes do not match their recorded SHA-256."""


class NotFoundError(LaminaError):
    """A slide, instance or object asked for does not exist."""


class RequestError(LaminaError):
    """A request's parameter is malformed. ``parameter`` names it; the message says what is expected."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class NotAcceptableError(LaminaError):
    """None of the media types or transfer syntaxes the client accepts can be produced."""


class PayloadTooLargeError(LaminaError):
    """An upload or a decoded image is over the configured limit."""


class PeerError(LaminaError):
    """A DICOM peer could not be reached, or refused the association. ``peer`` names it; the
    message says what to check."""

    def __init__(self, peer: str, message: str) -> None:
        self.peer = peer
        super().__init__(f"{peer}: {message}")


class AuthenticationError(LaminaError):
    """A request carries no credentials, or ones that cannot be believed (a token malformed,
    expired, not yet valid, for another audience or issuer, tampered with, signed by an unknown
    key). ``error`` is the RFC 6750 code (``invalid_request``, ``invalid_token``); the message is
    what the client may read: it never says which check failed beyond that, nor repeats the token."""

    def __init__(self, message: str = "a valid bearer token is needed", error: str = "invalid_token") -> None:
        self.error = error
        super().__init__(message)


class PermissionDeniedError(LaminaError):
    """An authenticated principal may not do what it asked. ``action`` names the action refused."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        super().__init__(message)


class ThrottledError(LaminaError):
    """Too many failed sign-ins for this person from this client: retry after ``retry_after_s``
    (429 with ``Retry-After``)."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed sign-ins; retry in {math.ceil(retry_after_s)} s")


class GoneError(LaminaError):
    """What was asked for existed and was deleted on purpose: a slide expired after its care
    retention, of which only the trace (record and thumbnail) is kept (410 over HTTP)."""


class RestoringError(LaminaError):
    """What was asked for is on a cold tier and is being brought back: ask again after
    ``retry_after_s`` seconds (202 with ``Retry-After`` over HTTP)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class RuleError(RequestError):
    """A rule file or a rule is malformed. The message starts with where: the file (``source``),
    the ``line`` (1-based, where known), the rule (``where``: ``rule 'name'``, ``rule #3`` or
    ``[defaults]``) and the ``field``; ``reason`` says what is expected."""

    def __init__(
        self,
        source: str,
        reason: str,
        *,
        line: int | None = None,
        where: str | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.where = where
        self.field = field
        self.reason = reason
        parts = [quote_name(source)]
        if line is not None:
            parts.append(f"line {line}")
        if where is not None:
            parts.append(where)
        if field is not None:
            parts.append(f"field {field}")
        super().__init__(", ".join(parts), reason)


class ReportError(RequestError):
    """A DiagnosticReport lamina does not take: ``status`` (400, 415 or 422), the
    OperationOutcome issue's ``code`` and the FHIRPath ``expression`` of the field."""

    def __init__(self, status: int, code: str, expression: str, message: str) -> None:
        super().__init__(expression, message)
        self.status = status
        self.code = code
        self.expression = expression
        self.message = message


class InvalidResourceError(RequestError):
    """Several fields of a FHIR resource are wrong at once: ``issues`` holds (OperationOutcome
    issue code, diagnostics, FHIRPath expression or None), one per field (400)."""

    def __init__(self, issues: list[tuple[str, str, str | None]]) -> None:
        _code, diagnostics, expression = issues[0] if issues else ("invalid", "not a valid resource", None)
        super().__init__(expression or "body", diagnostics)
        self.issues = issues


class ExchangeError(RequestError):
    """An archive's refusal of a slide a site sends, which the site acts on: ``status`` (409,
    422) and the JSON ``body`` to answer (:mod:`lamina.exchange.receiving`)."""

    def __init__(self, status: int, body: dict[str, object], message: str) -> None:
        super().__init__("series_instance_uid", message)
        self.status = status
        self.body = body
