"""The collector's edge: which lines of a result batch may enter the store, and why not.

A batch (``POST /api/v1/results``) comes from outside the collector's trust, so
every line is checked before it reaches the statistics (docs/contracts.md §
Results endpoint):

- each line is decoded in isolation; any exception (a deeply nested line raises
  ``RecursionError``) rejects that line only. Decoding checks every field's type
  and bound (:class:`~prober.model.ProbeResult`: names of a documented alphabet and
  length, ports 0-65535, a finite latency);
- ``ts`` must lie within [now - retention, now + allowed clock skew]: a record from
  the far future would otherwise sit in the newest bucket for the whole retention;
- ``src_node`` and ``dst_node`` must be inventory nodes, ``target`` one of the
  inventory's targets of the path's kind (so the store's label tables hold what the
  inventory names, not what a caller invents); a caller bound to a node may only
  report probes sent from it;
- a batch stops being read after ``max_rejected`` rejected lines: it is refused
  whole (the caller sends garbage; reading on only costs the collector).

:class:`SourceQuotas` then caps the records each source node may add per second
(a token bucket per node): one source cannot drown the others.

Pure: the time is an argument, the inventory a value; no I/O. :func:`admit_batch`
runs off the event loop (decoding a 2 MiB batch is CPU work).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import msgspec

from prober.inventory import Inventory
from prober.model import OUTSIDE_KINDS, ProbeResult, TargetKind, split_path
from prober.records import MAX_LISTED_REJECTIONS, Rejected, reason_of

_decoder = msgspec.json.Decoder(ProbeResult)

#: How long a reason may be in an answer (a caller's text is echoed in it).
_MAX_REASON_CHARS: Final = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeRules:
    """What a record must satisfy to enter the store: the inventory's names and the time bounds."""

    nodes: frozenset[str]
    targets: frozenset[str]
    retention_s: float
    skew_s: float
    max_rejected: int

    @staticmethod
    def of(inv: Inventory, *, retention_s: float, skew_s: float, max_rejected: int) -> EdgeRules:
        return EdgeRules(
            nodes=frozenset(n.name for n in inv.nodes),
            targets=inventory_targets(inv),
            retention_s=retention_s,
            skew_s=skew_s,
            max_rejected=max_rejected,
        )


def inventory_targets(inv: Inventory) -> frozenset[str]:
    """Every ``target`` a probe of the inventory's pinglists can carry (docs/contracts.md)."""
    out: set[str] = set()
    for n in inv.nodes:
        out.update((f"{TargetKind.POD}/{n.name}", f"{TargetKind.HOST}/{n.name}"))
    for s in inv.services:
        out.update((f"{TargetKind.SERVICE}/{s.name}", f"{TargetKind.SERVICE_LOCAL}/{s.name}"))
    out.update(f"{TargetKind.NODEPORT}/{p.name}" for p in inv.nodeports)
    out.update(f"{TargetKind.NLB}/{b.name}" for b in inv.nlbs)
    out.update(f"{TargetKind.EXTERNAL}/{e.name}" for e in inv.externals)
    out.update(f"{TargetKind.DNS}/{d.name}" for d in inv.dns)
    return frozenset(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The records of a batch that may enter the store, and the rejected lines.

    ``refused``: more than ``max_rejected`` lines were bad and reading stopped; the
    whole batch is refused (nothing of it is stored).
    """

    records: list[ProbeResult]
    rejected: int
    errors: list[Rejected]
    refused: bool = False
    #: The line of each record (1-based); ``None``: record ``i`` is line ``i + 1``.
    lines: list[int] | None = None
    #: The batch as it came when it is exactly the records' lines, one each in order (the
    #: usual batch): the raw-record ring keeps it as it is; else ``None``.
    jsonl: bytes | None = None

    def line_of(self, index: int) -> int:
        return index + 1 if self.lines is None else self.lines[index]


@dataclass(slots=True)
class _Rejections:
    limit: int
    count: int = 0
    listed: list[Rejected] = field(default_factory=list)

    def add(self, line: int, reason: str) -> bool:
        """Count a rejection; False once more than ``limit`` lines were rejected."""
        self.count += 1
        if len(self.listed) < MAX_LISTED_REJECTIONS:
            if len(reason) > _MAX_REASON_CHARS:
                reason = reason[: _MAX_REASON_CHARS - 1] + "…"
            self.listed.append(Rejected(line, reason))
        return self.count <= self.limit


def problem(r: ProbeResult, rules: EdgeRules, *, now: float, caller_node: str | None) -> str | None:
    """Why a decoded record may not enter the store, or ``None``."""
    if not now - rules.retention_s <= r.ts <= now + rules.skew_s:
        return (
            f"ts {r.ts:.3f} is outside [now - retention, now + {rules.skew_s:g} s]: "
            f"{'older than the retention' if r.ts < now else 'in the future'} (check the agent's clock)"
        )
    if r.src_node not in rules.nodes:
        return f"src_node {r.src_node!r} is not a node of the inventory"
    if caller_node is not None and r.src_node != caller_node:
        return f"src_node {r.src_node!r}: this caller may only report probes from node {caller_node!r}"
    target_kind = split_path(r.path)[1]
    if not r.target.startswith(f"{target_kind}/") or r.target not in rules.targets:
        return f"target {r.target!r} is not one of the inventory's {target_kind} targets"
    if r.dst_node is not None and target_kind not in OUTSIDE_KINDS and r.dst_node not in rules.nodes:
        return f"dst_node {r.dst_node!r} is not a node of the inventory"
    return None


def admit_batch(body: bytes, rules: EdgeRules, *, now: float, caller_node: str | None = None) -> Admission:
    """The records of a JSONL batch that may enter the store; every other line listed with why.

    The usual batch (every line good) is decoded in one call; a batch with any bad
    line is read again line by line, each line on its own.
    """
    try:
        decoded = _decoder.decode_lines(body)
    except Exception:  # noqa: BLE001 - any failure: read line by line, where each costs only itself
        return _admit_lines(body, rules, now=now, caller_node=caller_node)
    if any(problem(r, rules, now=now, caller_node=caller_node) is not None for r in decoded):
        return _admit_lines(body, rules, now=now, caller_node=caller_node)
    n_lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    if n_lines == len(decoded):
        return Admission(records=decoded, rejected=0, errors=[], jsonl=body)
    lines = [i for i, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    return Admission(records=decoded, rejected=0, errors=[], lines=lines)


def _admit_lines(body: bytes, rules: EdgeRules, *, now: float, caller_node: str | None) -> Admission:
    good: list[ProbeResult] = []
    lines: list[int] = []
    bad = _Rejections(rules.max_rejected)
    for lineno, line in enumerate(_lines(body), start=1):
        if not line.strip():
            continue
        try:
            record = _decoder.decode(line)
        except Exception as exc:  # noqa: BLE001 - RecursionError too: the line is rejected, not the batch
            reason: str | None = reason_of(exc)
        else:
            reason = problem(record, rules, now=now, caller_node=caller_node)
            if reason is None:
                good.append(record)
                lines.append(lineno)
                continue
        assert reason is not None
        if not bad.add(lineno, reason):
            return Admission(records=[], rejected=bad.count, errors=bad.listed, refused=True)
    return Admission(records=good, rejected=bad.count, errors=bad.listed, lines=lines)


def _lines(body: bytes) -> Iterator[bytes]:
    """The lines of ``body``, one at a time (a batch refused early is never split whole)."""
    start = 0
    while start <= len(body):
        end = body.find(b"\n", start)
        if end < 0:
            end = len(body)
        yield body[start:end]
        start = end + 1


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class SourceQuotas:
    """A token bucket of records per source node: ``rate_per_s`` on average, ``burst`` at once.

    The burst covers an agent delivering what it buffered while the collector was
    away. Only inventory nodes get a bucket (:func:`admit_batch` rejected the rest),
    and :meth:`keep_only` drops the buckets of departed nodes, so memory is bounded
    by the inventory.
    """

    def __init__(self, *, rate_per_s: float | None, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, records: Iterable[ProbeResult], *, now: float) -> tuple[list[ProbeResult], list[int]]:
        """(the records within their source's quota, indices of those beyond it)."""
        if self.rate_per_s is None:
            return list(records), []
        kept: list[ProbeResult] = []
        over: list[int] = []
        for i, r in enumerate(records):
            b = self._buckets.get(r.src_node)
            if b is None:
                b = self._buckets[r.src_node] = _Bucket(tokens=self.burst, at=now)
            elif now > b.at:
                b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate_per_s)
                b.at = now
            if b.tokens >= 1:
                b.tokens -= 1
                kept.append(r)
            else:
                over.append(i)
        return kept, over

    def keep_only(self, nodes: Iterable[str]) -> None:
        keep = set(nodes)
        for name in [n for n in self._buckets if n not in keep]:
            del self._buckets[name]
