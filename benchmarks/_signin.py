"""Signing in for the benchmarks: every lamina server they start requires a bearer token, as in
production (issue 10).

:func:`sign_in` registers, on the archive a benchmark serves, the benchmarks' lab
(:data:`BENCH_LAB`) and a person with the roles the benchmark needs there (a pathologist reads
frames; a technician stores), and issues that person a token from the node's own issuer (the keys
in ``$LAMINA_HOME``, which the server reads): the token ``wrk`` and the HTTP clients send as
``Authorization: Bearer ...``. Registering the first lab of an archive makes it adopt what was
stored before (the slides ingested by the benchmark), as on a real node.

:data:`NO_TOKEN_APP` is the script of ``tiles.py``'s "without a token" server: the same archive,
served by the same application and uvicorn settings as ``lamina serve``, with the sign-in layer
(``lamina.api.auth.Authenticate``) taken off and the principal the token maps to put into every
request instead. Nothing in lamina can serve without a token: this exists only here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
#: the benchmarks' lab (a FINESS number: 9 characters)
BENCH_LAB = "759900017"
PATHOLOGIST = "bench-pathologist"
TECHNICIAN = "bench-technician"
TOKEN_SECONDS = 4 * 3600


def sign_in(home: Path, env: dict[str, str] | None, person: str, roles: Iterable[str]) -> str:
    """Register :data:`BENCH_LAB` and ``person`` with ``roles`` on the archive of ``home`` (with
    ``env``: the scaled deployment's database), and return a token of that person."""
    sys.path.insert(0, str(REPO / "src"))
    from lamina.archive.catalog import Catalog
    from lamina.config import Settings
    from lamina.errors import RequestError
    from lamina.governance.issuer import LocalIssuer
    from lamina.governance.registry import Registry
    from lamina.governance.roles import Role

    settings = Settings.load(home, env={**os.environ, **(env or {}), "LAMINA_HOME": str(home)})
    catalog = Catalog.open(settings.database_url)
    try:
        registry = Registry(catalog)
        if BENCH_LAB not in {tenant.finess for tenant in registry.tenants()}:
            with contextlib.suppress(RequestError):
                registry.add_tenant(BENCH_LAB, "Anatomie pathologique (benchmarks)", "benchmarks")
        registry.add_person(person, BENCH_LAB, [Role(role) for role in roles], person, "benchmarks")
    finally:
        catalog.close()
    return LocalIssuer.open(settings.home).issue(person, TOKEN_SECONDS)


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header of ``token`` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


NO_TOKEN_APP = textwrap.dedent('''
    """lamina's application on $LAMINA_HOME with the sign-in layer taken off (benchmark only).

    The principal of $BENCH_TOKEN is resolved once, as the server would (Principals.resolve: the
    token validated, the person's roles read from the registry); each HTTP request then gets it in
    scope["state"]["principal"] and goes to what Authenticate wraps (the frames fast path, then
    Starlette), where every rule and decision runs as with a token. What is left out: reading the
    Authorization header, the token's hash and its look-up in the cache of principals.
    """
    import logging, os, sys
    import uvicorn
    from lamina.api.app import create_app
    from lamina.archive.archive import Archive
    from lamina.cli.serve import server_config
    from lamina.config import Settings
    from lamina.governance.issuer import LocalIssuer
    from lamina.governance.principals import Principals, TrustedIssuer

    class Injected:
        def __init__(self, app, principal):
            self.inner = app._call.app  # FramesFastPath(Starlette), inside Authenticate
            self.principal = principal

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                scope.setdefault("state", {})["principal"] = self.principal
            await self.inner(scope, receive, send)

    settings = Settings.load()
    archive = Archive.open(settings)
    validator = LocalIssuer.open(settings.home).validator()
    principal = Principals(archive.catalog, [TrustedIssuer(validator)]).resolve(os.environ.pop("BENCH_TOKEN"))
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("lamina.api").setLevel(logging.INFO)
    full = create_app(settings, archive)
    # "--with-sign-in": the whole application, sign-in included, run by this same script (so
    # that the two servers differ by the sign-in layer alone, not by how they were started)
    app = full if "--with-sign-in" in sys.argv else Injected(full, principal)
    try:
        uvicorn.Server(server_config(app, settings, "127.0.0.1", int(sys.argv[1]))).run()
    finally:
        archive.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
''')


def start_without_token(
    work: Path,
    home: Path,
    port: int,
    token: str,
    log: Path,
    extra_env: dict[str, str] | None = None,
    with_sign_in: bool = False,
) -> subprocess.Popen[bytes]:
    """The "without a token" server (:data:`NO_TOKEN_APP`) on ``port``, as the principal of
    ``token`` (``with_sign_in``: the same script serving the whole application, sign-in on); the
    caller waits for it to answer."""
    script = work / "no_token_app.py"
    script.write_text(NO_TOKEN_APP)
    env = {**os.environ, "LAMINA_HOME": str(home), **(extra_env or {}), "BENCH_TOKEN": token}
    return subprocess.Popen(
        [str(VENV_BIN / "python"), str(script), str(port), *(["--with-sign-in"] if with_sign_in else [])],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
