"""Probe results as JSONL: one ``ProbeResult`` per line, the format of every file and batch.

Readers ignore unknown fields and reject a line missing a required field with an
error that names the line (docs/contracts.md § Probe result). Two ways to read:
:func:`iter_records` stops at the first bad line (offline diagnosis: a damaged file
must not silently shrink), and
:func:`parse_batch` keeps the good lines and lists the bad ones (collector ingest: one
bad record must not cost a whole batch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from prober.model import ProbeResult

_decoder = msgspec.json.Decoder(ProbeResult)
_encoder = msgspec.json.Encoder()

#: The most rejected lines a batch response lists; the count is always complete.
MAX_LISTED_REJECTIONS = 20


class RecordError(ValueError):
    """A line that is not a valid probe result; ``line`` is 1-based."""

    def __init__(self, line: int, reason: str, *, source: str = "") -> None:
        self.line = line
        self.reason = reason
        self.source = source
        where = f"{source}:{line}" if source else f"line {line}"
        super().__init__(f"{where}: {reason}")


class Rejected(msgspec.Struct, frozen=True):
    line: int
    error: str


def reason_of(exc: Exception) -> str:
    """Why a line is not a probe result, in words (any exception decoding raised)."""
    if isinstance(exc, msgspec.ValidationError):
        return str(exc)
    if isinstance(exc, msgspec.DecodeError):
        return f"not valid JSON ({exc})"
    if isinstance(exc, RecursionError):
        return "not a probe result: nested too deeply"
    return f"not a probe result ({type(exc).__name__})"


def decode_record(line: bytes | str, *, lineno: int = 1, source: str = "") -> ProbeResult:
    """One line; raises :class:`RecordError` for any line that is not a probe result."""
    try:
        return _decoder.decode(line)
    except Exception as exc:  # noqa: BLE001 - RecursionError too: a bad line is a RecordError
        raise RecordError(lineno, reason_of(exc), source=source) from None


def encode_record(record: ProbeResult) -> bytes:
    return _encoder.encode(record)


def encode_records(records: Iterable[ProbeResult]) -> bytes:
    """JSONL bytes, one record per line, newline-terminated."""
    buf = bytearray()
    for r in records:
        _encoder.encode_into(r, buf, -1)
        buf += b"\n"
    return bytes(buf)


def iter_records(lines: Iterable[bytes | str], *, source: str = "") -> Iterator[ProbeResult]:
    """Decode JSONL lines, skipping blank ones; raises :class:`RecordError` at the first bad line."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield decode_record(line, lineno=lineno, source=source)


def decode_records(data: bytes, *, source: str = "") -> list[ProbeResult]:
    """Every record of a JSONL buffer; raises :class:`RecordError` at the first bad line.

    Decodes the whole buffer in one call (msgspec's JSON-lines decoder); only when
    that fails is it read again line by line, to name the first bad line.
    """
    try:
        return _decoder.decode_lines(data)
    except Exception:  # noqa: BLE001, S110 - read again line by line to name the bad one
        pass
    return list(iter_records(data.splitlines(), source=source))


def read_records(path: str | os.PathLike[str]) -> list[ProbeResult]:
    """Read a whole JSONL file; ``-`` reads standard input. Raises :class:`RecordError`
    at the first bad line, ``OSError`` when it cannot be read."""
    if str(path) == "-":
        return decode_records(sys.stdin.buffer.read(), source="<stdin>")
    p = Path(path)
    return decode_records(p.read_bytes(), source=str(p))


def write_records(fh: IO[bytes], records: Iterable[ProbeResult]) -> None:
    fh.write(encode_records(records))


def parse_batch(body: bytes) -> tuple[list[ProbeResult], int, list[Rejected]]:
    """Decode a JSONL batch leniently: (good records, number rejected, first rejections)."""
    good: list[ProbeResult] = []
    rejected: list[Rejected] = []
    n_rejected = 0
    for lineno, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            good.append(_decoder.decode(line))
        except Exception as exc:  # noqa: BLE001 - each line on its own: RecursionError costs one line
            n_rejected += 1
            if len(rejected) < MAX_LISTED_REJECTIONS:
                rejected.append(Rejected(lineno, reason_of(exc)))
    return good, n_rejected, rejected
