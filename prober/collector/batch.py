"""Decoding result batches: all at once when the batch is clean, line by line when it is not.

A clean batch (the usual case) is decoded in one call of msgspec's JSON-lines
decoder, which is faster than a call per line; a batch with a bad line is decoded
again by :func:`prober.records.parse_batch`, which keeps the good lines and names
the bad ones.
"""

from __future__ import annotations

import msgspec

from prober.model import ProbeResult
from prober.records import Rejected, parse_batch

_decoder = msgspec.json.Decoder(ProbeResult)


def decode_batch(body: bytes) -> tuple[list[ProbeResult], int, list[Rejected]]:
    """(good records, number rejected, first rejections), as :func:`~prober.records.parse_batch`."""
    try:
        return _decoder.decode_lines(body), 0, []
    except Exception:  # noqa: BLE001 - any failure (RecursionError too): line by line
        return parse_batch(body)
