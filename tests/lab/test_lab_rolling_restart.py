"""A rolling restart of the agent DaemonSets is routine: the collector shows no finding throughout.

Both DaemonSets roll at once (``kubectl apply`` updates both), one node at a time: the
pod agent and the host agent of a node are marked for deletion in the inventory,
stopped (SIGTERM, with no preStop grace: the harder case), left down 20 s, started
again at the same address and listed ready once they answer. The collector's findings
are read every second from the first stop to 10 s after the last agent is back; every
read must be empty. About 75 s on the shared bridge lab (3 nodes x 20 s down, plus
the restarts).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from prober.model import SrcKind
from prober_lab import runtime
from prober_lab.inventory import agent_name
from prober_lab.plan import Plan

pytestmark = pytest.mark.lab

DOWN_S = 20.0
AFTER_S = 10.0
#: How long the lab may take to show no finding before the rollout starts.
CLEAN_S = 90.0


def _findings(plan: Plan) -> list[tuple[str, tuple[str, ...]]]:
    body = json.loads(runtime.collector_get(plan, "/api/v1/findings", timeout_s=30.0))
    return [(f["kind"], tuple(f["nodes"])) for f in body["findings"]]


def test_rolling_the_agent_daemonsets_node_by_node_shows_no_finding(bridge_lab: Plan) -> None:
    plan = bridge_lab
    runtime.set_faults(plan.prefix, [])
    # The shared lab starts clean: earlier tests' faults, and the bursts of probes some of
    # them send, leave findings that the collector clears within its recent evidence.
    deadline = time.monotonic() + CLEAN_S
    while (before := _findings(plan)) and time.monotonic() < deadline:
        time.sleep(1.0)
    assert before == [], f"the lab was not clean before the rollout ({CLEAN_S:g} s): {before}"
    done = threading.Event()
    errors: list[BaseException] = []

    def roll() -> None:
        try:
            for node in plan.node_names:
                both = [
                    threading.Thread(target=runtime.roll_agent, args=(plan.prefix, agent_name(k, node)),
                                     kwargs={"down_s": DOWN_S})
                    for k in (SrcKind.POD, SrcKind.HOST)
                ]  # fmt: skip
                for t in both:
                    t.start()
                for t in both:
                    t.join()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            done.set()

    roller = threading.Thread(target=roll)
    started = time.monotonic()
    roller.start()
    shown: list[tuple[float, list[tuple[str, tuple[str, ...]]]]] = []
    polls = 0
    end: float | None = None
    while end is None or time.monotonic() < end:
        found = _findings(plan)
        polls += 1
        if found:
            shown.append((time.monotonic() - started, found))
        if end is None and done.is_set():
            end = time.monotonic() + AFTER_S
        time.sleep(1.0)
    roller.join()
    assert not errors, errors
    took = time.monotonic() - started
    assert took >= len(plan.node_names) * DOWN_S
    assert polls >= took - 10  # read about every second
    assert shown == [], f"findings shown during the rollout ({took:.0f} s, {polls} reads): {shown}"
    state = runtime.require_state(plan.prefix)
    for node in plan.node_names:
        for k in (SrcKind.POD, SrcKind.HOST):
            pid = state.pids[agent_name(k, node)]
            assert runtime.lab_pids(plan.prefix).count(pid) == 1  # the new agent runs
