"""The collector's passes read the results it has: a result arrives when its probe ended
and the agent's reporter delivered it (every 2 s), so a timed-out probe's failure comes
a timeout (5 s) after its stamp while a success comes at once. A fault's newest
failures are not in yet when a pass reads its recent sub-window (20 s).

bridge-netfilter rests on the pod agent's probes of its node's ``service-local``
Service, ``local_service_min`` a round (three by default), against the host agent's
probes of the same Service, which the fault leaves working. The passes every 5 s over a
node whose pods lose their local backend, each reading what had arrived by then
(:class:`prober.report.Replay` with ``arrival``), at 100 nodes (the budget is the
agent's own there, and the local Service's probes are what they are at any size).
"""

from __future__ import annotations

from prober.report import PassSchedule, Replay
from prober.schedule import SchedulePolicy
from tests.synth import START_TS, Cluster, Fault, completed_at, named, simulate

#: The agent's reporter delivers every 2 s (the production default): at worst this late.
FLUSH_S = 2.0
ONSET_S = 80.0
#: The passes from the onset: every 5 s, the collector's refresh.
PASSES = (2.5, 7.5, 12.5, 17.5, 22.5, 27.5)


def shown() -> dict[float, set[tuple[str, frozenset[str]]]]:
    """What each pass shows (confirmed), by seconds after the onset."""
    c = Cluster(n_nodes=100)
    node = c.nodes[40]
    fault = Fault(kind="bridge-netfilter", nodes=(node,), start_s=ONSET_S)
    gen = simulate(c, duration_s=ONSET_S + PASSES[-1], faults=[fault], seed=2)
    replay = Replay(
        gen.records,
        schedule=PassSchedule(),
        nodes=gen.nodes,
        topology=gen.topology,
        stops=gen.stops,
        arrival=lambda r: completed_at(r, timeout_s=c.timeout_s) + FLUSH_S,
    )
    for t in (-10.0, -5.0):  # the history before the onset: nothing to show
        assert replay.at(START_TS + ONSET_S + t) == []
    return {t: named(replay.at(START_TS + ONSET_S + t)) for t in PASSES}


NODE = Cluster(n_nodes=100).nodes[40]
BRIDGE = ("bridge-netfilter", frozenset({NODE}))


def test_bridge_netfilter_is_named_within_two_rounds_from_the_results_that_arrived() -> None:
    """The recent sub-window holds ~4 of the fault's arrived failures at three a round;
    with the host's healthy probes of the same Service, the other side of the
    comparison, they are past the rule's six samples from the pass 12.5 s after the
    onset on. Nothing is shown before it, nothing else."""
    assert SchedulePolicy().local_service_min == 3
    named_by = shown()
    assert {t: s for t, s in named_by.items() if s} == {t: {BRIDGE} for t in (12.5, 17.5, 22.5, 27.5)}
