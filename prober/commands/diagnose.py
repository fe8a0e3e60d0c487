"""``prober diagnose``: offline diagnosis of recorded probe results (JSONL)."""

from __future__ import annotations

import gc
import re
import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING

import click

from prober import settings as declared
from prober.errors import UsageError
from prober.options import setting_options

if TYPE_CHECKING:
    from prober.model import ProbeResult, Report


def natural_key(name: str) -> list[int | str]:
    """``node-2`` before ``node-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_records(file: str) -> list[ProbeResult]:
    """All records of a JSONL file (``-``: standard input); a bad line is a :class:`UsageError`.

    Decodes the whole buffer in one call (msgspec's JSON-lines decoder); only when
    that fails is the input read again line by line, to name the first bad line.
    """
    import msgspec

    from prober.model import ProbeResult
    from prober.records import RecordError, iter_records

    source = "<stdin>" if file == "-" else file
    try:
        if file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(file, "rb") as fh:  # noqa: PTH123 - one read of the whole file
                data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return msgspec.json.Decoder(ProbeResult).decode_lines(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        return list(iter_records(data.splitlines(), source=source))
    except RecordError as exc:
        raise UsageError(str(exc)) from None


#: How much of the end of a recording counts as "recent" evidence (two default intervals).
RECENT_S = 2 * declared.INTERVAL.default


def diagnose_records(
    records: list[ProbeResult],
    *,
    window_s: float | None = None,
    nodes: list[str] | None = None,
    zones: dict[str, str] | None = None,
) -> Report:
    """The report for recorded results: the last ``window_s`` seconds of them, or all."""
    import numpy as np

    from prober.collector.store import aggregate
    from prober.diagnose import diagnose
    from prober.matrix import build_matrix
    from prober.model import Report
    from prober.stats import Evidence, NlbProbes, Topology

    if not records:
        raise UsageError("no probe results to diagnose")
    ts = np.fromiter((r.ts for r in records), dtype=np.float64, count=len(records))
    end = float(ts.max())
    if window_s is not None:
        keep = ts >= end - window_s
        if not keep.all():
            records = [r for r, k in zip(records, keep.tolist(), strict=True) if k]
            ts = ts[keep]
    span = end - float(ts.min())
    if nodes is None:
        seen = {r.src_node for r in records} | {r.dst_node for r in records if r.dst_node is not None}
        nodes = sorted(seen, key=natural_key)
    table = aggregate(records, nodes=nodes, window_s=window_s if window_s is not None else span, end_ts=end)
    # The last two default intervals, as "recent" evidence: a fault that began or ended
    # during the recording is named by what it was at the end, not by its average.
    recent = None
    if span > 3 * RECENT_S:
        late = (ts > end - RECENT_S).tolist()
        recent = aggregate([r for r, k in zip(records, late, strict=True) if k], nodes=nodes)
    evidence = Evidence(
        table=table,
        nlb_probes=NlbProbes.from_records(records),
        topology=Topology(zones=zones or {}),
        recent=recent,
    )
    findings = diagnose(evidence)
    matrix = build_matrix(table, nodes=nodes, window_s=table.window_s, generated_at=end)
    return Report(matrix=matrix, findings=findings)


@click.command()
@click.argument("file", metavar="FILE.jsonl|-", type=click.Path(dir_okay=False, allow_dash=True))
@setting_options(declared.DIAGNOSE)
@click.pass_context
def diagnose(
    ctx: click.Context, file: str, as_json: bool, window_s: float | None, inventory: str | None
) -> None:
    """Diagnose recorded probe results: print the matrix per path and the findings.

    FILE.jsonl holds one probe result per line, as agents report them and as
    `curl COLLECTOR/api/v1/records` returns them; `-` reads standard input.

    \b
    Exit status: 0 no findings, 1 findings, 2 error (a bad line is named by number).
    \b
    Examples:
      prober diagnose results.jsonl
      curl -s http://collector:9090/api/v1/records | prober diagnose - --json
      prober diagnose results.jsonl --window 300 --inventory inventory.yaml
    """
    from rich.console import Console

    from prober.render import render_report

    err = Console(stderr=True)
    nodes: list[str] | None = None
    zones: dict[str, str] | None = None
    if inventory:
        from prober.inventory import InventoryError
        from prober.inventory.static import load_inventory

        try:
            inv = load_inventory(inventory)
        except InventoryError as exc:
            raise UsageError(str(exc)) from None
        nodes = [n.name for n in inv.nodes]
        zones = {n.name: n.zone for n in inv.nodes}
    # A million records make the cyclic GC rescan a growing heap again and again
    # (half the run time); records hold no cycles and this process is short-lived.
    gc.disable()
    with err.status(f"reading {file}", spinner="dots") if err.is_terminal else nullcontext():
        records = load_records(file)
    with (
        err.status(f"diagnosing {len(records):,} results", spinner="dots")
        if err.is_terminal
        else nullcontext()
    ):
        report = diagnose_records(records, window_s=window_s, nodes=nodes, zones=zones)
    if as_json:
        import msgspec

        sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
        sys.stdout.flush()
    else:
        render_report(report, Console(), title=f"prober diagnose {file}: {len(records):,} results")
    ctx.exit(1 if report.findings else 0)
