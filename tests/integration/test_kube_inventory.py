"""The Kubernetes inventory source against a real HTTP API server, through the real client.

The server (:mod:`tests.integration.kubeapi`) serves the recorded objects in
``tests/data/kube`` and replays recorded watch events, errors and 410 Gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from prometheus_client import CollectorRegistry, Gauge

from prober.errors import UsageError
from prober.inventory import DnsServer, Inventory, ZoneAddress
from prober.inventory.cluster import KubeSettings
from prober.inventory.kube import KubernetesInventory, kube_inventory_from
from tests.integration.kubeapi import FakeKubeApi, load, load_events

NLB = "k8s-prober-proberec-3f9d2c1b7a-8e4d5c6b7a9f0e1d.elb.us-east-1.amazonaws.com"
NODE_A, NODE_B, NODE_C, NODE_D, NODE_E = (
    f"ip-10-0-{x}.ec2.internal" for x in ("1-10", "2-10", "3-10", "3-20", "2-30")
)
FAST = KubeSettings(
    settle_s=0.05,
    backoff_min_s=0.05,
    backoff_max_s=0.2,
    watch_timeout_s=30,
    lb_refresh_s=3600,
    resolve_timeout_s=1.0,
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    """Wall-clock time that runs at real speed from a chosen start (for warm-up)."""

    def __init__(self, start: float) -> None:
        self.set(start)

    def set(self, start: float) -> None:
        self._start, self._t0 = start, time.monotonic()

    def __call__(self) -> float:
        return self._start + (time.monotonic() - self._t0)


class Dns:
    """A resolver backed by a dict; ``fail`` makes every lookup fail as a timeout would."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.fail = False
        self.asked: list[str] = []

    async def __call__(self, name: str) -> list[str]:
        self.asked.append(name)
        if self.fail:
            raise OSError("Temporary failure in name resolution")
        return list(self.answers.get(name, []))


def aws_dns() -> Dns:
    return Dns(
        {
            NLB: ["10.0.1.200", "10.0.2.200", "10.0.3.200"],
            f"us-east-1a.{NLB}": ["10.0.1.200"],
            f"us-east-1b.{NLB}": ["10.0.2.200"],
            f"us-east-1c.{NLB}": ["10.0.3.200"],
        }
    )


@dataclass
class Running:
    source: KubernetesInventory
    registry: CollectorRegistry
    inventories: asyncio.Queue[Inventory] = field(default_factory=asyncio.Queue)
    latest: Inventory | None = None

    async def next(self, within_s: float = 10.0) -> Inventory:
        async with asyncio.timeout(within_s):
            self.latest = await self.inventories.get()
        return self.latest

    async def until(self, predicate: Callable[[Inventory], bool], within_s: float = 10.0) -> Inventory:
        """The first inventory (already published or coming) for which ``predicate`` holds."""
        async with asyncio.timeout(within_s):
            while self.latest is None or not predicate(self.latest) or not self.inventories.empty():
                self.latest = await self.inventories.get()
                if predicate(self.latest):
                    return self.latest
        return self.latest

    async def quiet(self, seconds: float) -> None:
        """Nothing is published for ``seconds``."""
        await asyncio.sleep(seconds)
        assert self.inventories.empty(), "an inventory was published"

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def metric_until(self, name: str, predicate: Callable[[float], bool], **labels: str) -> float:
        """Poll a metric until ``predicate`` holds (metrics have no change events to wait on)."""
        async with asyncio.timeout(10):
            while not predicate(value := self.metric(name, **labels)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return value


@contextlib.asynccontextmanager
async def running(source: KubernetesInventory, registry: CollectorRegistry) -> AsyncIterator[Running]:
    run = Running(source, registry)

    async def consume() -> None:
        async with contextlib.aclosing(source.updates()) as it:
            async for inv in it:
                run.inventories.put_nowait(inv)

    task = asyncio.create_task(consume())
    try:
        yield run
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApi]:
    fake = FakeKubeApi()
    fake.load_list("nodes", load("nodes.json"))
    fake.load_list("pods", load("pods.json"))
    fake.load_list("services", load("services.json"))
    await fake.start()
    yield fake
    await fake.close()


def make_source(
    api: FakeKubeApi,
    settings: KubeSettings = FAST,
    *,
    resolver: Dns | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[KubernetesInventory, CollectorRegistry]:
    registry = CollectorRegistry()
    source = KubernetesInventory(
        settings,
        configuration=kubernetes.client.Configuration(host=api.url),
        resolver=resolver or aws_dns(),
        registry=registry,
        clock=clock,
    )
    return source, registry


def agent_names(inv: Inventory) -> set[str]:
    return {a.name for a in inv.agents}


async def test_first_inventory_from_one_list_and_one_watch_per_resource(api: FakeKubeApi) -> None:
    source, registry = make_source(api, replace(FAST, list_page_size=3))
    async with running(source, registry) as run:
        inv = await run.next()
        assert [n.name for n in inv.nodes] == [NODE_A, NODE_B, NODE_C, NODE_D]
        assert [n.ready for n in inv.nodes] == [True, True, True, False]
        ready = {a.name: a.ready for a in inv.agents}
        # The real clock is long past every recorded Ready time: no warm-up is left.
        assert ready == {
            "prober-agent-pod-7xk2p": True,
            "prober-agent-host-q9z4m": True,
            "prober-agent-pod-m4kq8": True,
            "prober-agent-host-2hfxd": False,  # terminating
            "prober-agent-pod-w8jvn": False,  # not ready
            "prober-agent-host-5tlzc": True,
            "prober-agent-pod-bz6rt": False,  # node not ready
        }
        assert [(s.name, s.address, s.local) for s in inv.services] == [
            ("prober-echo", "172.20.113.25", False),
            ("prober-echo-local", "172.20.41.7", True),
        ]
        assert [(p.name, p.port) for p in inv.nodeports] == [("prober-echo", 31480)]
        assert inv.nlbs[0].addresses == [
            ZoneAddress(zone="us-east-1a", address="10.0.1.200"),
            ZoneAddress(zone="us-east-1b", address="10.0.2.200"),
            ZoneAddress(zone="us-east-1c", address="10.0.3.200"),
        ]
        await run.metric_until("prober_inventory_source_up", lambda v: v == 1)
        assert run.metric("prober_inventory_agent_states", state="probed") == 4
        assert run.metric("prober_inventory_agent_states", state="terminating") == 1
        assert run.metric("prober_inventory_updates_total") == 1
        await asyncio.sleep(0.2)  # let the watches open
        watches = [r for r in api.requests if r.watch]
        assert sorted(r.resource for r in watches) == ["nodes", "pods", "services"]
        assert all(r.query["resourceVersion"] == str(api.rv) for r in watches)
        assert all(r.query["allowWatchBookmarks"] == "true" for r in watches)
    # nodes cluster-wide and unfiltered; pods and services in the namespace, by label
    assert [r.query.get("continue") for r in api.lists("nodes")] == [None, "3"]
    assert all("labelSelector" not in r.query for r in api.lists("nodes"))
    assert {r.query["labelSelector"] for r in api.lists("pods")} == {
        "app.kubernetes.io/name=prober,app.kubernetes.io/component=agent"
    }
    assert {r.query["labelSelector"] for r in api.lists("services")} == {
        "app.kubernetes.io/name=prober,app.kubernetes.io/component=echo"
    }


async def test_watch_events_follow_the_cluster(api: FakeKubeApi) -> None:
    source, registry = make_source(api)
    async with running(source, registry) as run:
        await run.next()
        for event in load_events("nodes-watch.jsonl"):  # heartbeat of b, e added, d deleted
            api.emit("nodes", event)
        inv = await run.until(
            lambda i: NODE_E in [n.name for n in i.nodes] and NODE_D not in [n.name for n in i.nodes]
        )
        assert [n.name for n in inv.nodes] == [NODE_A, NODE_B, NODE_E, NODE_C]
        assert "prober-agent-pod-bz6rt" not in agent_names(inv)  # departed with its node
        for event in load_events("pods-watch.jsonl"):
            api.emit("pods", event)
        inv = await run.until(lambda i: "prober-agent-pod-h2m9c" in agent_names(i))
        assert "prober-agent-host-2hfxd" not in agent_names(inv)
        replacement = inv.agent("prober-agent-host-x7vnq")
        assert replacement is not None
        assert (replacement.node, replacement.address, replacement.ready) == (NODE_B, "10.0.2.10", True)
        new_pod = inv.agent("prober-agent-pod-h2m9c")
        assert new_pod is not None
        assert (new_pod.node, new_pod.address, new_pod.ready) == (NODE_E, "10.0.2.77", True)
        assert run.metric("prober_inventory_watch_events_total", resource="nodes") == 3
        assert run.metric("prober_inventory_watch_events_total", resource="pods") == 4
        assert run.metric("prober_inventory_relists_total", resource="nodes") == 0


async def test_a_new_agent_is_probed_only_after_its_warm_up(api: FakeKubeApi) -> None:
    clock = Clock(ts("2025-11-20T09:00:00"))
    source, registry = make_source(api, clock=clock)
    async with running(source, registry) as run:
        await run.next()
        events = load_events("pods-watch.jsonl")
        # prober-agent-host-x7vnq turns Ready at 08:04:09: its warm-up ends at 08:04:39.
        clock.set(ts("2025-11-20T08:04:39") - 1.5)
        for event in events[:3]:
            api.emit("pods", event)
        inv = await run.until(lambda i: "prober-agent-host-x7vnq" in agent_names(i))
        agent = inv.agent("prober-agent-host-x7vnq")
        assert agent is not None
        assert not agent.ready
        assert run.metric("prober_inventory_agent_states", state="warming_up") == 1
        seen = run.metric("prober_inventory_watch_events_total", resource="pods")
        inv = await run.next()  # no API event: the warm-up simply ends
        agent = inv.agent("prober-agent-host-x7vnq")
        assert agent is not None
        assert agent.ready
        assert run.metric("prober_inventory_watch_events_total", resource="pods") == seen
        assert run.metric("prober_inventory_agent_states", state="warming_up") == 0


async def test_410_gone_in_a_watch_lists_again(api: FakeKubeApi) -> None:
    source, registry = make_source(api)
    async with running(source, registry) as run:
        await run.next()
        await asyncio.sleep(0.2)
        api.set_silently("nodes", None, name=NODE_C)  # a change the watch never reports
        api.send_raw("nodes", load_events("watch-gone.jsonl")[0])
        inv = await run.until(lambda i: NODE_C not in [n.name for n in i.nodes])
        assert {a.node for a in inv.agents} == {NODE_A, NODE_B, NODE_D}
        assert run.metric("prober_inventory_relists_total", resource="nodes") == 1
        assert len(api.lists("nodes")) == 2
        assert run.metric("prober_inventory_errors_total", resource="nodes", reason="api") == 0
        assert run.metric("prober_inventory_source_up") == 1


async def test_a_watch_resumed_from_a_compacted_version_lists_again(api: FakeKubeApi) -> None:
    source, registry = make_source(api)
    async with running(source, registry) as run:
        await run.next()
        await asyncio.sleep(0.2)
        api.set_silently("pods", None, name="prober-agent-pod-7xk2p")
        api.compact()
        api.drop_watches("pods")  # the server ends the watch; resuming from the old version is 410
        inv = await run.until(lambda i: "prober-agent-pod-7xk2p" not in agent_names(i))
        assert "prober-agent-host-q9z4m" in agent_names(inv)
        assert run.metric("prober_inventory_relists_total", resource="pods") == 1


async def test_an_api_outage_keeps_the_last_inventory(
    api: FakeKubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="prober.inventory.kube")
    source, registry = make_source(api)
    async with running(source, registry) as run:
        before = await run.next()
        await asyncio.sleep(0.2)
        unavailable = load("unavailable.json")
        api.failing = dict.fromkeys(("nodes", "pods", "services"), (503, unavailable))
        api.drop_watches()
        await run.metric_until("prober_inventory_source_up", lambda v: v == 0)
        node_a = load("nodes.json")["items"][0]
        api.emit("nodes", {"type": "DELETED", "object": {"kind": "Node", "apiVersion": "v1", **node_a}})
        await run.metric_until(
            "prober_inventory_errors_total", lambda v: v >= 3, resource="nodes", reason="api"
        )
        await run.quiet(0.3)  # the last good inventory stays in force
        assert run.latest == before
        api.failing = {}
        # the watch resumes where it left off and the server replays what it missed
        inv = await run.until(lambda i: NODE_A not in [n.name for n in i.nodes])
        assert all(a.node != NODE_A for a in inv.agents)
        await run.metric_until("prober_inventory_source_up", lambda v: v == 1)
        assert run.metric("prober_inventory_relists_total", resource="nodes") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # one line per resource for the whole outage, however many retries failed
    assert sorted(m.split(":")[0] for m in warnings) == [
        "kubernetes nodes",
        "kubernetes pods",
        "kubernetes services",
    ]
    assert all("HTTP 503" in m and "the server is currently unable" in m for m in warnings)
    assert all("keeping the last good inventory" in m for m in warnings)
    recovered = [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
    assert len(recovered) >= 3


async def test_forbidden_names_the_missing_permission(
    api: FakeKubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="prober.inventory.kube")
    api.failing = {"nodes": (403, load("forbidden.json"))}
    source, registry = make_source(api)
    async with running(source, registry) as run:
        await run.metric_until(
            "prober_inventory_errors_total", lambda v: v >= 1, resource="nodes", reason="api"
        )
        await run.quiet(0.2)  # no inventory without nodes
        assert run.metric("prober_inventory_source_up") == 0
        api.failing = {}  # RBAC applied
        inv = await run.next()
        assert len(inv.nodes) == 4
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 'cannot list resource "nodes"' in message
    assert "HTTP 403" in message
    assert "list/watch on nodes" in message


async def test_an_error_event_in_a_watch_is_retried(api: FakeKubeApi) -> None:
    source, registry = make_source(api)
    async with running(source, registry) as run:
        await run.next()
        await asyncio.sleep(0.2)
        api.send_raw("services", load_events("watch-error.jsonl")[0])
        await run.metric_until(
            "prober_inventory_errors_total", lambda v: v == 1, resource="services", reason="api"
        )
        await run.metric_until("prober_inventory_source_up", lambda v: v == 1)
        local = load("services.json")["items"][1]
        api.emit("services", {"type": "DELETED", "object": {"kind": "Service", "apiVersion": "v1", **local}})
        inv = await run.until(lambda i: [s.name for s in i.services] == ["prober-echo"])
        assert inv.nlbs
        assert run.metric("prober_inventory_relists_total", resource="services") == 0  # resumed, not relisted


async def test_load_balancer_addresses_follow_dns(api: FakeKubeApi, caplog: pytest.LogCaptureFixture) -> None:
    dns = aws_dns()
    source, registry = make_source(api, replace(FAST, lb_refresh_s=0.1), resolver=dns)
    async with running(source, registry) as run:
        inv = await run.next()
        assert [a.address for a in inv.nlbs[0].addresses] == ["10.0.1.200", "10.0.2.200", "10.0.3.200"]
        assert f"us-east-1c.{NLB}" in dns.asked  # one zonal lookup per zone that has nodes
        # The NLB moves to new addresses in zones a and b (c's zonal name no longer answers):
        dns.answers = {
            NLB: ["10.0.1.201", "10.0.2.201"],
            f"us-east-1a.{NLB}": ["10.0.1.201"],
            f"us-east-1b.{NLB}": ["10.0.2.201"],
        }
        inv = await run.until(lambda i: len(i.nlbs[0].addresses) == 2)
        assert inv.nlbs[0].addresses == [
            ZoneAddress(zone="us-east-1a", address="10.0.1.201"),
            ZoneAddress(zone="us-east-1b", address="10.0.2.201"),
        ]
        dns.fail = True
        await run.metric_until(
            "prober_inventory_errors_total", lambda v: v >= 2, resource="lb", reason="resolve"
        )
        await run.quiet(0.3)  # failed lookups keep the addresses we had
        assert run.latest == inv
        assert run.metric("prober_inventory_source_up") == 1  # DNS trouble is not an API outage
    assert any("cannot resolve load balancer" in r.getMessage() for r in caplog.records)


async def test_load_balancer_zones_from_node_subnets_without_zonal_names(api: FakeKubeApi) -> None:
    dns = Dns({NLB: ["10.0.3.200", "10.0.1.200"]})  # no zonal answers
    source, registry = make_source(api, resolver=dns)
    async with running(source, registry) as run:
        inv = await run.next()
    assert inv.nlbs[0].addresses == [
        ZoneAddress(zone="us-east-1a", address="10.0.1.200"),
        ZoneAddress(zone="us-east-1c", address="10.0.3.200"),
    ]


async def test_a_gauge_the_collector_registered_is_driven_by_the_source(api: FakeKubeApi) -> None:
    registry = CollectorRegistry()
    up = Gauge("prober_inventory_source_up", "the collector's own", registry=registry)
    source = KubernetesInventory(
        FAST,
        configuration=kubernetes.client.Configuration(host=api.url),
        resolver=aws_dns(),
        registry=registry,
        up_gauge=up,
    )
    async with running(source, registry) as run:
        await run.next()
        await run.metric_until("prober_inventory_source_up", lambda v: v == 1)
        api.failing = {"pods": (503, load("unavailable.json"))}
        api.drop_watches("pods")
        await run.metric_until("prober_inventory_source_up", lambda v: v == 0)


async def test_the_watch_threads_stop_with_the_source(api: FakeKubeApi) -> None:
    source, registry = make_source(api)
    async with running(source, registry) as run:
        await run.next()
        await asyncio.sleep(0.2)
        assert sum(t.name.startswith("prober-watch-") for t in threading.enumerate()) == 3
    assert not [t.name for t in threading.enumerate() if t.name.startswith("prober-watch-")]
    assert registry.get_sample_value("prober_inventory_source_up") == 0


# --- configuration ------------------------------------------------------------------------


def write_kubeconfig(path: Path, server: str, **user: Any) -> Path:
    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": user or {"token": "t0ken"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me"}}],
        "current-context": "lab",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_kubeconfig_outside_the_cluster(api: FakeKubeApi, tmp_path: Path) -> None:
    api.token = "t0ken"
    registry = CollectorRegistry()
    source = kube_inventory_from(
        kubeconfig=str(write_kubeconfig(tmp_path / "config", api.url)),
        namespace="prober",
        externals=["api=api.example.com:443"],
        registry=registry,
        environ={},
    )
    source._resolver = aws_dns()
    assert source.settings.dns == ()  # outside a cluster there is no resolv.conf to trust
    async with running(source, registry) as run:
        inv = await run.next()
    assert len(inv.nodes) == 4
    assert [e.name for e in inv.externals] == ["api"]


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    try:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "1", "-subj", "/CN=kubernetes",
                "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("openssl is not installed: cannot make a serving certificate for the in-cluster test")
    return tmp_path / "tls.crt", tmp_path / "tls.key"


async def test_in_cluster_service_account(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    """The default path in a pod: API server from the environment, CA and token from the service account."""
    cert, key = tls
    fake = FakeKubeApi(namespace="probes", token="projected-token")
    fake.load_list("nodes", load("nodes.json"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    url = await fake.start(ssl_context=ctx)
    try:
        sa = tmp_path / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text("projected-token")
        (sa / "ca.crt").write_text(cert.read_text())
        (sa / "namespace").write_text("probes")
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(
            "search probes.svc.cluster.local svc.cluster.local cluster.local\nnameserver 172.20.0.10\n"
        )
        port = url.rsplit(":", 1)[1]
        registry = CollectorRegistry()
        source = kube_inventory_from(
            registry=registry,
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port},
            service_account_dir=sa,
            resolv_conf=resolv,
        )
        assert source.settings.namespace == "probes"
        assert source.settings.dns == (
            DnsServer(name="kube-dns", address="172.20.0.10", query="kubernetes.default.svc.cluster.local"),
        )
        async with running(source, registry) as run:
            inv = await run.next()
        assert len(inv.nodes) == 4
        assert inv.dns == list(source.settings.dns)
        pods = fake.lists("pods")
        assert pods  # in the namespace the service account lives in
    finally:
        await fake.close()


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        pytest.param(
            lambda p: str(p / "missing"), "cannot configure the Kubernetes client", id="missing-file"
        ),
        pytest.param(
            lambda p: (p / "broken").write_text("clusters: [") and str(p / "broken"),
            "cannot configure the Kubernetes client",
            id="broken-yaml",
        ),
        pytest.param(
            lambda p: (p / "empty").write_text("apiVersion: v1\nkind: Config\n") and str(p / "empty"),
            "cannot configure the Kubernetes client",
            id="no-context",
        ),
    ],
)
def test_kubeconfig_errors_are_one_line(tmp_path: Path, setup: Callable[[Path], str], fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        kube_inventory_from(kubeconfig=setup(tmp_path), registry=CollectorRegistry(), environ={})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_outside_a_cluster_without_kubeconfig_says_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    with pytest.raises(UsageError, match="pass --kubeconfig PATH"):
        kube_inventory_from(registry=CollectorRegistry(), environ={})


def test_the_flags_module_does_not_load_the_kubernetes_client() -> None:
    """``prober collector`` without --kubernetes must not pay for importing ``kubernetes``."""
    import os
    import sys

    code = "import sys, prober.commands.kube_options; print('kubernetes' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert out.stdout.strip() == "False"
