"""Kubernetes lifecycle events are not faults: a rollout, a drain or a new node gives no finding.

Diagnosed as the collector does it: its default window (6 rounds) and one five times
longer, each with the last two rounds as recent evidence, at every other round end.
The records follow the real pipeline (``tests/synth.py``): the collector sees a pod
terminate or a node join, publishes new pinglists after its settle time and warm-up,
and each agent picks them up at its next fetch, so for up to two rounds peers still
probe an agent that is gone.
"""

from __future__ import annotations

from prober.diagnose import diagnose_windows
from prober.model import Finding, SrcKind
from prober.report import evidence_from_records
from tests.synth import AddNode, Cluster, DrainNode, Event, Generated, RollingRestart, simulate

C10 = Cluster(n_nodes=10)
SHORT, LONG = 6, 30  # rounds: the collector's default window and the five times longer one


def findings_over_the_span(gen: Generated, cluster: Cluster) -> dict[int, list[Finding]]:
    """The collector's findings at the end of every other round from the short window's length on."""
    out: dict[int, list[Finding]] = {}
    rounds = round((gen.end_ts - gen.start_ts) / cluster.interval_s)
    for end_round in range(SHORT + 1, rounds + 1, 2):
        end = gen.start_ts + end_round * cluster.interval_s
        windows = [
            evidence_from_records(
                [r for r in gen.records if end - n * cluster.interval_s < r.ts <= end],
                topology=gen.topology,
                nodes=gen.nodes,
                recent_s=2 * cluster.interval_s,
                stops=gen.stops,
            )
            for n in (SHORT, LONG)
        ]
        found = diagnose_windows(windows)
        if found:
            out[end_round] = found
    return out


def span(events: list[Event], *, seed: int) -> dict[int, list[Finding]]:
    """Findings over 200 s with the events from 60 s on."""
    return findings_over_the_span(simulate(C10, rounds=20, events=events, seed=seed), C10)


def test_a_rolling_restart_of_the_pod_agents_is_no_finding() -> None:
    assert span([RollingRestart(kind=SrcKind.POD, start_s=60.0)], seed=5) == {}


def test_a_rolling_restart_of_the_host_agents_is_no_finding() -> None:
    assert span([RollingRestart(kind=SrcKind.HOST, start_s=60.0)], seed=5) == {}


def test_a_drained_node_is_no_finding() -> None:
    assert span([DrainNode(node=C10.nodes[3], at_s=60.0)], seed=5) == {}


def test_added_nodes_are_no_finding() -> None:
    assert span([AddNode(at_s=60.0, count=2)], seed=5) == {}
