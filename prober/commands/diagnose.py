"""``prober diagnose``: offline diagnosis of recorded probe results (JSONL)."""

from __future__ import annotations

import errno
import gc
import re
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, BinaryIO

import click

from prober import settings as declared
from prober.errors import UsageError
from prober.options import setting_options

if TYPE_CHECKING:
    from prober.model import ProbeResult, Report
    from prober.stats import Topology


def natural_key(name: str) -> list[int | str]:
    """``node-2`` before ``node-10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_records(file: str) -> list[ProbeResult]:
    """All records of a JSONL file (``-``: standard input); a bad line is a :class:`UsageError`."""
    from prober.records import RecordError, read_records

    try:
        return read_records(file)
    except OSError as exc:
        source = "<stdin>" if file == "-" else file
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    except RecordError as exc:
        raise UsageError(str(exc)) from None


def diagnose_records(
    records: list[ProbeResult],
    *,
    window_s: float | None = None,
    nodes: list[str] | None = None,
    topology: Topology | None = None,
    warn: Callable[[str], None] = lambda _: None,
) -> Report:
    """The report for recorded results: the last ``window_s`` seconds of them, or all.

    The recording's end is the time its sources reached (not its newest record):
    results stamped far beyond it or before its start are left out, and ``warn`` says
    how many. The findings are those the collector (at its default schedule, with
    ``window_s`` as its window) would have shown at the recording's end: its passes
    are replayed (:func:`prober.report.replay_passes`).
    """
    from prober.report import MAX_SKEW_S, PassSchedule, last_seconds, replayed_report

    if not records:
        raise UsageError("no probe results to diagnose")
    recording = last_seconds(records, window_s)
    if recording.future or recording.past:
        warn(
            f"left out {recording.future:,} results stamped more than {MAX_SKEW_S:g} s after the "
            f"recording's end and {recording.past:,} more than {MAX_SKEW_S:g} s before its start "
            f"(clock skew? from {', '.join(recording.skewed[:5])}"
            f"{' and more' if len(recording.skewed) > 5 else ''})"
        )
    if not recording.records:
        raise UsageError("no probe results left to diagnose once the skewed ones are left out")
    if nodes is None:
        seen = {r.src_node for r in recording.records}
        seen |= {r.dst_node for r in recording.records if r.dst_node is not None}
        nodes = sorted(seen, key=natural_key)
    # The passes before the window's end read the records before it too.
    history = recording.records if window_s is None else last_seconds(records, None).records
    return replayed_report(
        recording.records,
        history=history,
        schedule=PassSchedule(),
        nodes=nodes,
        topology=topology,
        window_s=window_s,
        end_ts=recording.last_ts,
    )


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
    topology: Topology | None = None
    if inventory:
        from prober.inventory import InventoryError
        from prober.inventory.static import load_inventory
        from prober.stats import Topology

        try:
            inv = load_inventory(inventory)
        except InventoryError as exc:
            raise UsageError(str(exc)) from None
        nodes = [n.name for n in inv.nodes]
        topology = Topology.of(inv)
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
        report = diagnose_records(
            records,
            window_s=window_s,
            nodes=nodes,
            topology=topology,
            warn=lambda m: err.print(f"warning: {m}"),
        )
    try:
        if as_json:
            import msgspec

            write_all(sys.stdout.buffer, msgspec.json.encode(report) + b"\n")
        else:
            render_report(report, Console(), title=f"prober diagnose {file}: {len(records):,} results")
        sys.stdout.flush()
    except OSError as exc:
        raise UsageError(f"cannot write the report to standard output: {exc.strerror or exc}") from None
    ctx.exit(1 if report.findings else 0)


def write_all(stream: BinaryIO, data: bytes) -> None:
    """Write every byte of ``data`` or raise ``OSError``: a short write is retried from
    where it stopped, a stream that takes nothing is an error."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if not written:
            raise OSError(errno.EIO, f"short write: {len(data) - len(view):,} of {len(data):,} bytes written")
        view = view[written:]
