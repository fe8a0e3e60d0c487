"""The collector's own findings in the lab: what an SRE sees, not an offline diagnosis.

``test_lab_diagnosis`` diagnoses the raw records of a window as ``prober lab run``
does. Here the fault is switched on in a running lab and the test watches what the
collector itself publishes, continuously, as in production: ``GET /api/v1/findings``
(its 60 s window, the longer window, recent evidence) and the ``prober_finding``
series on ``/metrics``. The finding must appear while the fault is on, and go away
once it is off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prober_lab import runtime
from prober_lab.faults import parse_fault
from prober_lab.plan import Plan

pytestmark = pytest.mark.lab

#: At 1 s rounds: results arrive after their round, the collector refreshes every 5 s.
DETECT_S = 60.0
#: The finding's failures must leave the recent evidence (two 10 s buckets), or the window.
CLEAR_S = 90.0


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
