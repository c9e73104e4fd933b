"""The one error hierarchy: every error lamina raises on purpose is a LaminaError defined in
lamina.errors, where a reader finds them all."""

from __future__ import annotations

import importlib
import pkgutil

import lamina
from lamina import errors
from lamina.errors import LaminaError, PeerError


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_lamina_error_is_defined_in_the_errors_module() -> None:
    for module in pkgutil.walk_packages(lamina.__path__, "lamina."):
        # __main__ runs the command line; Alembic's migration scripts run inside Alembic only
        if module.name != "lamina.__main__" and ".migrations." not in module.name:
            importlib.import_module(module.name)

    elsewhere = {f"{cls.__module__}.{cls.__qualname__}" for cls in _subclasses(LaminaError)}
    elsewhere = {name for name in elsewhere if not name.startswith("lamina.errors.")}

    assert elsewhere == set(), "define these in lamina/errors.py"


def test_peer_error_keeps_its_import_paths() -> None:
    from lamina import peers
    from lamina.peers import entity

    assert peers.PeerError is entity.PeerError is PeerError is errors.PeerError
    error = PeerError("PACS@10.0.0.5:104", "no DICOM association could be made")
    assert isinstance(error, LaminaError) and error.peer == "PACS@10.0.0.5:104"
    assert str(error) == "PACS@10.0.0.5:104: no DICOM association could be made"


def test_sign_in_errors_answer_401_with_the_bearer_challenge_and_403() -> None:
    import asyncio

    from starlette.requests import Request

    from lamina.api.problems import handle_lamina_error
    from lamina.errors import AuthenticationError, PermissionDeniedError

    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    unauthorized = asyncio.run(handle_lamina_error(request, AuthenticationError()))
    assert unauthorized.status_code == 401
    assert unauthorized.headers["WWW-Authenticate"] == 'Bearer realm="lamina", error="invalid_token"'
    missing = asyncio.run(handle_lamina_error(request, AuthenticationError("no token", "invalid_request")))
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="lamina", error="invalid_request"'
    forbidden = asyncio.run(handle_lamina_error(request, PermissionDeniedError("read", "not granted")))
    assert forbidden.status_code == 403
    assert "WWW-Authenticate" not in forbidden.headers
