"""Agents that stopped on purpose: tracked from successive inventories, their probes left out."""

from __future__ import annotations

import math

import pytest

from prober.inventory import Agent, Inventory, Node
from prober.lifecycle import AgentStop, routine, track, without_routine
from prober.model import Outcome, ProbeResult, Proto, SrcKind

NODES = [Node(name="a", address="10.0.0.1"), Node(name="b", address="10.0.0.2")]
POD_B = Agent(name="agent-pod-b", node="b", kind=SrcKind.POD, address="100.64.0.2")
HOST_B = Agent(name="agent-host-b", node="b", kind=SrcKind.HOST, address="10.0.0.2")
NEW_HOST_B = Agent(name="agent-host-b-2", node="b", kind=SrcKind.HOST, address="10.0.0.2")
KEEP = 600.0


def inv(*agents: Agent) -> Inventory:
    return Inventory(nodes=NODES, agents=list(agents))


def stopping(a: Agent) -> Agent:
    return Agent(name=a.name, node=a.node, kind=a.kind, address=a.address, ready=False, stopping=True)


def not_ready(a: Agent) -> Agent:
    return Agent(name=a.name, node=a.node, kind=a.kind, address=a.address, ready=False)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            inv(POD_B), inv(stopping(POD_B)), [("100.64.0.2", SrcKind.POD)], id="marked-for-deletion"
        ),
        pytest.param(inv(POD_B, HOST_B), inv(HOST_B), [("100.64.0.2", SrcKind.POD)], id="left-the-inventory"),
        pytest.param(None, inv(stopping(HOST_B)), [("10.0.0.2", SrcKind.HOST)], id="first-seen-stopping"),
        # Not Ready is no stop: a dead node's agents turn not Ready and stay evidence.
        pytest.param(inv(POD_B), inv(not_ready(POD_B)), [], id="not-ready-is-no-stop"),
        pytest.param(inv(POD_B), inv(POD_B), [], id="unchanged"),
        # The successor at the same address is already Ready: nothing to leave out.
        pytest.param(inv(HOST_B), inv(NEW_HOST_B), [], id="replaced-at-once"),
    ],
)
def test_stops_from_inventory_changes(
    old: Inventory | None, new: Inventory, expected: list[tuple[str, SrcKind]]
) -> None:
    stops = track((), old, new, now=100.0, keep_s=KEEP)
    assert [(s.address, s.kind, s.at, s.until) for s in stops] == [
        (a, k, 100.0, math.inf) for a, k in expected
    ]


def test_a_stop_ends_when_a_ready_agent_answers_at_the_address_and_is_forgotten_later() -> None:
    stops = track((), inv(HOST_B), inv(stopping(HOST_B)), now=100.0, keep_s=KEEP)
    stops = track(stops, inv(stopping(HOST_B)), inv(), now=101.0, keep_s=KEEP)
    assert stops == (AgentStop(address="10.0.0.2", kind=SrcKind.HOST, at=100.0),)  # not twice
    stops = track(stops, inv(), inv(not_ready(NEW_HOST_B)), now=120.0, keep_s=KEEP)
    assert stops == (AgentStop(address="10.0.0.2", kind=SrcKind.HOST, at=100.0),)  # warming up
    stops = track(stops, inv(not_ready(NEW_HOST_B)), inv(NEW_HOST_B), now=150.0, keep_s=KEEP)
    assert stops == (AgentStop(address="10.0.0.2", kind=SrcKind.HOST, at=100.0, until=150.0),)
    assert track(stops, inv(NEW_HOST_B), inv(NEW_HOST_B), now=150.0 + KEEP + 1, keep_s=KEEP) == ()


def probe(path: str, target_ip: str, ts: float) -> ProbeResult:
    src_kind = SrcKind(path.split("-to-", maxsplit=1)[0])
    return ProbeResult(
        ts=ts, path=path, src_node="a", src_kind=src_kind, target=f"{path.split('-to-')[1]}/b",
        outcome=Outcome.TIMEOUT, proto=Proto.TCP, target_ip=target_ip,
    )  # fmt: skip


STOP = AgentStop(address="10.0.0.2", kind=SrcKind.HOST, at=100.0, until=150.0)


@pytest.mark.parametrize(
    ("record", "is_routine"),
    [
        pytest.param(probe("host-to-host", "10.0.0.2", 120.0), True, id="its-port-while-stopped"),
        pytest.param(probe("pod-to-host", "10.0.0.2", 100.0), True, id="from-the-stop-on"),
        pytest.param(probe("host-to-host", "10.0.0.2", 99.9), False, id="before-the-stop"),
        pytest.param(probe("host-to-host", "10.0.0.2", 150.0), False, id="after-the-successor"),
        # The node's NodePort is at the same address but served by the echo pods.
        pytest.param(probe("host-to-nodeport", "10.0.0.2", 120.0), False, id="nodeport-same-address"),
        pytest.param(probe("pod-to-pod", "10.0.0.2", 120.0), False, id="other-network"),
        pytest.param(probe("host-to-host", "10.0.0.3", 120.0), False, id="other-address"),
    ],
)
def test_which_probes_are_routine(record: ProbeResult, is_routine: bool) -> None:
    assert routine([record], [STOP]) == [is_routine]


def test_without_routine_counts_what_it_left_out() -> None:
    records = [probe("host-to-host", "10.0.0.2", t) for t in (90.0, 110.0, 120.0, 160.0)]
    kept, dropped = without_routine(records, [STOP])
    assert ([r.ts for r in kept], dropped) == ([90.0, 160.0], 2)
    assert without_routine(records, []) == (records, 0)
