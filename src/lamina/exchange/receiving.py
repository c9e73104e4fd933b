"""The archive's side of the exchange: a site announces a de-identified slide of interest, sends
its instances (STOW-RS), and asks the archive to verify them (``docs/exchange.md``, "At the
archive").

1. :func:`announce` records what is expected (``archive_received``, status ``expected``): the
   series, its patient's pseudonym, the category and reason of interest, and each instance with
   its frame count and the SHA-256 of its frames' bytes in order. A series already verified for
   the lab answers its acknowledgement again (the site then sends nothing); a series another lab
   announced is a conflict that does not name that lab. A patient the lab said opposes research
   use (:func:`~lamina.exchange.consent.opposed_pseudonym`) is accepted and withdrawn at once:
   the opposition is to research use, and the slide stays the lab's (teaching, expertise).
2. :func:`arrival_problem` is the receive path's check on an archive node (every VL WSI instance,
   before it is stored): an instance that shows identity
   (:func:`~lamina.exchange.deid.identity_findings`), or that its lab did not announce, is
   refused with the reason, so that nothing identifying and nothing unannounced is kept.
3. :func:`verify` checks each announced instance is stored in the lab's slide of that series,
   with its frame count and its frames' SHA-256 (read from the blob store through the frame
   index, one frame at a time), and its stored header free of identity; then marks the row
   verified, flags the slide of interest (never expired here), moves it to the cold tier when one
   is configured, and audits ``exchange-receive``.

The lab is always the principal's (:func:`sending_lab`), never the body's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pydicom
from sqlalchemy import Connection, insert, select, update

from lamina.archive import audit
from lamina.archive.archive import Archive
from lamina.archive.catalog import Catalog
from lamina.archive.catalog import tables as t
from lamina.config import Settings
from lamina.errors import ExchangeError, LaminaError, NotFoundError, PermissionDeniedError, RequestError
from lamina.exchange.consent import opposed_pseudonym
from lamina.exchange.deid import identity_findings
from lamina.governance.decide import Action, Principal
from lamina.governance.model import check_finess
from lamina.lifecycle.marks import Interest, Marks, Target
from lamina.lifecycle.rules import Tier
from lamina.lifecycle.tiers import TierMover

__all__ = [
    "MAX_INSTANCES",
    "AnnouncedInstance",
    "Announcement",
    "ExchangeError",
    "announce",
    "arrival_problem",
    "require_archive",
    "sending_lab",
    "verify",
]

#: the most instances one announcement may list
MAX_INSTANCES = 1000
_MAX_SITE = 255
_MAX_REASON = 1000
#: the most frames an announced instance may have (a frame index of this many is 12 bytes each)
_MAX_FRAMES = 10_000_000
#: the most header bytes read back to check a stored instance (before its first frame)
_MAX_HEADER = 64 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")
_NOT_ARCHIVE = (
    "this node is a site (role {role!r}): the exchange's routes answer on the archive only "
    '(role = "archive" in lamina.toml, or LAMINA_ROLE=archive); send to the archive\'s URL'
)


def require_archive(settings: Settings) -> None:
    """NotFoundError (404, saying why) unless this node's role is ``archive``."""
    if settings.role != "archive":
        raise NotFoundError(_NOT_ARCHIVE.format(role=settings.role))


def sending_lab(who: Principal, asked: str | None) -> str:
    """The lab the principal sends for: the one where it holds
    :data:`~lamina.governance.decide.Action.EXCHANGE_RECEIVE`, or, when it holds it in several,
    ``asked`` (the body's ``tenant``), which must be one of them."""
    labs = sorted(code for code in who.tenants() if Action.EXCHANGE_RECEIVE in who.allowed_in(code))
    if asked is not None:
        code = check_finess(_text(asked, "tenant", 9), "tenant")
        if code not in labs:
            raise PermissionDeniedError(
                Action.EXCHANGE_RECEIVE.value, f"tenant {code}: your roles do not allow sending for that lab"
            )
        return code
    if len(labs) != 1:  # none: the route's rule refused already
        raise RequestError("tenant", f'you send for several labs ({", ".join(labs)}): name one as "tenant"')
    return labs[0]


# -- the announcement ----------------------------------------------------------------------------


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise RequestError(field, f"a string of 1 to {limit} printable characters")
    return value.strip()


def _uid(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not _UID.fullmatch(value):
        raise RequestError(field, "a DICOM UID: at most 64 digits and dots, no leading zeros")
    return value


def _hex64(value: object, field: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise RequestError(field, "64 lower-case hexadecimal digits")
    return value


#: the keys of an announcement's body (``tenant`` optional)
ANNOUNCEMENT_KEYS = (
    "site", "study_instance_uid", "series_instance_uid", "patient_pseudonym", "category", "reason",
    "instances", "tenant",
)  # fmt: skip


@dataclass(frozen=True)
class AnnouncedInstance:
    sop_instance_uid: str
    number_of_frames: int
    #: SHA-256 of the concatenation of every frame's bytes, in frame order; None when the site
    #: gives it with the verification instead (it hashes the frames as it sends them)
    frames_sha256: str | None


@dataclass(frozen=True)
class Announcement:
    """A slide a site will send: what the archive checks on arrival and on verification."""

    site: str
    study_instance_uid: str
    series_instance_uid: str
    patient_pseudonym: str
    category: Interest
    reason: str
    instances: tuple[AnnouncedInstance, ...]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Announcement:
        """Checked from the JSON body: :class:`RequestError` naming the field otherwise."""
        known = set(ANNOUNCEMENT_KEYS)
        if unknown := sorted(set(body) - known):
            raise RequestError(", ".join(unknown), f"unknown key(s); the keys are {', '.join(sorted(known))}")
        if missing := sorted(known - {"tenant"} - set(body)):
            raise RequestError(", ".join(missing), "missing")
        try:
            category = Interest(body["category"])
        except (ValueError, TypeError):
            raise RequestError("category", f"one of {', '.join(item.value for item in Interest)}") from None
        items = body["instances"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_INSTANCES:
            raise RequestError("instances", f"a list of 1 to {MAX_INSTANCES} instances")
        instances: list[AnnouncedInstance] = []
        for number, item in enumerate(items):
            where = f"instances[{number}]"
            if not isinstance(item, dict) or not {"sop_instance_uid", "number_of_frames"} <= set(item) <= {
                "sop_instance_uid",
                "number_of_frames",
                "frames_sha256",
            }:
                raise RequestError(
                    where, "an object with sop_instance_uid, number_of_frames and (optional) frames_sha256"
                )
            frames = item["number_of_frames"]
            if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= _MAX_FRAMES:
                raise RequestError(f"{where}.number_of_frames", f"an integer from 1 to {_MAX_FRAMES}")
            instances.append(
                AnnouncedInstance(
                    _uid(item["sop_instance_uid"], f"{where}.sop_instance_uid"),
                    frames,
                    None
                    if item.get("frames_sha256") is None
                    else _hex64(item["frames_sha256"], f"{where}.frames_sha256"),
                )
            )
        if len({item.sop_instance_uid for item in instances}) != len(instances):
            raise RequestError("instances", "a SOP Instance UID is listed twice")
        return cls(
            _text(body["site"], "site", _MAX_SITE),
            _uid(body["study_instance_uid"], "study_instance_uid"),
            _uid(body["series_instance_uid"], "series_instance_uid"),
            _hex64(body["patient_pseudonym"], "patient_pseudonym"),
            category,
            _text(body["reason"], "reason", _MAX_REASON),
            tuple(instances),
        )

    def instances_json(self) -> str:
        return orjson.dumps(
            [
                {"sop_instance_uid": i.sop_instance_uid, "number_of_frames": i.number_of_frames,
                 "frames_sha256": i.frames_sha256}
                for i in self.instances
            ]
        ).decode()  # fmt: skip


def _announced(text: str | None) -> list[AnnouncedInstance]:
    return [AnnouncedInstance(**item) for item in orjson.loads(text or "[]")]


def _row(conn: Connection, series: str) -> Any:
    return conn.execute(
        select(t.archive_received).where(t.archive_received.c.series_instance_uid == series)
    ).first()


def _conflict(series: str) -> ExchangeError:
    message = (
        f"series {series} was announced by another lab: a series is sent by one lab only (the site's "
        "keyed UIDs make this unlikely: check its de-identification keys)"
    )
    return ExchangeError(409, {"status": "conflict", "detail": message}, message)


def _acknowledgement(row: Any) -> dict[str, Any]:
    instances = _announced(row.announced)
    return {
        "series_instance_uid": row.series_instance_uid,
        "slide_id": row.slide_id,
        "instances": [i.sop_instance_uid for i in instances],
        "verified_at": row.verified_at.isoformat() if row.verified_at else None,
        "frames_sha256": [i.frames_sha256 for i in instances],
        "withdrawn": row.withdrawn_at is not None,
    }


def announce(catalog: Catalog, tenant: str, announcement: Announcement) -> dict[str, Any]:
    """Record ``announcement`` for the lab ``tenant``: ``{"status": "expected"}``, or
    ``{"status": "verified", "acknowledgement": ...}`` when that series was verified already;
    :class:`ExchangeError` (409) when another lab announced it (or the archive holds it apart)."""
    series = announcement.series_instance_uid
    now = dt.datetime.now(dt.UTC)
    with catalog.begin() as conn:
        row = _row(conn, series)
        if row is not None and row.tenant != tenant:
            raise _conflict(series)
        if row is not None and row.status == "verified":
            return {"status": "verified", "acknowledgement": _acknowledgement(row)}
        held = conn.execute(select(t.slides.c.id).where(t.slides.c.series_instance_uid == series)).first()
        if held is not None and row is None:  # stored here without an announcement of this lab
            raise _conflict(series)
        opposed = opposed_pseudonym(conn, tenant, announcement.patient_pseudonym)
        values: dict[str, object] = {
            "study_instance_uid": announcement.study_instance_uid,
            "site": announcement.site,
            "patient_pseudonym": announcement.patient_pseudonym,
            "category": announcement.category.value,
            "reason": announcement.reason,
            "announced": announcement.instances_json(),
        }
        if row is None:
            conn.execute(
                insert(t.archive_received).values(
                    series_instance_uid=series,
                    tenant=tenant,
                    status="expected",
                    received_at=now,
                    withdrawn_at=now if opposed else None,
                    **values,
                )
            )
        else:  # announced again before verification: the last announcement holds
            if opposed and row.withdrawn_at is None:
                values["withdrawn_at"] = now
            conn.execute(
                update(t.archive_received)
                .where(t.archive_received.c.series_instance_uid == series)
                .values(**values)
            )
    return {"status": "expected", "withdrawn": opposed}


# -- on arrival (the receive path) ----------------------------------------------------------------


def arrival_problem(catalog: Catalog, tenant: str, path: Path) -> str | None:
    """Why the VL WSI instance in ``path``, sent into ``tenant``, must be refused at the archive
    (None: it may be stored): identity found in it, or no announcement of its series and instance
    by that lab (the same words whether another lab announced it or nobody did)."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # examine() read it already; a header it cannot read whole is refused
        return "the header cannot be read whole"
    findings = identity_findings(header)
    if findings:
        return "not de-identified, refused by the archive: " + "; ".join(findings)
    series, sop = str(header.get("SeriesInstanceUID", "")), str(header.get("SOPInstanceUID", ""))
    with catalog.engine.connect() as conn:
        row = _row(conn, series)
    if row is None or row.tenant != tenant:
        return (
            f"series {series} was not announced by lab {tenant}: announce it first "
            "(POST /api/exchange/slides), then send its instances"
        )
    if sop not in {item.sop_instance_uid for item in _announced(row.announced)}:
        return f"instance {sop} is not among those announced for series {series}: announce it again with it"
    return None


# -- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    slide_id: str | None
    number_of_frames: int
    blob_sha256: str
    frame_offsets: bytes
    frame_lengths: bytes


def _stored(conn: Connection, tenant: str, series: str, sops: Iterable[str]) -> dict[str, _Stored]:
    """The instances of ``sops`` stored in the lab's slide of ``series``."""
    i, s = t.instances, t.slides
    query = (
        select(i.c.sop_instance_uid, i.c.slide_id, i.c.number_of_frames, i.c.blob_sha256,
               i.c.frame_offsets, i.c.frame_lengths)
        .select_from(i.join(s, i.c.slide_id == s.c.id))
        .where(i.c.sop_instance_uid.in_(list(sops)), s.c.tenant == tenant, s.c.series_instance_uid == series)
    )  # fmt: skip
    return {
        str(r[0]): _Stored(r[1], int(r[2]), str(r[3]), bytes(r[4]), bytes(r[5])) for r in conn.execute(query)
    }


#: The window read at a time when hashing frames: many frames a request, bounded memory.
_WINDOW = 16 << 20


def frames_sha256(archive: Archive, stored: _Stored) -> str:
    """SHA-256 of a stored instance's frames in order, read from the blob store in windows of
    up to 16 MiB (many frames each: one request per window, not per frame)."""
    count = stored.number_of_frames
    offsets = struct.unpack(f"<{count}Q", stored.frame_offsets)
    lengths = struct.unpack(f"<{count}I", stored.frame_lengths)
    digest = hashlib.sha256()
    start, window = 0, b""
    for offset, length in zip(offsets, lengths, strict=True):
        if offset < start or offset + length > start + len(window):
            start = offset
            window = archive.store.read_range(stored.blob_sha256, offset, max(length, _WINDOW))
        at = offset - start
        frame = window[at : at + length]
        if len(frame) != length:  # the object is shorter than its index: no digest can match
            return ""
        digest.update(frame)
    return digest.hexdigest()


def _header_findings(archive: Archive, stored: _Stored) -> list[str]:
    """identity_findings of a stored instance's header (its bytes before the first frame)."""
    (first,) = struct.unpack_from("<Q", stored.frame_offsets) if stored.frame_offsets else (0,)
    if not 0 < first <= _MAX_HEADER:
        return [f"its header ({first} bytes before the first frame) cannot be checked"]
    raw = archive.store.read_range(stored.blob_sha256, 0, first)
    try:
        header = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    except Exception:
        return ["its stored header cannot be read"]
    return identity_findings(header)


def parse_digests(value: object) -> dict[str, str]:
    """The ``instances`` of a verification's body: ``[{"sop_instance_uid", "frames_sha256"}]``,
    checked (:class:`RequestError` naming the field), by SOP Instance UID."""
    if not isinstance(value, list) or len(value) > MAX_INSTANCES:
        raise RequestError("instances", f"a list of at most {MAX_INSTANCES} objects")
    found: dict[str, str] = {}
    for number, item in enumerate(value):
        where = f"instances[{number}]"
        if not isinstance(item, dict) or set(item) != {"sop_instance_uid", "frames_sha256"}:
            raise RequestError(where, "an object with sop_instance_uid and frames_sha256")
        found[_uid(item["sop_instance_uid"], f"{where}.sop_instance_uid")] = _hex64(
            item["frames_sha256"], f"{where}.frames_sha256"
        )
    return found


def verify(
    archive: Archive, tenant: str, series: str, actor: str, digests: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Verify the lab's announced ``series`` (the module's docstring): the answer's body when
    verified; :class:`ExchangeError` 409 ``incomplete`` with the missing SOP Instance UIDs, or
    422 ``refused`` with the reasons; NotFoundError when the lab announced no such series.
    ``digests``: the frames' SHA-256 of each instance, given now by a site that hashed them as it
    sent them (each must equal the one announced, when one was)."""
    _uid(series, "series_instance_uid")
    digests = dict(digests or {})
    catalog = archive.catalog
    with catalog.engine.connect() as conn:
        row = _row(conn, series)
        if row is None or row.tenant != tenant:
            raise NotFoundError(
                f"series {series} was not announced by lab {tenant}: POST /api/exchange/slides first"
            )
        if row.status == "verified":
            return {"status": "verified", "acknowledgement": _acknowledgement(row)}
        announced = _announced(row.announced)
        stored = _stored(conn, tenant, series, [item.sop_instance_uid for item in announced])
    missing = [item.sop_instance_uid for item in announced if item.sop_instance_uid not in stored]
    if missing:
        message = f"{len(missing)} announced instance(s) of series {series} are not stored: send them again"
        raise ExchangeError(409, {"status": "incomplete", "missing": missing}, message)
    reasons: list[str] = []
    for item in announced:
        found = stored[item.sop_instance_uid]
        if found.number_of_frames != item.number_of_frames:
            reasons.append(
                f"{item.sop_instance_uid}: {found.number_of_frames} frames stored, "
                f"{item.number_of_frames} announced"
            )
            continue
        given = digests.get(item.sop_instance_uid)
        expected = item.frames_sha256 or given
        if expected is None:
            reasons.append(f"{item.sop_instance_uid}: no SHA-256 of its frames was announced nor given")
        elif given is not None and given != expected:
            reasons.append(f"{item.sop_instance_uid}: the SHA-256 given differs from the one announced")
        elif frames_sha256(archive, found) != expected:
            reasons.append(
                f"{item.sop_instance_uid}: the SHA-256 of the frames stored is not the one announced"
            )
        reasons += [f"{item.sop_instance_uid}: {why}" for why in _header_findings(archive, found)]
    slides = {found.slide_id for found in stored.values()}
    if len(slides) != 1 or None in slides:
        reasons.append(f"the instances of series {series} are not one slide here")
    if reasons:
        message = f"series {series} is refused: " + "; ".join(reasons[:5])
        raise ExchangeError(422, {"status": "refused", "reasons": reasons}, message)
    (slide_id,) = slides
    assert slide_id is not None
    now = dt.datetime.now(dt.UTC)
    with catalog.begin() as conn:
        checked = [
            {
                "sop_instance_uid": i.sop_instance_uid,
                "number_of_frames": i.number_of_frames,
                "frames_sha256": i.frames_sha256 or digests[i.sop_instance_uid],
            }
            for i in announced
        ]
        conn.execute(
            update(t.archive_received)
            .where(t.archive_received.c.series_instance_uid == series)
            .values(
                status="verified",
                slide_id=slide_id,
                verified_at=now,
                announced=orjson.dumps(checked).decode(),
            )
        )
        audit.append(
            conn,
            actor,
            "exchange-receive",
            f"slide/{slide_id}",
            {
                "tenant": tenant,
                "site": row.site,
                "series": series,
                "instances": len(announced),
                "category": row.category,
                "withdrawn": row.withdrawn_at is not None,
            },
        )
    # never expired here (a slide of interest), and in the cold tier when there is one
    Marks(catalog).flag(Target(slide=slide_id), Interest(row.category), row.reason, actor)
    _to_cold(archive, slide_id, actor)
    with catalog.engine.connect() as conn:
        return {"status": "verified", "acknowledgement": _acknowledgement(_row(conn, series))}


def _to_cold(archive: Archive, slide_id: str, actor: str) -> None:
    mover = TierMover.for_archive(archive)
    if mover is None:
        return
    try:
        mover.move_slide(slide_id, Tier.COLD, actor, action="exchange-cold")
    except LaminaError:  # verified and kept hot; the tier rules move it later
        return
