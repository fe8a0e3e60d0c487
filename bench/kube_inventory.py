"""How the Kubernetes inventory source scales: a 5,000-node cluster over real HTTP.

Serves N nodes (copies of the recorded EKS node, images list and all) and 2N agent
pods from the test API server, then measures: time to the first inventory, the
collector's memory growth, the cost of one inventory build, and how long a burst of
pod events (a DaemonSet rollout) takes to show up in a published inventory.

    PYTHONPATH=. python bench/kube_inventory.py [--nodes 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

import msgspec
import yaml
from prometheus_client import CollectorRegistry

from prober.inventory.cluster import ApiNode, ApiPod, ApiService, KubeSettings, build_inventory
from prober.inventory.kube import KubernetesInventory, configuration_from
from prober.model import SrcKind
from tests.integration.kubeapi import FakeKubeApi, load
from tests.inventories import EksCluster


def rss_mib() -> float:
    with Path("/proc/self/status").open() as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthesize(api: FakeKubeApi, n: int) -> None:
    """The recorded EKS node and agent pods, copied for each node of an EKS-like cluster
    (names, addresses and zones from ``tests/inventories.py``)."""
    shape = EksCluster(n_nodes=n)
    node_t = load("nodes.json")["items"][0]
    pods = load("pods.json")["items"]
    templates = {SrcKind.POD: pods[0], SrcKind.HOST: pods[1]}
    for i in range(n):
        want = shape.node(i)
        node = copy.deepcopy(node_t)
        node["metadata"]["name"] = want.name
        node["metadata"]["labels"]["topology.kubernetes.io/zone"] = want.zone
        node["status"]["addresses"] = [
            {"type": "InternalIP", "address": want.address},
            {"type": "InternalDNS", "address": want.name},
            {"type": "Hostname", "address": want.name},
        ]
        api.objects["nodes"][want.name] = node
        for kind, template in templates.items():
            agent = shape.agent(i, kind)
            pod = copy.deepcopy(template)
            pod["metadata"]["name"] = agent.name
            pod["spec"]["nodeName"] = want.name
            pod["status"]["podIP"] = agent.address
            api.objects["pods"][agent.name] = pod
    api.load_list("services", load("services.json"))


async def main(n: int, burst: int) -> None:
    api = FakeKubeApi()
    synthesize(api, n)
    await api.start()
    gc.collect()
    base = rss_mib()
    registry = CollectorRegistry()

    async def resolver(name: str) -> list[str]:
        return ["10.0.1.200"] if name.startswith("k8s-") else []

    kubeconfig = Path(tempfile.mkdtemp()) / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "bench", "cluster": {"server": api.url}}],
                "users": [{"name": "bench", "user": {"token": "bench"}}],
                "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                "current-context": "bench",
            }
        )
    )
    settings = KubeSettings(settle_s=0.2, list_page_size=500, kubeconfig=str(kubeconfig))
    source = KubernetesInventory(
        settings,
        configuration=configuration_from(settings, in_cluster=False),
        resolver=resolver,
        registry=registry,
    )
    t0 = time.perf_counter()
    async with contextlib.aclosing(source.updates()) as it:
        inv = await anext(it)
        first = time.perf_counter() - t0
        gc.collect()
        grown = rss_mib() - base
        print(f"nodes={len(inv.nodes)} agents={len(inv.agents)}")
        print(f"first inventory: {first:.2f} s (lists of {n} nodes, {2 * n} pods over HTTP, paged by 500)")
        print(f"memory held for it (RSS growth, test server included): {grown:.0f} MiB")

        # the cost of one build over the same objects, decoded as the watches decode them
        nodes = {k: msgspec.convert(v, ApiNode) for k, v in api.objects["nodes"].items()}
        pods = {k: msgspec.convert(v, ApiPod) for k, v in api.objects["pods"].items()}
        services = {k: msgspec.convert(v, ApiService) for k, v in api.objects["services"].items()}
        t = time.perf_counter()
        for _ in range(5):
            build_inventory(nodes, pods, services, lb_addresses={}, settings=settings, now=time.time())
        print(f"one inventory build: {(time.perf_counter() - t) / 5 * 1000:.0f} ms")

        await asyncio.sleep(0.5)  # watches open
        names = sorted(api.objects["pods"])[:burst]
        t = time.perf_counter()
        for name in names:  # a rollout: every pod in the burst turns not-ready
            pod = copy.deepcopy(api.objects["pods"][name])
            pod["status"]["conditions"][2]["status"] = "False"
            api.emit("pods", {"type": "MODIFIED", "object": {"kind": "Pod", "apiVersion": "v1", **pod}})
        updates = 0
        async with asyncio.timeout(120):
            while True:
                inv = await anext(it)
                updates += 1
                not_ready = sum(1 for a in inv.agents if not a.ready)
                if not_ready >= burst:
                    break
        print(
            f"burst of {burst} pod events visible after {time.perf_counter() - t:.2f} s "
            f"in {updates} published inventories"
        )
    await api.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(min(args.nodes, 20000), min(args.burst, 2 * args.nodes)))
