"""Patients' opposition at a site (library and ``lamina consent``), the archive's withdrawal, and
the pseudonym correspondence (``remember``, ``lamina pseudonym resolve``): decisions recorded
and in force, an unknown patient refused, the audit log naming the patient by pseudonym only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert, select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.cli import cli
from lamina.errors import NotFoundError, PermissionDeniedError, StorageError
from lamina.exchange.consent import opposed, opposed_pseudonym, record, withdraw
from lamina.exchange.keys import ExchangeKeys
from lamina.exchange.pseudonyms import remember, resolve
from lamina.governance.decide import principal_of
from lamina.governance.roles import Role
from tests.exchange.site import LAB_A, LAB_B, PATIENT, open_site

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Archive]:
    archive = open_site(tmp_path)
    yield archive
    archive.close()


def _keys(site: Archive) -> ExchangeKeys:
    return ExchangeKeys.for_settings(site.settings)


def _lamina(site: Archive, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(site.settings.home), *args])


def _audit_text(site: Archive) -> str:
    with site.catalog.engine.connect() as conn:
        return "\n".join(f"{e.actor} {e.action} {e.entity} {e.detail}" for e in audit.entries(conn))


def _queue(site: Archive, slide: str, status: str) -> None:
    with site.catalog.begin() as conn:
        conn.execute(insert(t.transfers).values(slide_id=slide, tenant=LAB_A, status=status, queued_at=NOW))


def test_a_deny_is_in_force_until_an_allow_and_refuses_the_queued_transfers(site: Archive) -> None:
    _queue(site, "SA1", "queued")
    _queue(site, "SA2", "verified")
    keys = _keys(site)
    # Act
    denied = record(site.catalog, LAB_A, PATIENT, "deny", "lis-a", "fhir", "c-1", keys=keys)
    # Assert
    assert (denied.slides, denied.refused, denied.at_archive) == (2, 1, 1)
    assert denied.patient_pseudonym == keys.patient_pseudonym(PATIENT)
    with site.catalog.engine.connect() as conn:
        assert opposed(conn, LAB_A, PATIENT)
        assert not opposed(conn, LAB_B, PATIENT)
        statuses = dict(conn.execute(select(t.transfers.c.slide_id, t.transfers.c.status)).all())
    assert statuses == {"SA1": "refused", "SA2": "verified"}

    # Act: lifted
    record(site.catalog, LAB_A, PATIENT, "allow", "admin-a", "cli", keys=keys)
    # Assert: the newest decision holds; both kept
    with site.catalog.engine.connect() as conn:
        assert not opposed(conn, LAB_A, PATIENT)
        rows = conn.execute(
            select(t.consents.c.decision, t.consents.c.source).order_by(t.consents.c.id)
        ).all()
    assert [tuple(row) for row in rows] == [("deny", "fhir"), ("allow", "cli")]
    log = _audit_text(site)
    assert f"patient/{LAB_A}/{denied.patient_pseudonym}" in log
    assert PATIENT not in log


def test_an_unknown_patient_is_refused_without_echoing_it(site: Archive) -> None:
    for patient, lab in (("IPP-NOBODY", LAB_A), (PATIENT, LAB_B)):  # none here; another lab's
        with pytest.raises(NotFoundError) as refused:
            record(site.catalog, lab, patient, "deny", "lis-a", "fhir", keys=_keys(site))
        assert f"lab {lab}: this patient has no slide here" in str(refused.value)
        assert patient not in str(refused.value)
    with site.catalog.engine.connect() as conn:
        assert conn.execute(select(t.consents)).first() is None
    assert "consent" not in _audit_text(site)


def test_lamina_consent_deny_and_allow(site: Archive) -> None:
    # Act
    denied = _lamina(site, "consent", "deny", PATIENT, "--tenant", LAB_A, "--reason", "by letter")
    # Assert
    assert denied.exit_code == 0, denied.output
    assert (
        f"lab {LAB_A}: the patient" in denied.output and "opposes research use (2 slide(s)" in denied.output
    )
    assert PATIENT not in denied.output
    with site.catalog.engine.connect() as conn:
        assert opposed(conn, LAB_A, PATIENT)
        row = conn.execute(select(t.consents.c.reason, t.consents.c.actor, t.consents.c.source)).one()
    assert row.reason == "by letter" and row.actor.startswith("operator:") and row.source == "cli"
    assert "by letter" not in _audit_text(site) and PATIENT not in _audit_text(site)

    allowed = _lamina(site, "consent", "allow", PATIENT, "--tenant", LAB_A, "--json")
    assert allowed.exit_code == 0, allowed.output
    with site.catalog.engine.connect() as conn:
        assert not opposed(conn, LAB_A, PATIENT)

    unknown = _lamina(site, "consent", "deny", "IPP-NOBODY", "--tenant", LAB_A)
    assert unknown.exit_code == 2
    assert "this patient has no slide here" in unknown.output and "IPP-NOBODY" not in unknown.output


def test_withdraw_marks_every_received_slide_of_the_pseudonym_and_lab(site: Archive) -> None:
    pseudonym = _keys(site).patient_pseudonym(PATIENT)
    other = _keys(site).patient_pseudonym("IPP-OTHER")
    received = [
        ("R1", LAB_A, pseudonym),
        ("R2", LAB_A, pseudonym),
        ("R3", LAB_B, pseudonym),
        ("R4", LAB_A, other),
    ]
    with site.catalog.begin() as conn:
        for slide, lab, patient in received:
            conn.execute(
                insert(t.archive_received).values(
                    series_instance_uid=f"2.25.{slide[1]}",
                    study_instance_uid="2.25.9",
                    slide_id=slide,
                    tenant=lab,
                    site="site-lyon",
                    patient_pseudonym=patient,
                    category="teaching",
                    reason="rare",
                    received_at=NOW,
                )
            )
    # Act
    count = withdraw(site.catalog, LAB_A, pseudonym, "site-lyon")
    # Assert: that lab's slides of that patient, at once; again: none more
    assert count == 2
    with site.catalog.engine.connect() as conn:
        marked = dict(
            conn.execute(select(t.archive_received.c.slide_id, t.archive_received.c.withdrawn_at)).all()
        )
        assert opposed_pseudonym(conn, LAB_A, pseudonym) and not opposed_pseudonym(conn, LAB_B, pseudonym)
    assert {slide for slide, when in marked.items() if when is not None} == {"R1", "R2"}
    assert withdraw(site.catalog, LAB_A, pseudonym, "site-lyon") == 0
    with site.catalog.engine.connect() as conn:
        entries = [e for e in audit.entries(conn, action="withdraw")]
    assert [e.detail["slides"] for e in entries] == [2, 0]
    assert entries[0].entity == f"patient/{LAB_A}/{pseudonym}"


def test_remember_is_idempotent_and_refuses_a_pseudonym_kept_for_another_value(site: Archive) -> None:
    with site.catalog.begin() as conn:
        for _ in range(2):
            remember(conn, LAB_A, "PatientID", PATIENT, "p" * 64)
            remember(conn, LAB_A, "PatientID", PATIENT, "q" * 64, "eds-hcl")
        rows = conn.execute(select(t.pseudonyms.c.warehouse, t.pseudonyms.c.value)).all()
    assert sorted(tuple(row) for row in rows) == [("", PATIENT), ("eds-hcl", PATIENT)]
    with pytest.raises(StorageError, match="kept for another value"), site.catalog.begin() as conn:
        remember(conn, LAB_A, "PatientID", "IPP-ELSE", "p" * 64)


def test_resolve_is_for_a_lab_admin_of_the_lab_and_audited_without_the_value(site: Archive) -> None:
    pseudonym = _keys(site).accession_pseudonym("ACC-2026-17")
    with site.catalog.begin() as conn:
        remember(conn, LAB_A, "AccessionNumber", "ACC-2026-17", pseudonym)
    # Act: the lab's admin, on the command line
    found = _lamina(site, "pseudonym", "resolve", pseudonym, "--tenant", LAB_A, "--as", "admin-a")
    # Assert
    assert found.exit_code == 0, found.output
    assert found.output.strip() == "AccessionNumber ACC-2026-17"
    with site.catalog.engine.connect() as conn:
        (entry,) = audit.entries(conn, action="pseudonym-resolve")
    assert (entry.actor, entry.entity, entry.detail["pseudonym"]) == ("admin-a", f"tenant/{LAB_A}", pseudonym)
    assert str(entry.detail["via"]).startswith("operator:")
    assert "ACC-2026-17" not in _audit_text(site)

    # refused: a pathologist of the lab, another lab's admin, a platform admin
    for person in ("patho-a", "admin-b"):
        refused = _lamina(site, "pseudonym", "resolve", pseudonym, "--tenant", LAB_A, "--as", person)
        assert refused.exit_code == 2
        assert f"lab {LAB_A}: only a lab admin of the lab may resolve its pseudonyms" in refused.output
        assert "ACC-2026-17" not in refused.output
    platform = principal_of("root", [(LAB_B, Role.PLATFORM_ADMIN)], [])
    with pytest.raises(PermissionDeniedError):
        resolve(site.catalog, platform, LAB_A, pseudonym)
    missing = _lamina(site, "pseudonym", "resolve", "Z" * 16, "--tenant", LAB_A, "--as", "admin-a")
    assert missing.exit_code == 2 and "no pseudonym" in missing.output
    with site.catalog.engine.connect() as conn:
        assert len(audit.entries(conn, action="pseudonym-resolve")) == 1
