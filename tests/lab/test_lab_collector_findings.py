"""The collector's own findings in the lab: what an SRE sees, not an offline diagnosis.

``test_lab_diagnosis`` diagnoses the raw records of a window as ``prober lab run``
does. Here the fault is switched on in a running lab and the test watches what the
collector itself publishes, continuously, as in production: ``GET /api/v1/findings``
(its 60 s window, the longer window, recent evidence) and the ``prober_finding``
series on ``/metrics``. The finding must appear while the fault is on, and go away
once it is off.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prober.records import decode_record
from prober_lab import runtime
from prober_lab.faults import parse_fault
from prober_lab.plan import ECHO_HTTP_PORT, Plan
from tests.lab.conftest import http_tally

pytestmark = pytest.mark.lab

#: At 1 s rounds: results arrive after their round, the collector refreshes every 5 s.
DETECT_S = 60.0
#: The finding's failures must leave the recent evidence (its 20 s tail), or the window.
CLEAR_S = 90.0
#: prober_finding follows /api/v1/findings within a refresh of the collector's loop.
METRIC_S = 15.0


def findings(plan: Plan) -> set[tuple[str, tuple[str, ...]]]:
    body = json.loads(runtime.collector_get(plan, "/api/v1/findings", timeout_s=30.0))
    return {(f["kind"], tuple(f["nodes"])) for f in body["findings"]}


def finding_series(plan: Plan) -> set[tuple[str, str]]:
    text = runtime.collector_get(plan, "/metrics").decode()
    return {
        (s.labels["kind"], s.labels["node"])
        for family in text_string_to_metric_families(text)
        if family.name == "prober_finding"
        for s in family.samples
        if s.value == 1
    }


def wait_until(what: str, check: Callable[[], bool], limit_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if check():
            return time.monotonic() - start
        time.sleep(1.0)
    pytest.fail(f"{what}: not within {limit_s:g} s")


@pytest.mark.parametrize(
    ("lab", "fault", "kind"),
    [
        ("bridge_lab", "bridge-netfilter@node-b", "bridge-netfilter"),
        # External targets: their echo answers with a name that is no node of the cluster.
        ("vpc_lab", "snat-asymmetric@node-b", "snat-asymmetric"),
    ],
)
def test_the_collector_names_a_fault_while_it_is_on_and_clears_it(
    lab: str, fault: str, kind: str, request: pytest.FixtureRequest
) -> None:
    plan: Plan = request.getfixturevalue(lab)
    wanted = (kind, ("node-b",))
    runtime.set_faults(plan.prefix, [parse_fault(fault)])
    try:
        wait_until(f"{kind} on node-b in /api/v1/findings", lambda: wanted in findings(plan), DETECT_S)
        wait_until(
            f'prober_finding{{kind="{kind}", node="node-b"}} 1',
            lambda: (kind, "node-b") in finding_series(plan),
            15.0,
        )
    finally:
        runtime.set_faults(plan.prefix, [])
    wait_until(
        f"{kind} gone from /api/v1/findings", lambda: all(k != kind for k, _ in findings(plan)), CLEAR_S
    )
    wait_until(
        "its prober_finding series removed", lambda: (kind, "node-b") not in finding_series(plan), 15.0
    )


def test_the_collector_names_a_cut_off_pod_network_and_nothing_else(bridge_lab: Plan) -> None:
    """pod-network-isolated@node-b: one finding naming node-b (not a row of blocked pairs, not
    unexplained); once it is named, nothing else is, and switching the fault off clears it."""
    wanted = ("pod-network-isolated", ("node-b",))
    seen: list[set[tuple[str, tuple[str, ...]]]] = []

    def named() -> bool:
        seen.append(findings(bridge_lab))
        return wanted in seen[-1]

    runtime.set_faults(bridge_lab.prefix, [parse_fault("pod-network-isolated@node-b")])
    try:
        wait_until("pod-network-isolated on node-b in /api/v1/findings", named, DETECT_S)
        # The collector refreshes every 5 s: two more readings, each exactly the one finding.
        for _ in range(2):
            time.sleep(5.0)
            assert findings(bridge_lab) == {wanted}
        assert seen[-1] == {wanted}
        assert ("pod-network-isolated", "node-b") in finding_series(bridge_lab)
    finally:
        runtime.set_faults(bridge_lab.prefix, [])
    wait_until("no findings after the fault went off", lambda: findings(bridge_lab) == set(), CLEAR_S)


def test_the_collector_names_a_zone_partition_once_and_nothing_else(zones_lab: Plan) -> None:
    """zone-partition@zone-a,zone-b in a lab of three zones of two nodes: one finding naming the two
    zones, not eight blocked pairs and loss on every node; switching it off clears it."""

    def zone_findings() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        body = json.loads(runtime.collector_get(zones_lab, "/api/v1/findings", timeout_s=30.0))
        return sorted((f["kind"], tuple(f["zones"]), tuple(f["nodes"])) for f in body["findings"])

    wanted = [("zone-partition", ("zone-a", "zone-b"), ())]
    time.sleep(3.0)  # every agent past its first round
    assert zone_findings() == []
    runtime.set_faults(zones_lab.prefix, [parse_fault("zone-partition@zone-a,zone-b")])
    try:
        wait_until("zone-partition in /api/v1/findings", lambda: zone_findings() == wanted, DETECT_S)
        # The knob: zone-a's node-a reaches its zone-mate node-d and zone-c's node-c, not zone-b's node-b.
        a, b, c, d = (zones_lab.node(f"node-{x}") for x in "abcd")
        tallies = [asyncio.run(http_tally(a.agent.ns, n.echo.ip, ECHO_HTTP_PORT, 6)) for n in (b, d, c)]
        assert [t.ok for t in tallies] == [0, 6, 6]
        assert zone_findings() == wanted  # a refresh later, still the one finding
        # prober_finding is set by the refresh loop's passes, a reader's pass may come
        # first: the metric follows within a refresh (5 s).
        wait_until(
            "zone-partition in prober_finding",
            lambda: ("zone-partition", "") in finding_series(zones_lab),
            METRIC_S,
        )
    finally:
        runtime.set_faults(zones_lab.prefix, [])
    wait_until("no findings after the partition healed", lambda: zone_findings() == [], CLEAR_S)


def test_the_collector_names_a_degraded_zone_once_and_nothing_else(two_zones_lab: Plan) -> None:
    """zone-degraded@zone-a:10% in a lab of two zones of three nodes (the fabric drops a tenth
    of the packets on each of zone-a's interfaces): one finding naming zone-a, not packet-loss
    on its three nodes; switching it off clears it."""
    lab = two_zones_lab

    def zone_findings() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        body = json.loads(runtime.collector_get(lab, "/api/v1/findings", timeout_s=30.0))
        return sorted((f["kind"], tuple(f["zones"]), tuple(f["nodes"])) for f in body["findings"])

    wanted = [("zone-degraded", ("zone-a",), ())]
    time.sleep(3.0)  # every agent past its first round
    assert zone_findings() == []
    runtime.set_faults(lab.prefix, [parse_fault("zone-degraded@zone-a:10%")])
    try:
        took = wait_until("zone-degraded in /api/v1/findings", lambda: zone_findings() == wanted, DETECT_S)
        print(f"zone-degraded named {took:.0f} s after the fault went on")
        # The knob: zone-b's node-b loses probes to zone-a's node-a, none to its zone-mate node-d.
        a, b, d = (lab.node(f"node-{x}") for x in "abd")
        to_a, to_d = (asyncio.run(http_tally(b.agent.ns, n.echo.ip, ECHO_HTTP_PORT, 40)) for n in (a, d))
        assert to_d.ok == 40
        assert to_a.ok < 40
        assert zone_findings() == wanted  # a refresh later, still the one finding
    finally:
        runtime.set_faults(lab.prefix, [])
    wait_until("no findings after the zone recovered", lambda: zone_findings() == [], CLEAR_S)


ROOT = Path(__file__).resolve().parents[2]


def probe_outcome(ns: str, proto: str, ip: str) -> str:
    """One probe of prober's own (``tests.lab.agent_probe_main``) from ``ns``: its outcome."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.lab.agent_probe_main",
         proto, ip, str(ECHO_HTTP_PORT), "2"],
        capture_output=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=30,
    )  # fmt: skip
    return decode_record(out.stdout.strip()).outcome.value


def test_the_collector_names_an_mtu_black_hole_and_nothing_else(bridge_lab: Plan) -> None:
    """mtu-blackhole@node-b: node-b's link drops to a 1500 MTU under the lab's jumbo frames and the
    router drops ICMP fragmentation-needed. Small probes pass, large answers stall both ways; one
    finding naming node-b, nothing else; switching it off restores the transfers and clears it."""
    a, b = bridge_lab.node("node-a"), bridge_lab.node("node-b")

    def knob() -> list[str]:
        return [
            probe_outcome(src.agent.ns, proto, dst.echo.ip)
            for src, dst in ((a, b), (b, a))
            for proto in ("http", "http-large")
        ]

    wanted = ("mtu-blackhole", ("node-b",))
    runtime.set_faults(bridge_lab.prefix, [parse_fault("mtu-blackhole@node-b")])
    try:
        assert knob() == ["ok", "stalled", "ok", "stalled"]
        wait_until(
            "mtu-blackhole on node-b in /api/v1/findings", lambda: wanted in findings(bridge_lab), DETECT_S
        )
        for _ in range(2):  # two more refreshes, each exactly the one finding
            time.sleep(5.0)
            assert findings(bridge_lab) == {wanted}
        assert ("mtu-blackhole", "node-b") in finding_series(bridge_lab)
    finally:
        runtime.set_faults(bridge_lab.prefix, [])
    assert knob() == ["ok", "ok", "ok", "ok"]
    wait_until("no findings after the fault went off", lambda: findings(bridge_lab) == set(), CLEAR_S)
