"""``prober lab``: a real cluster in network namespaces, with real failure modes to switch on."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import click
import msgspec

from prober.errors import UsageError
from prober.inventory import TrafficPolicy
from prober.settings import WINDOW
from prober_lab.faults import Fault, FaultError, choose_cni, describe_faults, fault_kind, parse_fault
from prober_lab.plan import DEFAULT_TRAFFIC_POLICY, TRAFFIC_POLICIES, Cni, LabSpec
from prober_lab.runtime import LAB_INTERVAL_S, LAB_TIMEOUT_S

if TYPE_CHECKING:
    from prober.model import Report

#: Seconds each demo scene probes (the NLB collision scene two steps): enough for every
#: scene's fault to be diagnosed at the lab's 1 s rounds with room to spare (the rules
#: need 6 to 10 s, the collision 20 to 25 s: bench/lab_time_to_detect.py), and the six
#: scenes fit in under 3 minutes.
DEMO_STEP_S = 15.0

POLICY_HELP = (
    "externalTrafficPolicy of the echo NodePort, and so of the NLB in front of it. Local: a node "
    "serves what enters it, with the client's address. Cluster (the Kubernetes default): any node "
    "forwards to any node's echo, masqueraded to its own address, so a NodePort or NLB probe takes "
    "two hops."
)
PREFIX_HELP = "Name prefix of every namespace, interface and file the lab creates."
INTERVAL_HELP = (
    "Agents' probe round, seconds. The lab's 1 s gives diagnosis its samples within a "
    "few rounds; production runs 10 s."
)
TIMEOUT_HELP = (
    "Probe timeout, seconds. Under 1 s a lost SYN is a failure, not a 1 s retransmit; "
    "diagnosis counts both as loss. Production runs 5 s."
)


def _check_schedule(interval: float, timeout_s: float) -> None:
    if timeout_s >= interval:
        raise UsageError(f"--timeout ({timeout_s:g} s) must be shorter than --interval ({interval:g} s)")


def _say(text: str) -> None:
    click.echo(text, err=True)


def _faults_help() -> str:
    return describe_faults()


class _FaultHelpCommand(click.Command):
    """Appends the fault catalogue (with production equivalents) to ``--help``."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Faults (KIND[@NODE[,NODE]][:ARG])"):
            for line in _faults_help().splitlines():
                formatter.write_text(line)
                formatter.write_paragraph()


def _parse_faults(values: Sequence[str]) -> list[Fault]:
    out: list[Fault] = []
    for v in values:
        for part in _split_faults(v):
            try:
                out.append(parse_fault(part))
            except FaultError as exc:
                raise UsageError(str(exc)) from None
    return out


def _split_faults(value: str) -> list[str]:
    """``--fault a --fault b`` and ``--fault "a b"`` both work (commas belong to node lists)."""
    return [p for p in value.split() if p]


@contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM and SIGINT unwind like Ctrl-C, so ``finally`` tears the lab down.

    SIGINT too: a process started in the background by a shell (``cmd &``) inherits
    SIGINT ignored, and Python then never turns it into KeyboardInterrupt; a lab
    that ``kill -INT`` could not stop would be left running.
    """

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@click.group()
def lab() -> None:
    """A real cluster in Linux network namespaces, with real failure modes.

    The lab builds N nodes (node-a, node-b, ...) in two or three zones (--zones) behind a VPC
    router, two pods per node (the pod-network agent and an echo backend running
    `prober echo`), kube-proxy's iptables Services and an externalTrafficPolicy: Local
    NodePort, an NLB node per zone, an external server and a DNS server, and runs
    the real prober collector and agents in it (1 s rounds). Faults are switched on
    with the kernel knobs that break real clusters.

    \b
    Start here (as root):
      prober lab demo                                  a guided tour, 5 to 11 minutes
      prober lab run --fault bridge-netfilter@node-b   probe a faulty lab, print findings
      prober lab up && prober lab check                build one and look at it yourself
      prober lab down                                  remove everything the lab made
    """


@lab.command(cls=_FaultHelpCommand)
@click.option("--nodes", type=click.IntRange(2, 16), default=3, show_default=True, help="Number of nodes.")
@click.option("--zones", type=click.IntRange(2, 6), default=None,
              help="Availability zones, nodes spread over them in turn (at most --nodes). "
              "Default: 2 for up to 3 nodes, else 3. A zone-partition needs two nodes in each of "
              "its zones.")  # fmt: skip
@click.option("--external-traffic-policy", "policy", type=click.Choice(TRAFFIC_POLICIES),
              default=DEFAULT_TRAFFIC_POLICY, show_default=True, help=POLICY_HELP)  # fmt: skip
@click.option(
    "--cni",
    type=click.Choice(["bridge", "vpc"]),
    default=None,
    help="Pod networking: bridge (flannel/kops cni0) or vpc (AWS VPC CNI). Default: what the faults need, "
    "else bridge.",
)
@click.option("--fault", "faults", multiple=True, metavar="KIND[@NODE][:ARG]", help="Fault to switch on.")
@click.option("--interval", type=click.FloatRange(0.5, 60), default=LAB_INTERVAL_S, show_default=True,
              help=INTERVAL_HELP)  # fmt: skip
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 10), default=LAB_TIMEOUT_S,
              show_default=True, help=TIMEOUT_HELP)  # fmt: skip
@click.option("--agents/--no-agents", default=True, show_default=True,
              help="Run prober's collector and agents in the lab.")  # fmt: skip
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
def up(
    *,
    nodes: int,
    zones: int | None,
    policy: TrafficPolicy,
    cni: str | None,
    faults: tuple[str, ...],
    interval: float,
    timeout_s: float,
    agents: bool,
    prefix: str,
) -> None:
    """Build a lab and leave it running (find it again with status, fault, down)."""
    from prober_lab import runtime

    if agents:
        _check_schedule(interval, timeout_s)
    spec, parsed = _spec(nodes, zones, cni, faults, prefix, policy=policy)
    with _terminate_on_sigterm():
        runtime.up(spec, parsed, runtime.UpOptions(agents=agents, interval_s=interval, timeout_s=timeout_s),
                   progress=_say)  # fmt: skip
    _say(
        f"lab up: {spec.nodes} nodes, {spec.cni} CNI, externalTrafficPolicy {spec.external_traffic_policy}; "
        "`prober lab status` to look, `prober lab down` to remove"
    )


def _spec(
    nodes: int,
    zones: int | None,
    cni: str | None,
    faults: Sequence[str],
    prefix: str,
    *,
    policy: TrafficPolicy = DEFAULT_TRAFFIC_POLICY,
) -> tuple[LabSpec, list[Fault]]:
    parsed = _parse_faults(faults)
    try:
        chosen = choose_cni(parsed, Cni(cni) if cni else None)
        spec = LabSpec(nodes=nodes, cni=chosen, prefix=prefix, zones=zones, external_traffic_policy=policy)
    except (FaultError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return spec, parsed


@lab.command()
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
def down(prefix: str) -> None:
    """Remove every namespace and process of the lab (safe to run again)."""
    from prober_lab import runtime

    count, seconds = runtime.down(prefix)
    _say(
        f"lab down: {count} namespaces removed in {seconds:.2f} s" if count else "lab down: nothing to remove"
    )


@lab.command()
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the lab's state as JSON.")
def status(prefix: str, as_json: bool) -> None:
    """Show the running lab: nodes, addresses, faults, processes."""
    import msgspec

    from prober_lab import netns, runtime

    state = runtime.require_state(prefix)
    if as_json:
        click.echo(msgspec.json.encode(state).decode())
        return
    plan = state.plan
    alive = {name: _alive(pid) for name, pid in state.pids.items()}
    click.echo(
        f"lab {prefix}: {state.nodes} nodes, {state.cni} CNI, externalTrafficPolicy "
        f"{state.external_traffic_policy}, up {time.time() - state.started_at:.0f} s"
    )
    click.echo(
        f"namespaces: {len(netns.namespaces_with_prefix(prefix))}; "
        f"faults: {', '.join(state.faults) or 'none'}"
    )
    for n in plan.nodes:
        click.echo(f"  {n.name} ({n.zone}) eth0 {n.ip}  agent pod {n.agent.ip}  echo pod {n.echo.ip}")
    for nlb in plan.nlbs:
        click.echo(f"  nlb {nlb.zone} {nlb.vip}")
    procs = ", ".join(f"{k}{'' if v else ' (dead)'}" for k, v in alive.items())
    click.echo(f"processes: {procs or 'none'}")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@lab.group()
def fault() -> None:
    """Switch faults on and off in the running lab."""


@fault.command("on", cls=_FaultHelpCommand)
@click.argument("spec")
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
def fault_on(spec: str, prefix: str) -> None:
    """Switch SPEC (KIND[@NODE[,NODE]][:ARG]) on."""
    from prober_lab import runtime

    (parsed,) = _parse_faults([spec])
    try:
        state = runtime.fault_on(prefix, parsed)
    except FaultError as exc:
        raise UsageError(str(exc)) from None
    _say(f"faults on: {', '.join(state.faults)}")


@fault.command("off")
@click.argument("spec", required=False)
@click.option("--all", "all_", is_flag=True, help="Switch every fault off.")
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
def fault_off(spec: str | None, all_: bool, prefix: str) -> None:
    """Switch SPEC off (a KIND alone switches off every fault of that kind)."""
    from prober_lab import runtime

    if (spec is None) == (not all_):
        raise UsageError("name one fault, or give --all")
    parsed = None if spec is None else _parse_faults_loose(spec)
    state = runtime.fault_off(prefix, parsed)
    _say(f"faults on: {', '.join(state.faults) or 'none'}")


def _parse_faults_loose(spec: str) -> Fault:
    """For ``off``: a bare kind (``packet-loss``) is enough."""
    try:
        return parse_fault(spec)
    except FaultError:
        kind = fault_kind(spec.partition("@")[0].partition(":")[0])
        if kind is None:
            raise UsageError(f"unknown fault {spec!r}") from None
        return Fault(kind=kind)


@lab.command()
@click.option("--count", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Probes per source and target.")  # fmt: skip
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 10), default=LAB_TIMEOUT_S,
              show_default=True, help="Probe timeout, seconds.")  # fmt: skip
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
def check(count: int, timeout_s: float, prefix: str) -> None:
    """Probe every path of the running lab with the lab's own client (no agents needed)."""
    from prober_lab import runtime
    from prober_lab.check import check as run_check
    from prober_lab.check import render

    state = runtime.require_state(prefix)
    plan = state.plan
    _say(f"probing: {count} per source and target, faults: {', '.join(state.faults) or 'none'}")
    table = asyncio.run(run_check(plan, count=count, timeout_s=timeout_s))
    click.echo(render(plan, table))


@lab.command(cls=_FaultHelpCommand)
@click.option("--nodes", type=click.IntRange(2, 16), default=3, show_default=True, help="Number of nodes.")
@click.option("--zones", type=click.IntRange(2, 6), default=None,
              help="Availability zones, nodes spread over them in turn (at most --nodes). "
              "Default: 2 for up to 3 nodes, else 3. A zone-partition needs two nodes in each of "
              "its zones.")  # fmt: skip
@click.option("--external-traffic-policy", "policy", type=click.Choice(TRAFFIC_POLICIES),
              default=DEFAULT_TRAFFIC_POLICY, show_default=True, help=POLICY_HELP)  # fmt: skip
@click.option("--cni", type=click.Choice(["bridge", "vpc"]), default=None,
              help="Pod networking (default: what the faults need, else bridge).")  # fmt: skip
@click.option("--fault", "faults", multiple=True, metavar="KIND[@NODE][:ARG]", help="Fault to switch on.")
@click.option("--duration", type=click.FloatRange(2, 3600), default=30, show_default=True,
              help="Seconds to probe with the faults on; the report covers exactly this time.")  # fmt: skip
@click.option("--interval", type=click.FloatRange(0.5, 60), default=LAB_INTERVAL_S, show_default=True,
              help=INTERVAL_HELP)  # fmt: skip
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 10), default=LAB_TIMEOUT_S,
              show_default=True, help=TIMEOUT_HELP)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help='Print {"matrix": ..., "findings": [...]} only.')
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
@click.pass_context
def run(
    ctx: click.Context,
    *,
    nodes: int,
    zones: int | None,
    policy: TrafficPolicy,
    cni: str | None,
    faults: tuple[str, ...],
    duration: float,
    interval: float,
    timeout_s: float,
    as_json: bool,
    prefix: str,
) -> None:
    """Build a lab, probe it for DURATION seconds, print the matrix and findings, tear it down.

    The report covers exactly the DURATION seconds the faults were on, diagnosed with
    the collector's own code from the real agents' results. Progress goes to stderr,
    the report to stdout. Ctrl-C tears the lab down.

    \b
    Exit status: 0 no findings, 1 findings, 2 the lab could not run.
    \b
    Examples:
      prober lab run --fault bridge-netfilter@node-b --duration 20
      prober lab run --fault snat-asymmetric@b --fault pair-blocked@a,c --json
    """
    from prober_lab import runtime, session

    _check_schedule(interval, timeout_s)
    spec, parsed = _spec(nodes, zones, cni, faults, prefix, policy=policy)
    opts = runtime.UpOptions(
        agents=True, interval_s=interval, timeout_s=timeout_s, window_s=max(WINDOW.default, duration)
    )
    with _terminate_on_sigterm():
        report = session.run(spec, parsed, opts, duration_s=duration, say=_say, wait=_wait)
    if as_json:
        sys.stdout.buffer.write(session.report_json(report) + b"\n")
        sys.stdout.flush()
    else:
        from rich.console import Console

        from prober.render import render_report

        on = ", ".join(str(f) for f in parsed) or "no faults"
        title = (
            f"prober lab run: {spec.nodes} nodes, {spec.cni} CNI, {on}, "
            f"externalTrafficPolicy {spec.external_traffic_policy}"
        )
        render_report(report, Console(), title=title)
    ctx.exit(1 if report.findings else 0)


def _wait(seconds: float, what: str, tick: Callable[[], None] | None = None) -> None:
    """Sleep ``seconds``, ticking: a countdown on a terminal, else one line as it starts."""
    start = time.monotonic()
    tty = sys.stderr.isatty()
    if what and not tty and seconds >= 2:
        _say(f"{what}: {seconds:.0f} s")
    shown = False
    while (left := seconds - (time.monotonic() - start)) > 0:
        if tty and what:
            click.echo(f"\r{what}: {left:4.0f} s left ", err=True, nl=False)
            shown = True
        if tick is not None:
            tick()
        time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - start))))
    if shown:
        click.echo("\r" + " " * (len(what) + 16) + "\r", err=True, nl=False)


@lab.command()
@click.option("--nodes", type=click.IntRange(2, 8), default=3, show_default=True, help="Number of nodes.")
@click.option("--step", "step_s", type=click.FloatRange(5, 120), default=DEMO_STEP_S, show_default=True,
              help="Seconds each scene probes with its faults on.")  # fmt: skip
@click.option("--prefix", default="plab", show_default=True, help=PREFIX_HELP)
@click.pass_context
def demo(ctx: click.Context, nodes: int, step_s: float, prefix: str) -> None:
    """A guided tour: a clean lab, then each failure mode of docs/incidents.md, with what diagnosis says.

    Builds a bridge-CNI lab (clean; br_netfilter missing; NLB hairpin; a node
    unreachable; a node's pod network cut off), the same behind an
    externalTrafficPolicy: Cluster NodePort (NLB hairpin; a blocked pair), then a
    VPC-CNI lab (SNAT with strict rp_filter; NLB 5-tuple collision), then a lab of
    six nodes in three zones (a zone partition) and one in two zones (a degraded
    zone), runs the real agents and collector in them, and after each scene shows
    the matrix of the paths that failed and the findings of exactly that scene's
    time. 5 to 11 minutes; Ctrl-C tears the lab down.

    Exit status: 0 when diagnosis named every scene's fault as expected, 1 otherwise.
    """
    from rich.console import Console
    from rich.text import Text

    from prober.render import render_report
    from prober_lab.session import failing_paths_only, run_demo

    console = Console()

    def show(report: Report, title: str, full: bool) -> None:
        if full:
            render_report(report, console, title=title)
            return
        matrix, hidden = failing_paths_only(report.matrix)
        render_report(msgspec.structs.replace(report, matrix=matrix), console, title=title)
        if hidden:
            console.print(Text(f"({hidden} other paths: every probe answered)", style="dim"))

    started = time.monotonic()
    with _terminate_on_sigterm():
        ok = run_demo(
            nodes=nodes, step_s=step_s, prefix=prefix, say=_say, out=click.echo, show=show, wait=_wait
        )
    _say(f"demo finished in {time.monotonic() - started:.0f} s")
    ctx.exit(0 if ok else 1)
