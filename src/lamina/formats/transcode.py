"""A stored instance's frames rewritten losslessly in JPEG 2000, for readers that take no other
lossless codec (OpenSlide 4 reads JPEG 2000, not JPEG-LS nor HTJ2K).

The pixels are unchanged (decoded, then encoded reversibly), so the instance keeps its SOP
Instance UID, as a lossless change of transfer syntax allows (PS3.5 8.2, PS3.4 C.4.1.2.1);
only the transfer syntax, the photometric interpretation of colour (RGB becomes YBR_RCT, JPEG
2000's reversible colour transform) and the frames' offset table change. One frame is decoded
at a time and the encoded frames go through a spool file: memory stays bounded whatever the
instance's size.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pydicom
from pydicom import uid

from lamina.errors import CorruptSourceError
from lamina.formats import codec
from lamina.formats.dicom_frames import locate_frames
from lamina.formats.dicom_header import read_header
from lamina.formats.dicomize import (
    _EMPTY_BOT,
    _PIXEL_DATA_HEADER,
    _SEQ_DELIMITER,
    _stream_frames,
    iter_spool,
)
from lamina.formats.source import FrameEncoding, TransferSyntax
from lamina.model.enums import PhotometricInterpretationValues as Photometric

#: The transfer syntaxes rewritten as JPEG 2000 lossless; every other one is left as it is.
REWRITTEN: dict[str, TransferSyntax] = {
    str(uid.JPEGLSLossless): TransferSyntax.JPEG_LS_LOSSLESS,
    str(uid.HTJ2KLossless): TransferSyntax.HTJ2K_LOSSLESS,
}
_WINDOW = 4 * (os.cpu_count() or 1)  # frames in flight in the encoders


class _FileSink:
    def __init__(self, out: io.BufferedWriter) -> None:
        self.out = out

    def write_parts(self, parts: list[bytes | memoryview], size: int) -> object:
        for part in parts:
            self.out.write(part)
        return None


def to_jpeg2000(path: Path, target: Path, spool_dir: Path | None = None) -> bool:
    """Write ``path`` to ``target`` with its frames in JPEG 2000 lossless when they are JPEG-LS
    or HTJ2K lossless, and return True; False (nothing written) when they are in another
    transfer syntax. Raises CorruptSourceError naming the file and the frame for damaged data."""
    with path.open("rb") as fp:
        dataset = read_header(path, fp)
        tell = fp.tell()
        syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
        if syntax not in REWRITTEN:
            return False
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        try:
            spans = locate_frames(fp, tell, frames, True, True, 0, path.stat().st_size)
        except ValueError as exc:
            raise CorruptSourceError(path, str(exc)) from exc
        samples = int(dataset.SamplesPerPixel)
        size = (int(dataset.Columns), int(dataset.Rows))
        source = FrameEncoding(REWRITTEN[syntax], Photometric(str(dataset.PhotometricInterpretation)))
        target_encoding = codec.lossless_encoding(samples, "jpeg2000")

        def frames_read() -> Iterator[bytes]:
            for span in spans:
                parts = []
                for offset, length in span.fragments:
                    fp.seek(offset)
                    parts.append(fp.read(length))
                yield b"".join(parts)

        def recode(number: int, frame: bytes) -> bytes:
            try:
                pixels = codec.decode(frame, source, size)
            except Exception as exc:
                raise CorruptSourceError(path, f"frame {number} cannot be decoded ({exc})") from exc
            return codec.encode(np.asarray(pixels), target_encoding, threads=1)

        with tempfile.TemporaryFile(dir=str(spool_dir) if spool_dir else None) as spool:
            lengths = _encode_all(frames_read(), recode, spool)
            spool.seek(0)
            for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
                if keyword in dataset:
                    delattr(dataset, keyword)
            dataset.file_meta.TransferSyntaxUID = uid.JPEG2000Lossless
            dataset.PhotometricInterpretation = target_encoding.photometric_interpretation.value
            padded = np.asarray(lengths, dtype=np.uint64)
            padded += padded & 1
            starts = np.concatenate(([0], np.cumsum(padded + 8)[:-1])).astype("<u8")
            dataset.ExtendedOffsetTable = starts.tobytes()
            dataset.ExtendedOffsetTableLengths = padded.astype("<u8").tobytes()
            header = io.BytesIO()
            pydicom.dcmwrite(header, dataset, enforce_file_format=True)
            part = target.with_name(target.name + ".part")
            try:
                with part.open("wb") as out:
                    out.write(header.getvalue() + _PIXEL_DATA_HEADER + _EMPTY_BOT)
                    _stream_frames(_FileSink(out), iter_spool(spool, lengths), lengths)  # type: ignore[arg-type]
                    out.write(_SEQ_DELIMITER)
                    out.flush()
                    os.fsync(out.fileno())
                part.replace(target)
            except BaseException:
                part.unlink(missing_ok=True)  # nothing half-written left
                raise
    return True


def _encode_all(
    frames: Iterator[bytes], recode: Callable[[int, bytes], bytes], spool: IO[bytes]
) -> Sequence[int]:
    """Every frame recoded by the encoders side by side (they release the GIL), in order, a
    window at a time, into ``spool``; their lengths."""
    lengths: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending: list[concurrent.futures.Future[bytes]] = []
        for number, frame in enumerate(frames, start=1):
            pending.append(pool.submit(recode, number, frame))
            if len(pending) >= _WINDOW:
                lengths.append(spool.write(pending.pop(0).result()))
        for future in pending:
            lengths.append(spool.write(future.result()))
    return lengths
