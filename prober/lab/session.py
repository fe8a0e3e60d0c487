"""What ``prober lab run`` and ``prober lab demo`` do with a running lab: read and show reports.

The report comes from the lab's collector (``GET /api/v1/report``), fetched from
inside the collector's namespace, and is shown with :mod:`prober.render` when that
module is present, else as a plain per-path table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from prober.lab import runtime
from prober.lab.faults import Fault, parse_fault
from prober.lab.netns import LabError
from prober.lab.plan import Cni, LabSpec, Plan
from prober.model import Report

Say = Callable[[str], None]
Wait = Callable[[float, str], None]


def report_from_collector(plan: Plan, *, window_s: float) -> Report:
    body = runtime.collector_get(plan, f"/api/v1/report?window={window_s:g}")
    try:
        return msgspec.json.decode(body, type=Report)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise LabError(f"the lab's collector sent a report this prober cannot read: {exc}") from None


def render_report(report: Report) -> str:
    try:
        from prober import render  # type: ignore[attr-defined,unused-ignore]  # noqa: PLC0415
    except ImportError:
        return plain_report(report)
    text = render.render_report(report)
    return str(text)


def plain_report(report: Report) -> str:
    lines: list[str] = []
    for pm in report.matrix.paths:
        if not pm.sent:
            continue
        lines.append(f"{pm.path}: {pm.ok}/{pm.sent} ok ({100 * pm.ok / pm.sent:.1f}%)")
        rows: dict[str, list[str]] = {}
        for c in pm.cells:
            if c.ok == c.sent:
                continue
            dst = c.dst if c.dst is not None else "?"
            rows.setdefault(c.src, []).append(f"{dst} {c.ok}/{c.sent}")
        for src, cells in sorted(rows.items()):
            lines.append(f"    from {src}: " + ", ".join(cells))
    if not report.findings:
        lines.append("findings: none")
    for f in report.findings:
        lines.append(
            f"finding: {f.kind} ({f.severity}, confidence {f.confidence:.3f}) nodes {', '.join(f.nodes)}"
        )
        lines.append(f"    evidence: {f.evidence}")
        lines.append(f"    fix: {f.remediation}")
    return "\n".join(lines)


def show_report(report: Report, *, as_json: bool, out: Say) -> None:
    if as_json:
        out(msgspec.json.encode({"matrix": report.matrix, "findings": report.findings}).decode())
    else:
        out(render_report(report))


@dataclass(frozen=True, slots=True, kw_only=True)
class Scene:
    title: str
    cni: Cni
    fault: str | None
    story: str


SCENES: tuple[Scene, ...] = (
    Scene(
        title="a clean cluster",
        cni=Cni.BRIDGE,
        fault=None,
        story="Every path from every node should succeed, and diagnosis should find nothing.",
    ),
    Scene(
        title="br_netfilter missing on node-b (seed 004: kops + flannel)",
        cni=Cni.BRIDGE,
        fault="bridge-netfilter@node-b",
        story="bridge-nf-call-iptables=0 on node-b: a pod's ClusterIP connection to a backend on "
        "node-b gets its SYN-ACK straight across cni0 from the pod IP and answers with RST.",
    ),
    Scene(
        title="NLB hairpin with client-IP preservation (seeds 000 and 001)",
        cni=Cni.BRIDGE,
        fault="nlb-hairpin",
        story="The NLB keeps the client's address: when it picks the client's own node, the reply never "
        "goes back through the NLB. About 1 in N NLB probes fail on every node.",
    ),
    Scene(
        title="VPC CNI SNAT with strict rp_filter (seeds 002 and 003: cross-wired)",
        cni=Cni.VPC,
        fault="snat-asymmetric@node-b",
        story="node-b SNATs its pods' external traffic to eth0 while the pod's replies are policy-routed "
        "via eth1: strict rp_filter drops them. node-b's pod cannot reach the external server; node-b can.",
    ),
    Scene(
        title="NLB cross-zone 5-tuple collision (seed 001)",
        cni=Cni.VPC,
        fault="nlb-5tuple-collision",
        story="Two zones' NLB nodes forward one client port to one target with the client's address: "
        "the target sees the same 5-tuple twice.",
    ),
)


def run_demo(*, nodes: int, step_s: float, prefix: str, say: Say, out: Say, wait: Wait) -> None:
    """Each scene in turn; one lab per CNI mode, faults switched on and off in it."""
    state: runtime.LabState | None = None
    opts = runtime.UpOptions(agents=True, interval_s=2.0, timeout_s=0.9, window_s=max(60.0, step_s))
    try:
        for i, scene in enumerate(SCENES, 1):
            if state is None or state.cni != scene.cni.value:
                if state is not None:
                    runtime.down(prefix, progress=say)
                say(f"\n== building a {scene.cni} CNI lab with {nodes} nodes")
                state = runtime.up(LabSpec(nodes=nodes, cni=scene.cni, prefix=prefix), [], opts, progress=say)
                runtime.wait_collector_ready(state.plan)
            faults: list[Fault] = [parse_fault(scene.fault)] if scene.fault else []
            state = runtime.set_faults(prefix, faults)
            out(f"\n=== {i}/{len(SCENES)}: {scene.title}")
            out(scene.story)
            wait(step_s, f"probing for {step_s:g} s")
            report = report_from_collector(state.plan, window_s=step_s - 1)
            out(render_report(report))
            if faults:
                runtime.set_faults(prefix, [])
                out(f"(switched {scene.fault} off)")
    finally:
        runtime.down(prefix, progress=say)
