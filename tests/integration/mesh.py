"""A prober mesh on loopback for tests: a collector and agents as real ``prober`` processes.

Every node is a loopback address (127.x.y.z), with a pod-kind and a host-kind agent
on addresses of their own, as in examples/loopback-inventory.yaml. Processes run
``python -m prober`` from this source tree and are stopped (terminate, then kill)
when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from prober.model import Outcome, ProbeResult, Proto, SrcKind
from tests.integration.prometheus_server import free_port
from tests.integration.waits import STARTED_S

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class MeshNode:
    name: str
    zone: str
    host_ip: str
    pod_ip: str
    run_agents: bool = True


@dataclass(frozen=True, slots=True)
class Mesh:
    collector_url: str
    collector_addr: str  # host:port, for scrape configs
    agent_addrs: tuple[str, ...]  # host:port of every running agent's HTTP (echo + /metrics)
    nodes: tuple[MeshNode, ...]
    logs: Path


def mesh_nodes(zones: Sequence[str], *, missing: Sequence[str] = ()) -> list[MeshNode]:
    """Nodes ``node-a``, ``node-b``, ... (``node-001``, ... past 26) one per zone entry, on a
    random 127.x/16 of their own (at most 254 nodes).

    Nodes named in ``missing`` are in the inventory but run no agent: every probe to
    them fails, which gives dashboards failing pairs to show.
    """
    base = random.Random().randrange(64, 250)
    out = []
    for i, zone in enumerate(zones):
        name = f"node-{chr(ord('a') + i)}" if len(zones) <= 26 else f"node-{i + 1:03d}"
        out.append(
            MeshNode(
                name=name,
                zone=zone,
                host_ip=f"127.{base}.10.{i + 1}",
                pod_ip=f"127.{base}.11.{i + 1}",
                run_agents=name not in missing,
            )
        )
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PROBER_LOG_LEVEL"] = "warning"
    return env


def _wait_http(
    url: str, procs: Sequence[subprocess.Popen[bytes]], logs: Path, timeout_s: float = STARTED_S
) -> None:
    deadline = time.monotonic() + timeout_s

    def tails() -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(logs.glob("*.log")))

    while True:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args!r} exited with {p.returncode}\n{tails()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s\n{tails()}")
        time.sleep(0.2)


@contextlib.contextmanager
def running_mesh(
    tmp: Path,
    nodes: Sequence[MeshNode],
    *,
    interval_s: float = 1.0,
    timeout_s: float = 0.5,
    window_s: float = 30.0,
    agents: bool = True,
) -> Iterator[Mesh]:
    """Write the inventory, start the collector and (with ``agents``) every node's two agents."""
    tmp.mkdir(parents=True, exist_ok=True)
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    http_port, udp_port = free_port(), free_port()
    inventory = {
        "nodes": [{"name": n.name, "zone": n.zone, "address": n.host_ip} for n in nodes],
        "agents": [
            {"name": f"agent-{kind}-{n.name}", "node": n.name, "kind": kind, "address": ip,
             "http_port": http_port, "udp_port": udp_port}
            for n in nodes
            for kind, ip in (("pod", n.pod_ip), ("host", n.host_ip))
        ],
    }  # fmt: skip
    inv_file = tmp / "inventory.yaml"
    inv_file.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    port = free_port()
    collector_url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    env = _env()
    prober = [sys.executable, "-m", "prober"]
    try:
        with (logs / "collector.log").open("wb") as fh:
            procs.append(
                subprocess.Popen(
                    [*prober, "collector", "--inventory", str(inv_file), "--listen", "127.0.0.1",
                     "--port", str(port), "--interval", str(interval_s), "--timeout", str(timeout_s),
                     "--window", str(window_s)],
                    env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                )
            )  # fmt: skip
        _wait_http(f"{collector_url}/readyz", procs, logs)
        agent_addrs = []
        for n in nodes if agents else ():
            if not n.run_agents:
                continue
            for kind, ip in (("pod", n.pod_ip), ("host", n.host_ip)):
                name = f"agent-{kind}-{n.name}"
                with (logs / f"{name}.log").open("wb") as fh:
                    procs.append(
                        subprocess.Popen(
                            [*prober, "agent", "--network", kind, "--node", n.name, "--name", name,
                             "--listen", ip, "--http-port", str(http_port), "--udp-port", str(udp_port),
                             "--source-ip", ip, "--collector", collector_url],
                            env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                        )
                    )  # fmt: skip
                agent_addrs.append(f"{ip}:{http_port}")
        for addr in agent_addrs:
            _wait_http(f"http://{addr}/healthz", procs, logs)
        yield Mesh(
            collector_url=collector_url,
            collector_addr=f"127.0.0.1:{port}",
            agent_addrs=tuple(agent_addrs),
            nodes=tuple(nodes),
            logs=logs,
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def partition_probes(
    nodes: Sequence[MeshNode], cut: set[tuple[str, str]], *, start: float, step_s: float, count: int
) -> list[ProbeResult]:
    """``count`` pod-to-pod probes of every ordered pair from ``start`` every ``step_s``: those
    between the zone pairs in ``cut`` time out, the rest succeed."""
    return [
        ProbeResult(
            ts=start + i * step_s, path="pod-to-pod", src_node=src.name, src_kind=SrcKind.POD,
            target=f"pod/{dst.name}", proto=Proto.HTTP, dst_node=dst.name, dst_kind=SrcKind.POD,
            outcome=Outcome.TIMEOUT if (src.zone, dst.zone) in cut else Outcome.OK,
            latency_s=None if (src.zone, dst.zone) in cut else 0.001,
        )
        for src in nodes
        for dst in nodes
        if src != dst
        for i in range(count)
    ]  # fmt: skip
