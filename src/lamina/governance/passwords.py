"""Passwords for lamina's own sign-in page (table ``passwords``), and the throttle on guessing them.

A password is kept as an argon2id hash (argon2-cffi's defaults, RFC 9106's second recommended
profile), never as itself; it is 12 to 1024 characters. Setting one is audited
(``password-set``, naming the person, never the password). A hash made with weaker parameters
than the current ones is replaced at the next successful sign-in.

Checking a password costs the same whether the person exists or not (a dummy hash is checked for
an unknown person), so the time of an answer does not tell which people exist. At most
:data:`HASH_SLOTS` hashes are computed at once in a process: each takes 64 MiB, and a flood of
sign-ins must not exhaust the server's memory.

Failed attempts are slowed by a :class:`Throttle`, in the process's memory, keyed by the person
and the client's address: after the n-th failure in a row, the next attempt of that pair must
wait ``2 ** (n - 1)`` seconds, at most 60 (1, 2, 4, ... 32, 60, 60...). An attempt while waiting
is refused without checking the password (:class:`ThrottledError`, HTTP 429 with
``Retry-After``): nothing sleeps in a thread. A success resets the pair; so does an hour without
failure. Keying by the client too means that a stranger guessing a person's password slows
himself, not the person signing in from elsewhere. The throttle keeps the 100,000 pairs used
last (least recently used go first), so its memory is bounded; it is per process, and restarts
empty.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update

from lamina.archive import audit
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.errors import NotFoundError, RequestError, ThrottledError
from lamina.governance.model import check_person_id

__all__ = ["HASH_SLOTS", "MAX_LENGTH", "MIN_LENGTH", "Passwords", "Throttle"]

log = logging.getLogger("lamina.governance")

MIN_LENGTH = 12
MAX_LENGTH = 1024
#: The most password hashes computed at once in this process (each takes 64 MiB).
HASH_SLOTS = 4
# one per process on purpose: it bounds the process's memory, whatever the number of callers
_HASHING = threading.BoundedSemaphore(HASH_SLOTS)
_HASHER = PasswordHasher()

Key = tuple[str, str]


@dataclass
class _Failures:
    count: int
    last_at: float
    next_at: float


class Throttle:
    """Failed attempts per key (the person, the client's address), and how long the next must wait.

    Thread-safe. See the module's documentation for the rule.

    Parameters
    ----------
    max_keys
        The most keys remembered; the least recently used are forgotten first.
    max_wait_s
        The longest wait after a failure.
    forget_after_s
        A key without failure for this long starts again from nothing.
    clock
        Monotonic seconds.
    """

    def __init__(
        self,
        max_keys: int = 100_000,
        max_wait_s: float = 60.0,
        forget_after_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_keys = max_keys
        self.max_wait_s = max_wait_s
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[Key, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _get(self, key: Key, now: float) -> _Failures | None:
        found = self._failures.get(key)
        if found is not None and now - found.last_at >= self.forget_after_s:
            del self._failures[key]
            return None
        return found

    def wait_s(self, key: Key) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        now = self._clock()
        with self._lock:
            found = self._get(key, now)
            return max(0.0, found.next_at - now) if found else 0.0

    def failed(self, key: Key) -> None:
        """Count a failure of ``key``: its next attempt waits ``2 ** (failures - 1)`` s, at most
        ``max_wait_s``."""
        now = self._clock()
        with self._lock:
            found = self._get(key, now)
            count = (found.count if found else 0) + 1
            wait = min(2.0 ** min(count - 1, 30), self.max_wait_s)
            self._failures[key] = _Failures(count, now, now + wait)
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, key: Key) -> None:
        """Forget ``key``'s failures."""
        with self._lock:
            self._failures.pop(key, None)


@functools.cache
def _dummy_hash() -> str:
    """A hash checked for an unknown person, so that they cost the same time as a known one."""
    return _HASHER.hash("not a password of anyone; lamina checks it for unknown people")


def _check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise RequestError(
            "password",
            f"must be {MIN_LENGTH} to {MAX_LENGTH} characters; a passphrase of several words is easiest",
        )
    return password


class Passwords:
    """The passwords of one catalog's people.

    Parameters
    ----------
    catalog
        The catalog that holds them.
    throttle
        The failed attempts of this process (:meth:`verify` consults it); a new one by default,
        but a server keeps one for all its requests.
    hasher
        argon2's hasher: its parameters are the ones new hashes get.
    """

    def __init__(
        self, catalog: Catalog, throttle: Throttle | None = None, hasher: PasswordHasher = _HASHER
    ) -> None:
        self.catalog = catalog
        self.throttle = throttle if throttle is not None else Throttle()
        self.hasher = hasher

    def _hash(self, password: str) -> str:
        with _HASHING:
            return self.hasher.hash(password)

    def set(self, person_id: str, password: str, actor: str = "lamina") -> None:
        """Give ``person_id`` this password (replacing theirs, if any); audited ``password-set``.

        Raises
        ------
        RequestError
            The person's identifier is malformed, or the password is not 12 to 1024 characters.
        NotFoundError
            No such person on this node.
        """
        pid = check_person_id(person_id)
        digest = self._hash(_check_password(password))  # before the transaction: it takes time
        now = dt.datetime.now(dt.UTC)
        with self.catalog.begin() as conn:
            if conn.execute(select(t.people.c.id).where(t.people.c.id == pid)).first() is None:
                raise NotFoundError(f"no person {pid!r} on this node; add one with 'lamina users add'")
            replaced = conn.execute(
                update(t.passwords).where(t.passwords.c.person_id == pid).values(hash=digest, updated_at=now)
            ).rowcount
            if not replaced:
                conn.execute(insert(t.passwords).values(person_id=pid, hash=digest, updated_at=now))
            audit.append(conn, actor, "password-set", f"person/{pid}", {"replaced": bool(replaced)})

    def verify(self, person_id: str, password: str, client: str) -> bool:
        """Whether ``password`` is ``person_id``'s; a failure is counted for (person, ``client``).

        Raises
        ------
        ThrottledError
            This person and client must wait before trying again (the password is not checked).
        """
        try:
            pid = check_person_id(person_id)
        except RequestError:
            pid = None
        # a malformed identifier shares one key per client: the throttle's memory stays small
        key = (pid or "", client)
        waiting = self.throttle.wait_s(key)
        if waiting > 0:
            raise ThrottledError(waiting)
        stored = self._stored(pid) if pid else None
        plausible = isinstance(password, str) and 0 < len(password) <= MAX_LENGTH
        ok = False
        with _HASHING:
            try:
                ok = self.hasher.verify(stored or _dummy_hash(), password if plausible else "")
            except InvalidHashError:
                log.warning("the stored password of %s is not an argon2 hash; set it again", pid)
            except VerificationError:
                pass
        ok = ok and stored is not None and plausible
        if not ok:
            self.throttle.failed(key)
            return False
        self.throttle.succeeded(key)
        assert pid is not None and stored is not None
        if self.hasher.check_needs_rehash(stored):
            self._rehash(pid, stored, password)
        return True

    def has_password(self, person_id: str) -> bool:
        """Whether ``person_id`` has a password set."""
        return self._stored(check_person_id(person_id)) is not None

    def _stored(self, pid: str) -> str | None:
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(t.passwords.c.hash).where(t.passwords.c.person_id == pid)).first()
        return str(row[0]) if row else None

    def _rehash(self, pid: str, stored: str, password: str) -> None:
        """Replace a hash made with weaker parameters; only if it is still the one checked (a
        password set meanwhile wins)."""
        digest = self._hash(password)
        with self.catalog.begin() as conn:
            conn.execute(
                update(t.passwords)
                .where(t.passwords.c.person_id == pid, t.passwords.c.hash == stored)
                .values(hash=digest, updated_at=dt.datetime.now(dt.UTC))
            )
        log.info("the password hash of %s was made again with the current parameters", pid)
