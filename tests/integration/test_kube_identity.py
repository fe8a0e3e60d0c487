"""Who may call the collector: agents by their projected token (TokenReview), operators by the
token file; against a real collector on loopback following a served Kubernetes API.

The API server (:mod:`tests.integration.kubeapi`) serves the recorded objects and answers
TokenReviews from ``tests/data/kube/tokenreviews.json``; the collector reaches it with the
real Kubernetes client (:mod:`prober.inventory.tokenreview`), as discovery does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import kubernetes
import pytest
from prometheus_client import CollectorRegistry

from prober.collector.auth import Authenticator
from prober.collector.http import Collector
from prober.collector.service import CollectorService
from prober.collector.settings import CollectorSettings
from prober.credentials import TokenFile
from prober.inventory.cluster import KubeSettings
from prober.inventory.kube import KubernetesInventory
from prober.inventory.tokenreview import KubeTokenReviewer
from prober.model import ProbeResult
from prober.records import encode_records
from tests.integration.collector_helpers import probe, real_pinglists
from tests.integration.kubeapi import FakeKubeApi, load

NODE_A, NODE_B = "ip-10-0-1-10.ec2.internal", "ip-10-0-2-10.ec2.internal"
POD_A = "prober-agent-pod-7xk2p"
FAST = KubeSettings(settle_s=0.05, backoff_min_s=0.05, backoff_max_s=0.2, lb_refresh_s=3600, warmup_s=0.0)
OPERATOR = "operator-9f2c4e71d3b8a6"


@dataclass
class Cluster:
    api: FakeKubeApi
    url: str
    tokens: dict[str, str]
    service: CollectorService


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    api = FakeKubeApi()
    for resource, name in (("nodes", "nodes.json"), ("pods", "pods.json"), ("services", "services.json")):
        api.load_list(resource, load(name))
    tokens = api.load_token_reviews(load("tokenreviews.json"))
    await api.start()
    (tmp_path / "operator-token").write_text(OPERATOR + "\n")
    configuration = kubernetes.client.Configuration(host=api.url)
    registry = CollectorRegistry()
    service = CollectorService(
        CollectorSettings(kubernetes=True, refresh_s=0.1), pinglists=real_pinglists, registry=registry
    )
    source = KubernetesInventory(
        FAST, configuration=configuration, registry=registry, up_gauge=service.metrics.inventory_up
    )
    reviewer = KubeTokenReviewer(configuration)
    auth = Authenticator(
        token_file=TokenFile(tmp_path / "operator-token"),
        reviewer=reviewer,
        agent_username="system:serviceaccount:prober:prober-agent",
    )
    try:
        async with Collector(service, auth=auth).serving(source, host="127.0.0.1", port=0) as url:
            yield Cluster(api, url, tokens, service)
    finally:
        reviewer.close()
        await api.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def from_node(src: str, dst: str) -> ProbeResult:
    return probe(src, dst, ts=time.time())


async def post(
    s: aiohttp.ClientSession, url: str, records: list[ProbeResult], token: str | None
) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = bearer(token) if token else {}
    async with s.post(f"{url}/api/v1/results", data=encode_records(records), headers=headers) as resp:
        return resp.status, await resp.json()


async def test_an_agent_may_report_only_from_its_own_node(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as s:
        agent = c.tokens["agent-pod-node-1-10"]
        status, reply = await post(s, c.url, [from_node(NODE_A, NODE_B)] * 3, agent)
        assert (status, reply["accepted"], reply["rejected"]) == (200, 3, 0)
        # The row of the issue: lines that claim another node's probes (a fabricated
        # node-unreachable) are rejected, line by line, and never reach the store.
        status, reply = await post(
            s, c.url, [from_node(NODE_B, NODE_A)] * 50 + [from_node(NODE_A, NODE_B)], agent
        )
        assert (status, reply["accepted"], reply["rejected"]) == (200, 1, 50)
        assert f"this caller may only report probes from node {NODE_A!r}" in reply["errors"][0]["error"]
        assert {r.src_node for r in c.service.recent_records()} == {NODE_A}
        # the host agent on node B reports node B's probes
        status, reply = await post(s, c.url, [from_node(NODE_B, NODE_A)], c.tokens["agent-host-node-2-10"])
        assert (status, reply["accepted"]) == (200, 1)


@pytest.mark.parametrize(
    ("token", "status", "fragment"),
    [
        pytest.param(None, 401, "a credential is required", id="no-credential"),
        pytest.param("forged.jwt.token", 401, "not valid", id="unknown-token"),
        pytest.param("agent-pod-api-audience", 401, "not valid", id="token-for-the-api-server"),
        pytest.param("echo-node-1-10", 403, "is not the agents' service account", id="echo-pod"),
    ],
)
async def test_results_need_an_agent_token_of_the_prober_audience(
    tmp_path: Path, token: str | None, status: int, fragment: str
) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as s:
        presented = c.tokens.get(token, token) if token else None
        got, reply = await post(s, c.url, [from_node(NODE_A, NODE_B)], presented)
        assert got == status
        assert fragment in reply["error"]
        assert c.service.recent_records() == []


async def test_reviews_are_cached_and_an_unreachable_api_is_a_retry(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as s:
        agent = c.tokens["agent-pod-node-1-10"]
        for _ in range(3):
            status, _ = await post(s, c.url, [from_node(NODE_A, NODE_B)], agent)
            assert status == 200
        assert c.api.reviewed == [agent]  # one review, cached until the token expires
        c.api.failing["tokenreviews"] = (503, load("unavailable.json"))
        status, reply = await post(s, c.url, [from_node(NODE_B, NODE_A)], c.tokens["agent-host-node-2-10"])
        assert status == 503  # agents retry a 503; a 401 would make them drop the batch
        assert "cannot be checked now" in reply["error"]
        status, _ = await post(s, c.url, [from_node(NODE_A, NODE_B)], agent)
        assert status == 200  # a cached review does not need the API


async def test_pinglists_records_and_sweeps_need_their_credential(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, aiohttp.ClientSession() as s:
        agent = bearer(c.tokens["agent-pod-node-1-10"])
        async with s.get(f"{c.url}/api/v1/pinglist/{POD_A}", headers=agent) as resp:
            assert resp.status == 200
        async with s.get(f"{c.url}/api/v1/pinglist/prober-agent-host-2hfxd", headers=agent) as resp:
            assert resp.status == 403
        async with s.get(f"{c.url}/api/v1/pinglist/{POD_A}") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="prober"'
        for method, path in (("GET", "/api/v1/records"), ("POST", "/api/v1/sweeps")):
            async with s.request(method, f"{c.url}{path}", headers=agent) as resp:
                assert resp.status == 403
                assert "operator credential" in (await resp.json())["error"]
            async with s.request(method, f"{c.url}{path}") as resp:
                assert resp.status == 401
        async with s.get(f"{c.url}/api/v1/records", headers=bearer(OPERATOR)) as resp:
            assert resp.status == 200
        async with s.get(f"{c.url}/api/v1/pinglist/{POD_A}", headers=bearer(OPERATOR)) as resp:
            assert resp.status == 200
        # open to anyone: metrics, health, the matrix and findings (no addresses in them)
        for path in ("/metrics", "/healthz", "/readyz", "/api/v1/findings", "/api/v1/matrix"):
            async with s.get(f"{c.url}{path}") as resp:
                assert resp.status == 200, path
