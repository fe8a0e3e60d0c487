"""The NLB hairpin in a large cluster: counted over all clients, under both traffic policies.

At 1,000 nodes the NLB picks a client's own node 1 time in 1,000: the hairpin's
failure rate (0.1%) is under the background rate diagnosis allows (0.2%), so no count
of failures can tell it apart, and each client has only a handful of NLB successes (an
NLB address gets --nlb-budget-per-node probes a second per node behind it from all
agents together). What does stand out is the count over all clients of successes
through the client's own node: about one per thousand successes when healthy, none
with a hairpin. Records are made here, NLB probes only (21,000: 7 per client per zone
address, what 14 rounds hold at this size, where an agent probes the NLB every other
round), since generating the whole schedule for that long takes minutes.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from prober.diagnose import diagnose, diagnose_window
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.recency import resolved, stream_stats
from prober.inventory import Inventory, Nlb, Node, ZoneAddress
from prober.model import Outcome, ProbeResult, SrcKind
from prober.report import PassSchedule, Replay, evidence_from_records
from prober.stats import Topology

N = 1000
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
NODES = [f"node-{i:04d}" for i in range(N)]
ADDRESS = {x: f"10.0.{i // 250}.{i % 250 + 1}" for i, x in enumerate(NODES)}
NLB = [f"10.1.{z}.200" for z in range(len(ZONES))]
PER_ADDRESS = 7
NOISE = 0.0005


def _topology(policy: str) -> Topology:
    inv = Inventory(
        nodes=[Node(name=x, address=ADDRESS[x], zone=ZONES[i % 3]) for i, x in enumerate(NODES)],
        nlbs=[
            Nlb(
                name="echo",
                external_traffic_policy="Cluster" if policy == "Cluster" else "Local",
                addresses=[ZoneAddress(zone=z, address=a) for z, a in zip(ZONES, NLB, strict=True)],
            )
        ],
    )
    return Topology.of(inv)


_START_TS = 1_700_000_000.0


def _records(*, policy: str, hairpin: bool, seed: int, per_address: int = PER_ADDRESS) -> list[ProbeResult]:
    """Each client's pod probes of each address, ``per_address`` in a row, 10 ms apart."""
    rng = random.Random(seed)
    order = [(src, SrcKind.POD, address) for src in NODES for address in NLB for _ in range(per_address)]
    return [
        _probe(rng, _START_TS + 0.01 * (k + 1), src, kind, address, policy=policy, hairpin=hairpin)
        for k, (src, kind, address) in enumerate(order)
    ]


def _sweeps(*, policy: str, hairpin: bool, seed: int, sweeps: int, start_ts: float) -> list[ProbeResult]:
    """As the schedule sends them at 1,000 nodes: every client's pod and host agent probe
    each address once a sweep, 600 probes a round (20/s an address), so a sweep is 100 s;
    with the synthetic cluster's background loss (0.2%, ``tests/synth.py``)."""
    rng = random.Random(seed)
    order = [(src, kind, address) for src in NODES for kind in (SrcKind.POD, SrcKind.HOST) for address in NLB]
    return [
        _probe(rng, start_ts + k / 60.0, src, kind, address, policy=policy, hairpin=hairpin, noise=0.002)
        for k, (src, kind, address) in enumerate(order * sweeps)
    ]


def _probe(
    rng: random.Random,
    ts: float,
    src: str,
    kind: SrcKind,
    address: str,
    *,
    policy: str,
    hairpin: bool,
    noise: float = NOISE,
) -> ProbeResult:
    entry = rng.choice(NODES)  # cross-zone load balancing: any node
    served = rng.choice(NODES) if policy == "Cluster" else entry
    failed = (hairpin and entry == src) or rng.random() < noise
    return ProbeResult(
        ts=ts,
        path=f"{kind.value}-to-nlb",
        src_node=src,
        src_kind=kind,
        target="nlb/echo",
        target_ip=address,
        target_port=80,
        proto="http",  # type: ignore[arg-type]
        outcome=Outcome.TIMEOUT if failed else Outcome.OK,
        dst_node=None if failed else served,
        dst_kind=None if failed else SrcKind.POD,
        latency_s=None if failed else 0.002,
        # Cluster: masqueraded to the node the NLB picked; Local: the NLB's own address.
        seen_src_ip=None if failed else (ADDRESS[entry] if policy == "Cluster" else address),
        src_port=rng.randrange(32768, 60999),
    )


def _landed(r: ProbeResult, policy: str) -> str | None:
    """The node the NLB picked for a success: the serving node (Local), or the node whose
    address the echo saw (Cluster)."""
    if policy == "Local":
        return r.dst_node
    return next((x for x, a in ADDRESS.items() if a == r.seen_src_ip), None)


@pytest.mark.parametrize("policy", ["Local", "Cluster"])
@pytest.mark.parametrize("hairpin", [True, False], ids=["hairpin", "healthy"])
def test_the_hairpin_at_1000_nodes_is_named_from_all_clients_together(policy: str, hairpin: bool) -> None:
    records = _records(policy=policy, hairpin=hairpin, seed=7)
    failed = sum(r.outcome is not Outcome.OK for r in records)
    assert failed / len(records) < 0.002  # under the background rate a failure count allows
    ev = evidence_from_records(records, nodes=NODES, topology=_topology(policy))
    found = diagnose(ev)
    if not hairpin:
        assert found == []
        return
    [finding] = found
    assert finding.kind == "nlb-hairpin"
    # Every client with a success is named (one with none at all shows nothing either way).
    with_success = {r.src_node for r in records if r.outcome is Outcome.OK}
    assert set(finding.nodes) == with_success
    assert len(with_success) >= 0.99 * N


@pytest.mark.parametrize("policy", ["Local", "Cluster"])
def test_a_hairpin_that_began_inside_the_window_at_1000_nodes_is_named_from_the_successes_since(
    policy: str,
) -> None:
    """A probe a client and address of a healthy NLB (3,000: about three successes through
    their client's own node), then three of a hairpinned one. Over the whole window the
    successes through the client's own node are too many for a hairpin, and would stay
    so until they leave it (300 s); since the last of them there are ~9,000 successes and
    none, which names it (the test pays for choosing the cut among them)."""
    healthy = _records(policy=policy, hairpin=False, seed=11, per_address=1)
    onset = healthy[-1].ts + 1.0
    hairpinned = [
        msgspec.structs.replace(r, ts=r.ts - _START_TS + onset)
        for r in _records(policy=policy, hairpin=True, seed=12, per_address=3)
    ]
    landed_self = [r for r in healthy if r.outcome is Outcome.OK and _landed(r, policy) == r.src_node]
    assert landed_self  # the window's count is not a hairpin's
    records = healthy + hairpinned
    [finding] = diagnose(evidence_from_records(records, nodes=NODES, topology=_topology(policy)))
    assert finding.kind == "nlb-hairpin"
    assert set(finding.nodes) == {r.src_node for r in hairpinned if r.outcome is Outcome.OK}
    assert "since the last success" in finding.evidence


@pytest.mark.parametrize("policy", ["Local", "Cluster"])
def test_a_hairpin_once_shown_stays_shown_while_its_clients_mostly_succeed(policy: str) -> None:
    """The collector's passes (``Replay``) over a sweep of a healthy NLB then two of a
    hairpinned one, at the schedule's rate: the long window names the hairpin from the
    successes since the last one through a client's own node, and the 60 s window's
    probes of its clients, 999 in 1,000 of which succeed, are what a hairpin makes, not
    its end. Once shown, it is shown in every later pass."""
    healthy = _sweeps(policy=policy, hairpin=False, seed=11, sweeps=1, start_ts=_START_TS)
    onset = healthy[-1].ts + 1.0
    hairpinned = _sweeps(policy=policy, hairpin=True, seed=12, sweeps=2, start_ts=onset)
    replay = Replay(healthy + hairpinned, schedule=PassSchedule(), nodes=NODES, topology=_topology(policy))
    end = hairpinned[-1].ts
    passes = [
        [(f.kind, len(f.nodes)) for f in replay.at(now)]
        for now in [onset + 5.0 * k for k in range(int((end - onset) // 5) + 2)]
    ]
    shown = [p != [] for p in passes]
    assert any(shown)
    first = shown.index(True)
    # From its first pass on, every pass shows the hairpin at every client, and nothing else.
    assert all(p == [("nlb-hairpin", N)] for p in passes[first:]), passes


@pytest.mark.parametrize("policy", ["Local", "Cluster"])
def test_a_hairpins_clients_succeeding_later_do_not_read_as_its_end(policy: str) -> None:
    """A hairpin explains 1 in N of its clients' NLB probes. Its footprint is every stream
    of its clients with that share, so the next sweep's probes of them, 999 in 1,000 of
    which succeed, do not contradict it (``recency.resolved``), as they would the few
    streams whose one failed probe was most of their probes in the window (the long
    window's merge with the 60 s window dropped it so, pass after pass)."""
    healthy = _sweeps(policy=policy, hairpin=False, seed=11, sweeps=1, start_ts=_START_TS)
    hairpinned = _sweeps(policy=policy, hairpin=True, seed=12, sweeps=2, start_ts=healthy[-1].ts + 1.0)
    ev = evidence_from_records(healthy + hairpinned, nodes=NODES, topology=_topology(policy))
    [(finding, footprint)] = diagnose_window(ev)
    assert (finding.kind, sorted(finding.nodes)) == ("nlb-hairpin", NODES)
    assert len(footprint.streams) >= 2 * len(NLB) * len(finding.nodes)  # pod and host, each address
    assert footprint.rate < 0.01
    later = _sweeps(policy=policy, hairpin=True, seed=13, sweeps=1, start_ts=hairpinned[-1].ts + 1.0)
    recent = evidence_from_records(later, nodes=NODES, topology=_topology(policy)).table
    assert not resolved(footprint, stream_stats(recent), DiagnosisPolicy())
