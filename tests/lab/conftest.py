"""Shared labs for the namespace tests: one bridge-CNI and one VPC-CNI lab per session.

Both run the real collector and agents (a light background load: 6 agents at 1 s
rounds cost under a fifth of a core). Faults are toggled on the shared labs
(``with faults(lab, ...)``), which is also how "switching it off restores it" is
tested. The session ends by taking every lab down and asserting that no namespace
and no process of the lab is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

import pytest

from prober.inventory import TrafficPolicy
from prober_lab import netns, runtime, traffic
from prober_lab.faults import parse_fault
from prober_lab.plan import Cni, LabSpec, Plan

#: Several checkouts can run their lab tests at once on one machine when each sets its
#: own base (1-5 letters or digits): every lab name starts with it.
_BASE = os.environ.get("PROBER_LAB_TEST_PREFIX", "plabt")
BRIDGE_PREFIX = f"{_BASE}b"
VPC_PREFIX = f"{_BASE}v"
CLI_PREFIX = f"{_BASE}c"
CLI2_PREFIX = f"{_BASE}d"
ZONES_PREFIX = f"{_BASE}z"
CLUSTER_PREFIX = f"{_BASE}k"
TWO_ZONES_PREFIX = f"{_BASE}g"
PREFIXES = (
    BRIDGE_PREFIX,
    VPC_PREFIX,
    CLI_PREFIX,
    CLI2_PREFIX,
    ZONES_PREFIX,
    CLUSTER_PREFIX,
    TWO_ZONES_PREFIX,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "lab tests need root (network namespaces, iptables); run as root or in CI"
    else:
        try:
            netns.check_can_run()
        except netns.LabError as exc:
            reason = str(exc)
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.skip(reason=reason))


def lab_processes(prefix: str) -> list[int]:
    """Processes started for a lab with this prefix (the fabric, agents, collector)."""
    return runtime.lab_pids(prefix)


@pytest.fixture(scope="session")
def no_leftovers() -> Iterator[None]:
    """Every lab is down at the end of the session, with nothing left behind."""
    yield
    for prefix in PREFIXES:
        runtime.down(prefix)
        assert netns.namespaces_with_prefix(prefix) == [], f"namespaces of {prefix} left behind"
        assert lab_processes(prefix) == [], f"processes of {prefix} left behind"
        assert not runtime.state_dir(prefix).exists()


def _lab(
    prefix: str, cni: Cni, *, nodes: int = 3, zones: int | None = None, policy: TrafficPolicy = "Local"
) -> Iterator[Plan]:
    runtime.down(prefix)  # a previous run killed hard may have left one
    spec = LabSpec(nodes=nodes, cni=cni, prefix=prefix, zones=zones, external_traffic_policy=policy)
    state = runtime.up(spec, [], runtime.UpOptions(agents=True))
    try:
        yield state.plan
    finally:
        runtime.down(prefix)


@pytest.fixture(scope="session")
def bridge_lab(no_leftovers: None) -> Iterator[Plan]:
    yield from _lab(BRIDGE_PREFIX, Cni.BRIDGE)


@pytest.fixture(scope="session")
def vpc_lab(no_leftovers: None) -> Iterator[Plan]:
    yield from _lab(VPC_PREFIX, Cni.VPC)


#: A lab used by one test (or one fixture) only: it is down as soon as that is done. Two
#: cores run the two shared labs' probing beside one more lab of 3-6 nodes; a third lab
#: left up beside them starves every probe of CPU (timeouts that are no fault's).
@contextlib.contextmanager
def cluster_lab() -> Iterator[Plan]:
    """A bridge lab whose echo NodePort (and so the NLB) is externalTrafficPolicy: Cluster."""
    yield from _lab(CLUSTER_PREFIX, Cni.BRIDGE, policy="Cluster")


@pytest.fixture
def zones_lab(no_leftovers: None) -> Iterator[Plan]:
    """Six nodes in three zones of two: what a zone partition needs (12 agents, for one test)."""
    yield from _lab(ZONES_PREFIX, Cni.BRIDGE, nodes=6, zones=3)


@pytest.fixture
def two_zones_lab(no_leftovers: None) -> Iterator[Plan]:
    """Six nodes in two zones of three: what a degraded zone needs (12 agents, for one test)."""
    yield from _lab(TWO_ZONES_PREFIX, Cni.BRIDGE, nodes=6, zones=2)


@contextlib.contextmanager
def faults(plan: Plan, *specs: str) -> Iterator[None]:
    runtime.set_faults(plan.prefix, [parse_fault(s) for s in specs])
    try:
        yield
    finally:
        runtime.set_faults(plan.prefix, [])


@dataclass(slots=True)
class Tally:
    sent: int = 0
    ok: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    client_ips: Counter[str] = field(default_factory=Counter)
    src_ports: set[int] = field(default_factory=set)

    @property
    def ratio(self) -> float:
        return self.ok / self.sent if self.sent else float("nan")

    def add(self, p: traffic.Probe) -> None:
        self.sent += 1
        self.outcomes[p.outcome.value] += 1
        if p.src_port is not None:
            self.src_ports.add(p.src_port)
        if p.ok:
            self.ok += 1
            self.served_by[p.node or "?"] += 1
            self.client_ips[p.client_ip or "?"] += 1


async def http_tally(
    ns: str, ip: str, port: int, count: int, *, concurrency: int = 32, avoid_ports: Collection[int] = ()
) -> Tally:
    """``count`` HTTP probes; with ``avoid_ports``, each from a fresh source port not among them.

    A port used while a fault dropped replies may meet the far end's half-open state
    (SYN_RECV) from then: a probe after the fault is switched off must not reuse one.
    """
    sem = asyncio.Semaphore(concurrency)
    tally = Tally()
    fresh = (
        iter(random.Random(11).sample([p for p in range(40000, 60000) if p not in avoid_ports], count))
        if avoid_ports
        else None
    )

    async def one(bind_port: int | None) -> None:
        async with sem:
            bind = None if bind_port is None else ("0.0.0.0", bind_port)
            tally.add(await traffic.http_probe(ns, ip, port, bind=bind))

    async with asyncio.TaskGroup() as tg:
        for _ in range(count):
            tg.create_task(one(None if fresh is None else next(fresh)))
    return tally


def iptables_counter(ns: str, table: str, chain: str, comment: str) -> int:
    """Packets counted by the rule with ``comment`` in ``table``/``chain`` of ``ns``."""
    out = netns.exec_in(ns, ["iptables", "-w", "-t", table, "-L", chain, "-v", "-n", "-x"]).stdout
    for line in out.splitlines():
        if f"/* {comment} */" in line:
            return int(line.split()[0])
    raise AssertionError(f"no rule {comment!r} in {ns} {table}/{chain}:\n{out}")


@contextlib.contextmanager
def counting_rule(ns: str, table: str, chain: str, match: str, comment: str) -> Iterator[None]:
    """A targetless iptables rule (counts, changes nothing) for the duration of the block."""
    rule = [*match.split(), "-m", "comment", "--comment", comment]
    netns.exec_in(ns, ["iptables", "-w", "-t", table, "-I", chain, *rule])
    try:
        yield
    finally:
        netns.exec_in(ns, ["iptables", "-w", "-t", table, "-D", chain, *rule], check=False)
