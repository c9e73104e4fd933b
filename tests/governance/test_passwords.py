"""Passwords of the sign-in page on both catalogs, with real argon2id; the throttle on failures."""

from __future__ import annotations

import json

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, RequestError, ThrottledError
from lamina.governance.passwords import Passwords, Throttle
from lamina.governance.registry import Registry
from lamina.governance.roles import Role

LYON = "690781810"
SECRET = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _person(archive: Archive, pid: str = "alice") -> None:
    registry = Registry(archive.catalog)
    if not registry.tenants():
        registry.add_tenant(LYON, "Anatomie pathologique, HCL")
    registry.add_person(pid, LYON, [Role.PATHOLOGIST])


def _stored(archive: Archive, pid: str) -> str:
    with archive.catalog.engine.connect() as conn:
        query = select(t.passwords.c.hash).where(t.passwords.c.person_id == pid)
        return str(conn.execute(query).scalar_one())


def test_a_password_set_is_verified_and_kept_as_argon2id_only(archive: Archive) -> None:
    # Arrange
    _person(archive)
    passwords = Passwords(archive.catalog)

    # Act
    passwords.set("alice", SECRET, "operator:test")

    # Assert
    assert passwords.verify("alice", SECRET, "10.0.0.1") is True
    assert _stored(archive, "alice").startswith("$argon2id$") and SECRET not in _stored(archive, "alice")
    assert passwords.has_password("alice")
    with archive.catalog.engine.connect() as conn:
        (entry,) = audit.entries(conn, action="password-set")
    assert (entry.actor, entry.entity, entry.detail) == ("operator:test", "person/alice", {"replaced": False})
    assert SECRET not in json.dumps(entry.detail)


def test_a_new_password_replaces_the_old_one(archive: Archive) -> None:
    _person(archive)
    passwords = Passwords(archive.catalog)
    passwords.set("alice", SECRET, "operator:test")

    passwords.set("alice", "another long passphrase", "operator:test")

    assert passwords.verify("alice", "another long passphrase", "10.0.0.1") is True
    assert passwords.verify("alice", SECRET, "10.0.0.2") is False
    with archive.catalog.engine.connect() as conn:
        assert [e.detail for e in audit.entries(conn, action="password-set")] == [
            {"replaced": False},
            {"replaced": True},
        ]


def test_wrong_password_unknown_person_and_no_password_all_fail_alike(archive: Archive) -> None:
    _person(archive)
    _person(archive, "bob")  # bob has no password
    passwords = Passwords(archive.catalog)
    passwords.set("alice", SECRET, "operator:test")

    assert passwords.verify("alice", "wrong but long enough", "10.0.0.1") is False
    assert passwords.verify("nobody", SECRET, "10.0.0.1") is False
    assert passwords.verify("bob", SECRET, "10.0.0.1") is False
    assert passwords.verify("-not a person-", SECRET, "10.0.0.1") is False
    assert passwords.verify("alice", "", "10.0.0.9") is False
    assert passwords.verify("alice", "x" * 5000, "10.0.0.8") is False


def test_a_password_for_an_unknown_person_is_refused_naming_them(archive: Archive) -> None:
    expected = "no person 'nobody' on this node; add one with 'lamina users add'"
    with pytest.raises(NotFoundError, match=expected):
        Passwords(archive.catalog).set("nobody", SECRET, "operator:test")


@pytest.mark.parametrize("password", ["short", "x" * 11, "x" * 1025])
def test_a_password_too_short_or_too_long_is_refused(archive: Archive, password: str) -> None:
    _person(archive)
    with pytest.raises(RequestError, match="password: must be 12 to 1024 characters") as raised:
        Passwords(archive.catalog).set("alice", password, "operator:test")
    assert password not in str(raised.value)
    with archive.catalog.engine.connect() as conn:
        assert audit.entries(conn, action="password-set") == []


def test_a_weak_hash_is_made_again_at_the_next_success(archive: Archive) -> None:
    # Arrange: a hash made with weaker parameters than today's
    _person(archive)
    Passwords(archive.catalog, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)).set(
        "alice", SECRET, "operator:test"
    )
    weak = _stored(archive, "alice")

    # Act
    assert Passwords(archive.catalog).verify("alice", SECRET, "10.0.0.1") is True

    # Assert
    strong = _stored(archive, "alice")
    assert strong != weak and not PasswordHasher().check_needs_rehash(strong)
    assert Passwords(archive.catalog).verify("alice", SECRET, "10.0.0.1") is True


def test_failures_make_the_next_attempt_wait_and_a_success_resets(archive: Archive) -> None:
    _person(archive)
    clock = Clock()
    passwords = Passwords(archive.catalog, Throttle(clock=clock))
    passwords.set("alice", SECRET, "operator:test")

    assert passwords.verify("alice", "wrong but long enough", "10.0.0.1") is False
    with pytest.raises(ThrottledError) as raised:
        passwords.verify("alice", SECRET, "10.0.0.1")  # even the right one, while waiting
    assert raised.value.retry_after_s == 1.0 and SECRET not in str(raised.value)
    # another client is not slowed by this one's failures
    assert passwords.verify("alice", SECRET, "10.0.0.2") is True

    clock.now += 1
    assert passwords.verify("alice", "wrong but long enough", "10.0.0.1") is False
    assert passwords.throttle.wait_s(("alice", "10.0.0.1")) == 2.0
    clock.now += 2
    assert passwords.verify("alice", SECRET, "10.0.0.1") is True
    assert passwords.throttle.wait_s(("alice", "10.0.0.1")) == 0.0


def test_unknown_people_are_throttled_too(archive: Archive) -> None:
    passwords = Passwords(archive.catalog, Throttle(clock=Clock()))
    assert passwords.verify("nobody", SECRET, "10.0.0.1") is False
    with pytest.raises(ThrottledError):
        passwords.verify("nobody", SECRET, "10.0.0.1")


def test_the_wait_doubles_up_to_60_seconds() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    key = ("alice", "10.0.0.1")
    waits = []
    for _ in range(9):
        throttle.failed(key)
        waits.append(throttle.wait_s(key))
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]

    clock.now += 30
    assert throttle.wait_s(key) == 30
    clock.now += 3600
    assert throttle.wait_s(key) == 0
    throttle.failed(key)  # an hour later, it starts again
    assert throttle.wait_s(key) == 1


def test_the_throttle_remembers_a_bounded_number_of_keys() -> None:
    throttle = Throttle(max_keys=3, clock=Clock())
    for person in ("a", "b", "c", "d"):
        throttle.failed((person, "10.0.0.1"))

    assert len(throttle) == 3
    assert throttle.wait_s(("a", "10.0.0.1")) == 0  # the least recently used went first
    assert throttle.wait_s(("d", "10.0.0.1")) == 1
