"""A clean lab: every path works, from every node, on both networks, in both CNI modes."""

from __future__ import annotations

import asyncio

import pytest

from prober_lab import traffic
from prober_lab.plan import (
    DNS_QUERY,
    DNS_SERVICE_IP,
    ECHO_HTTP_PORT,
    ECHO_SERVICE_IP,
    ECHO_UDP_PORT,
    EXTERNAL_GW,
    EXTERNAL_IP,
    EXTERNAL_PORT,
    LOCAL_SERVICE_IP,
    NLB_PORT,
    NODEPORT,
    SERVICE_PORT,
    Cni,
    Plan,
)
from tests.lab.conftest import Tally

pytestmark = pytest.mark.lab

#: Probes per path (all sources together): enough that 99.5% means something.
PER_PATH = 300
#: A clean path answers; how fast is not this test's question. 48 probes at once beside the
#: labs' own agents on two cores may wait for the CPU longer than an agent's 0.9 s timeout.
TIMEOUT_S = 3.0


async def _clean_paths(plan: Plan) -> dict[str, Tally]:
    """Every (source kind, target kind) path, probed ~PER_PATH times spread over all pairs."""
    sources = [(kind, n, ns) for n in plan.nodes for kind, ns in (("pod", n.agent.ns), ("host", n.ns))]
    targets: dict[str, list[tuple[str, int]]] = {
        "pod": [(n.echo.ip, ECHO_HTTP_PORT) for n in plan.nodes],
        "service": [(ECHO_SERVICE_IP, SERVICE_PORT)],
        "service-local": [(LOCAL_SERVICE_IP, SERVICE_PORT)],
        "nodeport": [(n.ip, NODEPORT) for n in plan.nodes],
        "nlb": [(nlb.vip, NLB_PORT) for nlb in plan.nlbs],
        "external": [(EXTERNAL_IP, EXTERNAL_PORT)],
    }
    tallies: dict[str, Tally] = {}
    sem = asyncio.Semaphore(48)

    async def probe(path: str, ns: str, ip: str, port: int) -> None:
        async with sem:
            p = await traffic.http_probe(ns, ip, port, timeout_s=TIMEOUT_S)
        tallies.setdefault(path, Tally()).add(p)

    async def dns(path: str, ns: str) -> None:
        async with sem:
            p = await traffic.dns_probe(ns, DNS_SERVICE_IP, DNS_QUERY, timeout_s=TIMEOUT_S)
        tallies.setdefault(path, Tally()).add(p)

    async with asyncio.TaskGroup() as tg:
        for kind, _, ns in sources:
            for tkind, addrs in targets.items():
                per_source = -(-PER_PATH // (len(sources) // 2))  # ceil: PER_PATH over this kind's sources
                for i in range(per_source):
                    ip, port = addrs[i % len(addrs)]
                    tg.create_task(probe(f"{kind}-to-{tkind}", ns, ip, port))
            for _ in range(-(-PER_PATH // (len(sources) // 2))):
                tg.create_task(dns(f"{kind}-to-dns", ns))
    return tallies


@pytest.mark.parametrize("cni", [Cni.BRIDGE, Cni.VPC])
async def test_clean_lab_succeeds_on_every_path(cni: Cni, bridge_lab: Plan, vpc_lab: Plan) -> None:
    plan = bridge_lab if cni is Cni.BRIDGE else vpc_lab
    tallies = await _clean_paths(plan)
    assert len(tallies) == 14  # {pod,host} x {pod,service,service-local,nodeport,nlb,external,dns}
    for path, t in sorted(tallies.items()):
        assert t.sent >= PER_PATH, path
        assert t.ratio >= 0.995, f"{path}: {t.ok}/{t.sent} {dict(t.outcomes)}"
    # Balanced targets spread over every node; the local Service never leaves the node.
    for path in ("pod-to-service", "host-to-nodeport", "pod-to-nlb", "host-to-nlb"):
        assert set(tallies[path].served_by) == set(plan.node_names), path
    assert set(tallies["pod-to-service-local"].served_by) == set(plan.node_names)
    # The external server sees the NAT gateway, never a VPC address.
    assert set(tallies["pod-to-external"].client_ips) == {EXTERNAL_GW}


async def test_service_local_is_always_served_by_the_callers_node(bridge_lab: Plan) -> None:
    for n in bridge_lab.nodes:
        t = Tally()
        for p in await asyncio.gather(
            *(traffic.http_probe(n.agent.ns, LOCAL_SERVICE_IP, SERVICE_PORT) for _ in range(20))
        ):
            t.add(p)
        assert t.ok == 20
        assert set(t.served_by) == {n.name}


async def test_udp_echo_and_client_addresses(bridge_lab: Plan, vpc_lab: Plan) -> None:
    a, b = bridge_lab.nodes[0], bridge_lab.nodes[1]
    p = await traffic.udp_probe(a.agent.ns, b.echo.ip, ECHO_UDP_PORT)
    assert p.ok
    assert (p.node, p.client_ip) == ("node-b", a.agent.ip)  # pod to pod: no NAT on a bridge CNI
    # Through the NLB (client IP preservation off) the echo sees the NLB node's address.
    nlb = bridge_lab.nlbs[0]
    through = await traffic.http_probe(a.agent.ns, nlb.vip, NLB_PORT)
    assert through.ok
    assert through.client_ip == nlb.vip
    va, vb = vpc_lab.nodes[0], vpc_lab.nodes[1]
    direct = await traffic.http_probe(va.agent.ns, vb.echo.ip, ECHO_HTTP_PORT)
    assert (direct.node, direct.client_ip) == ("node-b", va.agent.ip)
