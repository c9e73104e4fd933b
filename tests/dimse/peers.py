"""The DICOM peers the DIMSE tests start, what they received, and the calling AEs they use.

Only calling AEs configured in the catalog may associate with the DIMSE server: :func:`calling`
makes the test's lab (the first tenant adopts what is stored without one) and its calling AEs.

dcmtk's ``storescp`` is the Storage SCP a C-MOVE or ``lamina send`` sends to, on a free loopback
port; every file it writes is compared with the stored object by the SHA-256 of its data set,
the part of a Part-10 file a C-STORE carries (each side writes its own file meta header).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from lamina.archive.archive import Archive
from lamina.archive.blobstore import BlobStore
from lamina.archive.catalog import InstanceRow
from lamina.formats import codec
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.governance.registry import Registry
from lamina.peers import CallingEntity, Operation, PeerDirectory
from tests.support import read_object, tool

#: the lab of the DIMSE tests, and another one
LAB = "750712184"
OTHER_LAB = "690000000"


def calling(
    archive: Archive, *titles: str, tenant: str = LAB, allow: frozenset[Operation] = frozenset(Operation)
) -> None:
    """Make ``titles`` calling AEs of ``tenant`` (added if new), allowed ``allow`` (every operation)."""
    registry = Registry(archive.catalog)
    if tenant not in {known.finess for known in registry.tenants()}:
        registry.add_tenant(tenant, f"Lab {tenant}")
    for title in titles:
        PeerDirectory(archive.catalog).add_calling(CallingEntity(title, tenant, allow))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def data_set(part10: bytes) -> bytes:
    """The data set of a Part-10 file: what follows its file meta group."""
    assert part10[128:132] == b"DICM", "not a DICOM Part-10 file"
    assert part10[132:136] == b"\x02\x00\x00\x00", "no File Meta Information Group Length first"
    (length,) = struct.unpack("<I", part10[140:144])
    return part10[144 + length :]


def stored_data_set_sha256(store: BlobStore, row: InstanceRow) -> str:
    return hashlib.sha256(data_set(read_object(store, row.blob_sha256))).hexdigest()


@dataclass(frozen=True)
class Received:
    path: Path
    sop_instance_uid: str
    transfer_syntax: str
    data_set_sha256: str


def received(folder: Path) -> dict[str, Received]:
    """The files a Storage SCP wrote into ``folder``, by SOP Instance UID."""
    found = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        uid = str(meta.MediaStorageSOPInstanceUID)
        found[uid] = Received(
            path, uid, str(meta.TransferSyntaxUID), hashlib.sha256(data_set(data)).hexdigest()
        )
    return found


@contextlib.contextmanager
def storescp(folder: Path, *options: str, ae_title: str = "STORESCP") -> Iterator[int]:
    """dcmtk's storescp writing into ``folder`` on a free port (yielded) until the block ends.

    ``options`` go before the port, e.g. ``+xa`` to accept every transfer syntax (storescp takes
    uncompressed ones only by default) or ``--sleep-during 1`` to be slow.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder.parent / f"storescp-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [tool("storescp"), "-aet", ae_title, "-od", str(folder), *options, str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"storescp ended: {log.read_text(errors='replace')}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "storescp did not listen"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stored_frames(store: BlobStore, row: InstanceRow) -> list[bytes]:
    """Each frame of the stored instance as stored, through the catalog's frame index."""
    offsets = np.frombuffer(row.frame_offsets, "<u8").tolist()
    lengths = np.frombuffer(row.frame_lengths, "<u4").tolist()
    return [store.read_range(row.blob_sha256, o, n) for o, n in zip(offsets, lengths, strict=True)]


def decoded_frames(store: BlobStore, row: InstanceRow) -> np.ndarray:
    """The stored frames decoded by lamina's codec: (frames, rows, columns, samples)."""
    encoding = FrameEncoding(TransferSyntax(row.transfer_syntax_uid), row.photometric_interpretation)
    return np.stack([codec.decode(frame, encoding) for frame in stored_frames(store, row)])
