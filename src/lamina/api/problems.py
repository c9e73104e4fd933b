"""The one table from domain errors to HTTP answers (RFC 9457 problem details)."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lamina.api.auth import challenge
from lamina.errors import (
    AuthenticationError,
    ConfigurationError,
    GoneError,
    InsufficientStorageError,
    IntegrityError,
    LaminaError,
    NotAcceptableError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    RestoringError,
    StorageError,
    ThrottledError,
)

STATUS: list[tuple[type[LaminaError], int, str]] = [
    # a slide on the cold tier, being restored: not an error, ask again after Retry-After
    (RestoringError, 202, "Restoring"),
    (RequestError, 400, "Bad request"),
    (AuthenticationError, 401, "Unauthorized"),
    (PermissionDeniedError, 403, "Forbidden"),
    (NotFoundError, 404, "Not found"),
    (NotAcceptableError, 406, "Not acceptable"),
    # a slide expired after its care retention: its trace (record, thumbnail) is all there is
    (GoneError, 410, "Gone"),
    (PayloadTooLargeError, 413, "Payload too large"),
    (ThrottledError, 429, "Too many requests"),
    (IntegrityError, 500, "Stored object damaged"),
    (InsufficientStorageError, 507, "Insufficient storage"),
    (StorageError, 503, "Storage unavailable"),
    (ConfigurationError, 500, "Server misconfigured"),
    (LaminaError, 500, "Server error"),
]


def problem(status: int, title: str, detail: str) -> Response:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


async def handle_lamina_error(request: Request, exc: Exception) -> Response:
    for cls, status, title in STATUS:
        if isinstance(exc, cls):
            answer = problem(status, title, str(exc))
            if isinstance(exc, AuthenticationError):  # RFC 6750 section 3
                answer.headers["WWW-Authenticate"] = challenge(exc.error)
            elif isinstance(exc, ThrottledError | RestoringError):
                answer.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
            return answer
    return problem(500, "Server error", "unexpected error")
