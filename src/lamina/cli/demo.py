"""``lamina demo``: a ready archive with sample slides, for a first look."""

from __future__ import annotations

import click

from lamina.archive.archive import Archive
from lamina.cli.common import console, handle_errors, open_archive

#: The demo's two labs, each with its pathologist: isolation at work
DEMO_LABS = (
    ("750712184", "Anatomie pathologique, hôpital de démonstration A", "pathologist-a"),
    ("690781810", "Anatomie pathologique, hôpital de démonstration B", "pathologist-b"),
)
_SIGN_IN_FILE = "demo-sign-in.json"


@click.command()
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the archive at the end.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_context
@handle_errors
def demo(ctx: click.Context, serve: bool, port: int) -> None:
    """Write sample slides, ingest them into two labs with their manifest, give each lab a
    pathologist with a password, list the slides, and serve the archive (viewer and DICOMweb on
    http://127.0.0.1:8000/): each pathologist sees only their lab's slides."""
    from lamina.archive.discover import discover
    from lamina.archive.ingest import IngestOptions
    from lamina.archive.manifest import load_manifest
    from lamina.cli.slides import slides
    from lamina.sample import write_samples

    archive = open_archive(ctx)
    folder = archive.settings.home / "samples"
    if not (folder / "manifest.csv").exists():
        console.print(f"writing sample slides into {folder} ...")
        write_samples(folder)
    people = _labs_and_people(archive)
    manifest = load_manifest(folder / "manifest.csv")
    receiver = archive.receiver()
    # the samples shared between the labs, one in two each (a case stays in one lab)
    for number, candidate in enumerate(discover([folder])):
        finess = DEMO_LABS[number % 2][0]
        result = receiver.ingest(candidate, manifest, options=IngestOptions(tenant=finess, actor="demo"))
        state = result.status if result.ok else f"failed: {result.reason}"
        console.print(f"{candidate.name:32} {result.format or '-':15} {finess}  {state}", highlight=False)
    archive.close()
    ctx.invoke(slides)
    url = f"http://127.0.0.1:{port}/"
    console.print(f"\nsign in at {url} as one of the two labs' pathologists:", highlight=False)
    for (finess, name, person), password in zip(DEMO_LABS, people, strict=True):
        console.print(
            f"  {person:14} password {password}   ({finess}, {name})", highlight=False, markup=False
        )
    console.print(
        "each sees only their lab's slides. For a script: TOKEN=$(lamina token pathologist-a), then\n"
        f'  curl -H "Authorization: Bearer $TOKEN" {url}dicomweb/studies',
        highlight=False,
        markup=False,
    )
    if serve:
        from lamina.cli.serve import serve as serve_command

        ctx.invoke(serve_command, host="127.0.0.1", port=port, dimse_port=None, ae_title="LAMINA")


def _labs_and_people(archive: Archive) -> list[str]:
    """The two labs and their pathologists, made on the first run (passwords drawn at random and
    kept, readable by the node's user only, in ``$LAMINA_HOME/demo-sign-in.json``); the
    passwords, in the order of :data:`DEMO_LABS`."""
    import json
    import os
    import secrets

    from lamina.governance.passwords import Passwords
    from lamina.governance.registry import Registry
    from lamina.governance.roles import Role

    kept = archive.settings.home / _SIGN_IN_FILE
    if kept.exists():
        known: dict[str, str] = json.loads(kept.read_text("utf-8"))
        return [known[person] for _, _, person in DEMO_LABS]
    registry = Registry(archive.catalog)
    labs = {tenant.finess for tenant in registry.tenants()}
    passwords = []
    for finess, name, person in DEMO_LABS:
        if finess not in labs:
            registry.add_tenant(finess, name, "demo")
        registry.add_person(person, finess, [Role.PATHOLOGIST], f"Pathologist of {name}", "demo")
        password = secrets.token_urlsafe(12)
        Passwords(archive.catalog).set(person, password, "demo")
        passwords.append(password)
    descriptor = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(
            {person: password for (_, _, person), password in zip(DEMO_LABS, passwords, strict=True)}, out
        )
    return passwords
