"""Each fault: its signature on exactly the expected pairs, the mechanism of its incident
(docs/incidents.md), and that switching it off restores the lab."""

from __future__ import annotations

import asyncio
import random

import pytest

from prober_lab import netns, traffic
from prober_lab.plan import (
    ECHO_HTTP_PORT,
    ECHO_SERVICE_IP,
    ENI_NODEPORT,
    EXTERNAL_IP,
    EXTERNAL_PORT,
    NLB_PORT,
    NODEPORT,
    SERVICE_PORT,
    Plan,
)
from tests.lab.conftest import counting_rule, faults, http_tally, iptables_counter

pytestmark = pytest.mark.lab

MARTIAN = "own address from the fabric (martian)"


async def test_bridge_netfilter_breaks_same_node_service_replies(bridge_lab: Plan) -> None:
    """docs/incidents.md#kops-flannel-br-netfilter: pod→ClusterIP from node-b fails exactly when
    the backend is on node-b."""
    a, b, _ = bridge_lab.nodes
    synack = f"-p tcp -s {b.echo.ip} --sport {ECHO_HTTP_PORT} --tcp-flags SYN,ACK SYN,ACK"
    with (
        faults(bridge_lab, "bridge-netfilter@node-b"),
        counting_rule(b.agent.ns, "filter", "INPUT", synack, "synack from the backend pod ip"),
    ):
        rsts_before = netns.netstat_counters(b.agent.ns)["Tcp.OutRsts"]
        svc_b = await http_tally(b.agent.ns, ECHO_SERVICE_IP, SERVICE_PORT, 150)
        direct_b = await http_tally(b.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 30)
        svc_a = await http_tally(a.agent.ns, ECHO_SERVICE_IP, SERVICE_PORT, 90)
        host_b = await http_tally(b.ns, ECHO_SERVICE_IP, SERVICE_PORT, 90)
        synacks = iptables_counter(b.agent.ns, "filter", "INPUT", "synack from the backend pod ip")
        rsts = netns.netstat_counters(b.agent.ns)["Tcp.OutRsts"] - rsts_before
        conntrack = netns.exec_in(b.ns, ["conntrack", "-L", "-d", ECHO_SERVICE_IP], check=False).stdout
    # Signature: node-b's pod fails ~1/3 of its Service probes, and never succeeds via node-b.
    assert "node-b" not in svc_b.served_by
    assert 0.15 < 1 - svc_b.ratio < 0.55, dict(svc_b.outcomes)
    assert set(svc_b.outcomes) <= {"ok", "timeout"}
    assert direct_b.ratio == 1.0  # pod→pod on node-b works: no DNAT to undo
    assert svc_a.ratio == 1.0
    assert "node-b" in svc_a.served_by
    assert host_b.ratio == 1.0  # the node itself is routed, not bridged
    # Mechanism: the SYN-ACK arrives from the pod IP (never un-DNATed), the client RSTs,
    # and conntrack keeps the DNAT unreplied.
    assert synacks > 0
    assert rsts >= synacks
    assert "UNREPLIED" in conntrack
    assert f"src={b.echo.ip}" in conntrack
    restored = await http_tally(b.agent.ns, ECHO_SERVICE_IP, SERVICE_PORT, 60)
    assert restored.ratio == 1.0
    assert "node-b" in restored.served_by


async def test_nlb_hairpin_fails_exactly_when_the_nlb_picks_the_clients_node(bridge_lab: Plan) -> None:
    """docs/incidents.md#eks-nlb-hairpin: with client-IP preservation, NLB probes fail when the
    NLB picks the client's own node; host clients die as martians (their own address comes
    back). Each zone's NLB node forwards to its own zone's nodes (cross-zone off)."""
    with faults(bridge_lab, "nlb-hairpin"):
        before = {n.name: iptables_counter(n.ns, "raw", "PLAB-OBSERVE", MARTIAN) for n in bridge_lab.nodes}
        results = {}
        for n in bridge_lab.nodes:
            for kind, ns in (("pod", n.agent.ns), ("host", n.ns)):
                for nlb in bridge_lab.nlbs:
                    results[(n.name, kind, nlb.zone)] = await http_tally(ns, nlb.vip, NLB_PORT, 60)
        martians = {
            n.name: iptables_counter(n.ns, "raw", "PLAB-OBSERVE", MARTIAN) - before[n.name]
            for n in bridge_lab.nodes
        }
    for (node, kind, zone), t in results.items():
        zone_nodes = {x.name for x in bridge_lab.zone_nodes(zone)}
        where = (node, kind, zone, dict(t.outcomes))
        assert node not in t.served_by, where  # never served by itself
        assert set(t.served_by) == zone_nodes - {node}, where  # every other node of the zone serves
        if node not in zone_nodes:
            assert t.ratio == 1.0, where
        elif zone_nodes == {node}:
            assert t.ok == 0, where
        else:
            assert 0.25 < 1 - t.ratio < 0.75, where  # 1 in len(zone_nodes)
        # preserved client address: the echo sees the node (bridge pods are masqueraded)
        assert set(t.client_ips) <= {bridge_lab.node(node).ip}, where
    assert all(count > 0 for count in martians.values()), martians
    restored = await http_tally(bridge_lab.nodes[0].ns, bridge_lab.nlbs[0].vip, NLB_PORT, 60)
    assert restored.ratio == 1.0
    assert "node-a" in restored.served_by


async def test_nlb_hairpin_on_vpc_pods_is_a_reset_of_the_nodeports_syn_ack(vpc_lab: Plan) -> None:
    """docs/incidents.md#eks-nlb-hairpin: a VPC pod gets the SYN-ACK from its own node's NodePort
    (node IP:30080) instead of from the NLB, and answers it with RST, as the incident's capture showed."""
    b = vpc_lab.node("node-a")  # zone-a's NLB node forwards to node-a or node-c
    synack = f"-p tcp -s {b.ip} --sport {NODEPORT} --tcp-flags SYN,ACK SYN,ACK"
    with (
        faults(vpc_lab, "nlb-hairpin"),
        counting_rule(b.agent.ns, "filter", "INPUT", synack, "synack short-cutting the nlb"),
    ):
        rsts_before = netns.netstat_counters(b.agent.ns)["Tcp.OutRsts"]
        t = await http_tally(b.agent.ns, vpc_lab.nlbs[0].vip, NLB_PORT, 90)
        synacks = iptables_counter(b.agent.ns, "filter", "INPUT", "synack short-cutting the nlb")
        rsts = netns.netstat_counters(b.agent.ns)["Tcp.OutRsts"] - rsts_before
    assert "node-a" not in t.served_by
    assert 0 < t.ok < t.sent
    assert set(t.client_ips) == {b.agent.ip}  # the NLB preserved the pod's own address
    assert synacks >= t.sent - t.ok
    assert rsts >= synacks


async def test_snat_asymmetric_cross_wires_pod_and_host(vpc_lab: Plan) -> None:
    """docs/incidents.md#eks-migration-cross-wired: node-b's secondary-ENI pod cannot reach the
    external server, node-b can."""
    a, b, c = vpc_lab.nodes
    with faults(vpc_lab, "snat-asymmetric@node-b"):
        rp_before = netns.netstat_counters(b.ns)["TcpExt.IPReversePathFilter"]
        pod_b = await http_tally(b.agent.ns, EXTERNAL_IP, EXTERNAL_PORT, 20)
        rp_drops = netns.netstat_counters(b.ns)["TcpExt.IPReversePathFilter"] - rp_before
        host_b = await http_tally(b.ns, EXTERNAL_IP, EXTERNAL_PORT, 40)
        primary_eni_pod_b = await http_tally(b.echo.ns, EXTERNAL_IP, EXTERNAL_PORT, 40)
        others = [await http_tally(n.agent.ns, EXTERNAL_IP, EXTERNAL_PORT, 40) for n in (a, c)]
        in_vpc = await http_tally(b.agent.ns, a.echo.ip, ECHO_HTTP_PORT, 40)
    assert pod_b.ok == 0
    assert set(pod_b.outcomes) == {"timeout"}
    assert host_b.ratio == 1.0
    assert primary_eni_pod_b.ratio == 1.0
    assert all(t.ratio == 1.0 for t in others)
    assert in_vpc.ratio == 1.0  # no SNAT inside the VPC: only the external path breaks
    assert rp_drops >= pod_b.sent  # every reply (and its retransmits) failed the reverse-path check
    restored = await http_tally(b.agent.ns, EXTERNAL_IP, EXTERNAL_PORT, 40, avoid_ports=pod_b.src_ports)
    assert restored.ratio == 1.0


async def test_snat_asymmetric_drops_nodeport_requests_for_secondary_eni_pods(vpc_lab: Plan) -> None:
    """docs/incidents.md#vpc-cni-externalsnat-rp-filter (amazon-vpc-cni-k8s #75), the NodePort
    variant: with strict rp_filter on node-b's eth0, a NodePort request DNATed to a pod on
    node-b's secondary ENI fails the reverse-path check (the pod's policy route leaves by
    eth1); NodePort to the primary-ENI pod works."""
    a, b, c = vpc_lab.nodes
    clean = [await http_tally(ns, b.ip, ENI_NODEPORT, 20) for ns in (a.ns, c.agent.ns)]
    with faults(vpc_lab, "snat-asymmetric@node-b"):
        rp_before = netns.netstat_counters(b.ns)["TcpExt.IPReversePathFilter"]
        broken = [await http_tally(ns, b.ip, ENI_NODEPORT, 20) for ns in (a.ns, c.ns, a.agent.ns, c.echo.ns)]
        rp_drops = netns.netstat_counters(b.ns)["TcpExt.IPReversePathFilter"] - rp_before
        primary_eni = await http_tally(a.ns, b.ip, NODEPORT, 20)
        other_node = await http_tally(a.ns, c.ip, ENI_NODEPORT, 20)
    for t in clean:
        assert t.ratio == 1.0
        assert set(t.served_by) == {"node-b"}
    for t in broken:
        assert t.ok == 0
        assert set(t.outcomes) == {"timeout"}
    assert rp_drops >= sum(t.sent for t in broken)  # every SYN (and retransmit) dropped on eth0
    assert primary_eni.ratio == 1.0
    assert other_node.ratio == 1.0
    restored = await http_tally(a.ns, b.ip, ENI_NODEPORT, 20)
    assert restored.ratio == 1.0


async def test_node_unreachable_is_a_column(bridge_lab: Plan) -> None:
    a, b, c = bridge_lab.nodes
    with faults(bridge_lab, "node-unreachable@node-b"):
        to_b = [await http_tally(n.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10) for n in (a, c)]
        from_b = [await http_tally(b.agent.ns, n.echo.ip, ECHO_HTTP_PORT, 10) for n in (a, c)]
        a_to_c = await http_tally(a.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
        b_local = await http_tally(b.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10)
    assert all(t.ok == 0 for t in to_b)
    assert all(t.ratio == 1.0 for t in from_b)  # stateful: replies to node-b's own flows pass
    assert a_to_c.ratio == 1.0
    assert b_local.ratio == 1.0


async def test_node_isolated_is_a_row_and_a_column(bridge_lab: Plan) -> None:
    a, b, c = bridge_lab.nodes
    with faults(bridge_lab, "node-isolated@node-b"):
        to_b = await http_tally(a.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10)
        from_b = await http_tally(b.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
        ext_b = await http_tally(b.ns, EXTERNAL_IP, EXTERNAL_PORT, 10)
        a_to_c = await http_tally(a.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
    assert to_b.ok == 0
    assert from_b.ok == 0
    assert ext_b.ok == 0
    assert a_to_c.ratio == 1.0
    assert (await http_tally(a.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10)).ratio == 1.0


async def test_pair_blocked_is_one_cell_both_ways(vpc_lab: Plan) -> None:
    a, b, c = vpc_lab.nodes
    with faults(vpc_lab, "pair-blocked@node-a,node-b"):
        ab = await http_tally(a.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10)
        ba = await http_tally(b.ns, a.echo.ip, ECHO_HTTP_PORT, 10)
        ac = await http_tally(a.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
        bc = await http_tally(b.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
    assert ab.ok == 0
    assert ba.ok == 0
    assert ac.ratio == 1.0
    assert bc.ratio == 1.0


async def test_packet_loss_is_a_partial_rate_on_one_node(bridge_lab: Plan) -> None:
    """10% per direction: a probe needs ~3 packets through without a retransmit, 0.9^3 ≈ 73%."""
    a, b, c = bridge_lab.nodes
    with faults(bridge_lab, "packet-loss@node-b:10%"):
        lossy = await http_tally(a.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 300, concurrency=64)
        clean = await http_tally(a.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 100)
    assert 0.55 < lossy.ratio < 0.9, dict(lossy.outcomes)
    assert clean.ratio == 1.0


async def test_nlb_5tuple_collision_needs_two_nlb_nodes_and_one_source_port(vpc_lab: Plan) -> None:
    """docs/incidents.md#istio-nlb-cross-zone: one client port through two zones' NLB nodes to
    one target: at most one of the pair completes. Different ports, or the NLB's own SNAT,
    and both complete."""
    a = vpc_lab.node("node-a")  # every NLB node forwards to node-c: no hairpin from node-a
    vips = [nlb.vip for nlb in vpc_lab.nlbs[:2]]
    # Every pair gets ports never used before in this test: a port reused within
    # conntrack's timeouts would meet the earlier flows' entries.
    fresh = iter(random.Random(7).sample(range(40000, 60000), 2 * 100))

    async def pair(same_port: bool) -> int:
        p1, p2 = next(fresh), next(fresh)
        ports = (p1, p1) if same_port else (p1, p2)
        got = await asyncio.gather(
            *(
                traffic.http_probe(a.ns, vip, NLB_PORT, bind=(a.ip, port))
                for vip, port in zip(vips, ports, strict=True)
            )
        )
        return sum(p.ok for p in got)

    async def healthy_pair(same_port: bool) -> int:
        """A pair that should both complete; one that lost a probe goes again, up to twice
        (a loaded machine's 0.9 s timeout is not a collision, and a busy second can cost
        two pairs in a row; a collision happens every time)."""
        got = await pair(same_port)
        for _ in range(2):
            if got == 2:
                break
            got = await pair(same_port)
        return got

    async def colliding_pair() -> int:
        """A same-port pair that both completed goes again once: on a loaded machine the
        second SYN can leave after the first flow is done (a millisecond's exchange), and
        two flows that never overlapped do not collide; a collision happens again."""
        got = await pair(same_port=True)
        return got if got < 2 else await pair(same_port=True)

    # The NLB's own SNAT first: measured after switching the fault off, the flows the
    # fault left behind on node-c sometimes cost a probe.
    clean = [await healthy_pair(same_port=True) for _ in range(12)]
    with faults(vpc_lab, "nlb-5tuple-collision@node-c"):
        colliding = [await colliding_pair() for _ in range(12)]
        apart = [await healthy_pair(same_port=False) for _ in range(12)]
    # Never both: the second flow with the same 5-tuple never completes, and sometimes
    # it cuts the first one too (which of the two the client sees depends on timing).
    assert max(colliding) <= 1, colliding
    assert colliding.count(1) >= 6, colliding
    # Different ports, or the NLB's own SNAT: every pair completes.
    assert apart == [2] * 12, apart
    assert clean == [2] * 12, clean


@pytest.mark.parametrize("lab", ["bridge_lab", "vpc_lab"])
async def test_pod_network_isolated_cuts_the_pods_and_keeps_the_node(
    lab: str, request: pytest.FixtureRequest
) -> None:
    """The router's route to node-b's pod addresses is a blackhole: its pods are cut off both
    ways; its own address (host agent, NodePort) and same-node traffic still work."""
    plan: Plan = request.getfixturevalue(lab)
    a, b, c = plan.nodes
    with faults(plan, "pod-network-isolated@node-b"):
        into_pod = await http_tally(a.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10)
        host_into_pod = await http_tally(a.ns, b.echo.ip, ECHO_HTTP_PORT, 10)
        out_of_pod = await http_tally(b.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
        pod_to_host = await http_tally(b.agent.ns, a.ip, ECHO_HTTP_PORT, 10)
        host_to_host = await http_tally(a.ns, b.ip, ECHO_HTTP_PORT, 10)
        nodeport = await http_tally(a.agent.ns, b.ip, NODEPORT, 10)
        local = await http_tally(b.ns, b.echo.ip, ECHO_HTTP_PORT, 10)
        a_to_c = await http_tally(a.agent.ns, c.echo.ip, ECHO_HTTP_PORT, 10)
        routes = netns.exec_in(plan.router_ns, ["ip", "route", "show", "type", "blackhole"]).stdout
    assert (into_pod.ok, host_into_pod.ok, out_of_pod.ok) == (0, 0, 0)
    assert set(into_pod.outcomes) == {"timeout"}  # silently dropped, as the VPC does
    assert host_to_host.ratio == nodeport.ratio == local.ratio == a_to_c.ratio == 1.0
    # A bridge node masquerades what its pods send outside the cluster CIDR (replies come
    # back to the node's address); VPC pods keep their VPC address to VPC destinations.
    assert pod_to_host.ratio == (1.0 if lab == "bridge_lab" else 0.0)
    assert (b.pod_cidr if lab == "bridge_lab" else b.echo.ip) in routes.split()
    assert (await http_tally(a.agent.ns, b.echo.ip, ECHO_HTTP_PORT, 10)).ratio == 1.0
    assert netns.exec_in(plan.router_ns, ["ip", "route", "show", "type", "blackhole"]).stdout == ""
