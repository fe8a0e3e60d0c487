"""The NLB hairpin in a large cluster: counted over all clients, under both traffic policies.

At 1,000 nodes the NLB picks a client's own node 1 time in 1,000: the hairpin's
failure rate (0.1%) is under the background rate diagnosis allows (0.2%), so no count
of failures can tell it apart, and each client has only a handful of NLB successes (a
shared target gets --shared-budget probes a second from all agents together). What
does stand out is the count over all clients of successes through the client's own
node: about one per thousand successes when healthy, none with a hairpin. Records are
made here, NLB probes only (21,000: 7 per client per zone address, about what the long
window holds at this size), since generating the whole schedule for that long takes
minutes.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from prober.diagnose import diagnose
from prober.inventory import Inventory, Nlb, Node, ZoneAddress
from prober.model import Outcome, ProbeResult, SrcKind
from prober.report import evidence_from_records
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
    rng = random.Random(seed)
    out = []
    ts = _START_TS
    for src in NODES:
        for address in NLB:
            for _ in range(per_address):
                ts += 0.01
                entry = rng.choice(NODES)  # cross-zone load balancing: any node
                served = rng.choice(NODES) if policy == "Cluster" else entry
                failed = (hairpin and entry == src) or rng.random() < NOISE
                out.append(
                    ProbeResult(
                        ts=ts,
                        path="pod-to-nlb",
                        src_node=src,
                        src_kind=SrcKind.POD,
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
                )
    return out


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
