"""Terminal rendering of a :class:`~prober.model.Report`: a matrix per path, then the findings.

Used by ``prober sweep``, ``prober diagnose`` and ``prober lab run``. Each path is a
table: rows are source nodes (the path names their kind), columns are destination
nodes (or outside target names), a cell is the share of probes that succeeded,
coloured green (>= 99 %), yellow (>= 90 %) or red, and ``·`` where nothing was sent.
Failures that no node answered (a Service or NLB probe that timed out) sit in their
own ``no answer`` column, apart from the node columns, as a count.

Wide clusters are summarized rather than wrapped: when the columns do not fit the
terminal (or there are more rows than ``max_rows``), only the rows and columns with
a failure are shown, the worst first, with a line saying how many were left out and
that they were all-ok. Node names lose a domain suffix they all share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from prober.model import Cell, Finding, PathMatrix, Report, split_path

GOOD: Final = 0.99
FAIR: Final = 0.90
NOTHING: Final = "·"
_SEVERITY_STYLE: Final = {"critical": "bold red", "warning": "bold yellow", "info": "bold cyan"}
_CELL_WIDTH: Final = 6


def ratio_style(ratio: float) -> str:
    if ratio >= GOOD:
        return "green"
    if ratio >= FAIR:
        return "yellow"
    return "red"


def format_ratio(ratio: float) -> str:
    """A percentage that never rounds a failure away: 99.96 % shows as 99.9, not 100."""
    if ratio >= 1.0:
        return "100"
    if ratio <= 0.0:
        return "0"
    return f"{math.floor(ratio * 1000) / 10:.1f}"


def _seconds(s: float) -> str:
    return f"{s:.0f}" if s >= 10 else f"{s:.2g}"


def common_suffix(names: Sequence[str]) -> str:
    """The longest ``.domain`` suffix every name shares (never a whole name)."""
    if len(names) < 2:
        return ""
    first = names[0]
    for i, ch in enumerate(first):
        if ch != ".":
            continue
        suffix = first[i:]
        if all(n.endswith(suffix) and len(n) > len(suffix) for n in names):
            return suffix
    return ""


@dataclass(frozen=True, slots=True)
class _Shown:
    rows: list[str]
    cols: list[str]
    no_answer: bool
    note: str


def _failures(cell: Cell) -> int:
    return cell.sent - cell.ok


def _choose(pm: PathMatrix, *, max_cols: int, max_rows: int) -> _Shown:
    """Which rows and columns to draw: everything if it fits, else the failing ones, worst first."""
    no_answer = any(c.dst is None for c in pm.cells)
    if len(pm.targets) <= max_cols and len(pm.sources) <= max_rows:
        return _Shown(pm.sources, pm.targets, no_answer, "")
    row_fail: dict[str, int] = defaultdict(int)
    col_fail: dict[str, int] = defaultdict(int)
    for c in pm.cells:
        f = _failures(c)
        if f:
            row_fail[c.src] += f
            if c.dst is not None:
                col_fail[c.dst] += f
    order_r = {n: i for i, n in enumerate(pm.sources)}
    order_c = {n: i for i, n in enumerate(pm.targets)}
    rows = sorted(row_fail, key=lambda n: (-row_fail[n], order_r.get(n, 0)))
    cols = sorted(col_fail, key=lambda n: (-col_fail[n], order_c.get(n, 0)))
    cut_r, cut_c = len(rows) > max_rows, len(cols) > max_cols
    rows = sorted(rows[:max_rows], key=lambda n: order_r.get(n, 0))
    cols = sorted(cols[:max_cols], key=lambda n: order_c.get(n, 0))
    ok_rows = len(pm.sources) - len(row_fail)
    ok_cols = len(pm.targets) - len(col_fail)
    hidden = f"{ok_rows} of {len(pm.sources)} sources and {ok_cols} of {len(pm.targets)} targets"
    parts = [f"{hidden} had no failures and are hidden"]
    if cut_r:
        parts.append(f"showing the {max_rows} of {len(row_fail)} failing sources with the most failures")
    if cut_c:
        parts.append(f"showing the {max_cols} of {len(col_fail)} failing targets with the most failures")
    return _Shown(rows, cols, no_answer, "; ".join(parts))


def _path_table(pm: PathMatrix, *, width: int, max_rows: int) -> tuple[Table | None, str]:
    src_kind = split_path(pm.path)[0].value
    names = [*pm.sources, *pm.targets]
    suffix = common_suffix(names)

    def short(name: str) -> str:
        return name[: -len(suffix)] if suffix and name.endswith(suffix) else name

    label_w = max((len(short(n)) for n in pm.sources), default=6)
    col_w = max(_CELL_WIDTH, max((len(short(n)) for n in pm.targets), default=0) + 1)
    max_cols = max(3, (width - label_w - 2 * _CELL_WIDTH - 12) // (col_w + 3))
    shown = _choose(pm, max_cols=max_cols, max_rows=max_rows)
    notes = [shown.note] if shown.note else []
    if suffix:
        notes.append(f"node names shown without {suffix!r}")
    if not shown.rows:
        return None, "; ".join(notes)

    by_cell = {(c.src, c.dst): c for c in pm.cells}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in pm.cells:
        t = totals[c.src]
        t[0] += c.sent
        t[1] += c.ok
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column(f"{src_kind} on", no_wrap=True)
    for col in shown.cols:
        table.add_column(short(col), justify="right", no_wrap=True, overflow="ellipsis", max_width=col_w)
    table.add_column("│", no_wrap=True, style="dim")  # node columns | everything else
    if shown.no_answer:
        table.add_column("no answer", justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    for src in shown.rows:
        row: list[Text] = [Text(short(src))]
        for col in shown.cols:
            cell = by_cell.get((src, col))
            if cell is None or cell.ratio is None:
                row.append(Text(NOTHING, style="dim"))
            else:
                row.append(Text(format_ratio(cell.ratio), style=ratio_style(cell.ratio)))
        row.append(Text("│"))
        if shown.no_answer:
            lost = by_cell.get((src, None))
            row.append(Text(f"✗{lost.sent}", style="red") if lost else Text(NOTHING, style="dim"))
        sent, ok = totals.get(src, (0, 0))
        if sent:
            row.append(Text(format_ratio(ok / sent), style=ratio_style(ok / sent)))
        else:
            row.append(Text(NOTHING, style="dim"))
        table.add_row(*row)
    return table, "; ".join(notes)


def render_matrix_path(pm: PathMatrix, console: Console, *, max_rows: int = 40) -> None:
    ratio = pm.ok / pm.sent if pm.sent else None
    head = Text()
    head.append(pm.path, style="bold")
    head.append(f"   {pm.sent:,} probes")
    if ratio is not None:
        head.append(", ")
        head.append(f"{format_ratio(ratio)} % ok", style=ratio_style(ratio))
    console.print(head)
    table, note = _path_table(pm, width=console.width, max_rows=max_rows)
    if table is None:
        console.print(Text(f"  every cell ok ({len(pm.sources)} sources x {len(pm.targets)} targets)"))
    else:
        console.print(table)
    if note:
        console.print(Text(f"  ({note})", style="dim"))
    console.print()


def render_findings(findings: Sequence[Finding], console: Console) -> None:
    """Each finding: severity, kind and confidence, then labelled fields whose long values
    wrap under themselves, not under the labels."""
    if not findings:
        console.print(Text("No findings: no failure mode recognised.", style="bold green"))
        return
    console.print(Text(f"Findings ({len(findings)})", style="bold"))
    for f in findings:
        head = Text()
        head.append(f"{f.severity.upper():<9}", style=_SEVERITY_STYLE.get(f.severity, "bold"))
        head.append(f"{f.kind}", style="bold")
        head.append(f"   confidence {f.confidence:.3f}")
        if f.since is not None:
            at = datetime.fromtimestamp(f.since, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            head.append(f"   since {at}")
        console.print(head)
        fields = Table.grid(padding=(0, 1))
        fields.add_column(no_wrap=True, style="dim")
        fields.add_column(overflow="fold")
        if f.zones:
            fields.add_row("  zones:", " ↔ ".join(f.zones))
        if f.nodes:
            fields.add_row("  nodes:", ", ".join(f.nodes))
        if f.pairs:
            pairs = ", ".join(f"{a}→{b}" for a, b in f.pairs[:12])
            more = f" (+{len(f.pairs) - 12} more)" if len(f.pairs) > 12 else ""
            fields.add_row("  pairs:", pairs + more)
        if f.paths:
            fields.add_row("  paths:", ", ".join(f.paths))
        fields.add_row("  evidence:", f.evidence)
        if f.suspects:
            fields.add_row("  suspects:", ", ".join(f"{s.component} ({s.score:.0%})" for s in f.suspects[:5]))
        fields.add_row("  remediation:", f.remediation)
        console.print(fields)
        console.print()


def render_report(report: Report, console: Console, *, title: str | None = None, max_rows: int = 40) -> None:
    """The whole report: a header, each path's matrix, the findings."""
    m = report.matrix
    if title:
        console.print(Text(title, style="bold underline"))
    if not m.paths:
        console.print(Text("No probe results in this window.", style="yellow"))
        console.print()
    else:
        console.print(
            Text(
                f"{len(m.nodes)} nodes, {len(m.paths)} paths, window {_seconds(m.window_s)} s. "
                f"Cells: % of probes answered (green ≥ {GOOD:.0%}, yellow ≥ {FAIR:.0%}, red below; "
                f"{NOTHING} nothing sent).",
                style="dim",
            )
        )
        console.print()
        for pm in m.paths:
            render_matrix_path(pm, console, max_rows=max_rows)
    render_findings(report.findings, console)
