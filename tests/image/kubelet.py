"""The lab's prober workloads as containers of the built image, run as a kubelet would run them.

:class:`ContainerLauncher` is a :class:`prober_lab.runtime.Launcher`: for each lab
workload (an echo pod, an agent pod or host agent, the collector) it reads the
matching DaemonSet or Deployment from ``kubectl kustomize deploy/base``, fills in the
downward API values from the lab's names and addresses (:mod:`tests.image.podspec`)
and starts ``podman run`` in that workload's network namespace.

The collector runs as its Deployment says, ``collector --kubernetes``, so the lab
needs an API server: :class:`LabApi` serves the lab's nodes, the rendered echo
Services (with the lab's cluster IPs and NodePort) and a pod per started container,
over TLS with a service-account token, from a socket inside the collector's network
namespace (:class:`tests.integration.kubeapi.FakeKubeApi`). Pods start not Ready;
:meth:`LabApi.mark_ready` plays the kubelet reporting their readiness probes, after
which the collector's warm-up runs as in a cluster.

What differs from a kubelet-run pod is said in README.md ("The container image").
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import resource
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from prober.model import SrcKind
from prober_lab import netns, runtime
from prober_lab.plan import (
    COLLECTOR_IP,
    DNS_SERVICE_IP,
    ECHO_SERVICE,
    ECHO_SERVICE_IP,
    LOCAL_SERVICE,
    LOCAL_SERVICE_IP,
    NODEPORT,
    Plan,
)
from tests.image.podspec import ClusterDns, ContainerRun, Host, PodFields, container_run, podman_run_argv
from tests.integration.kubeapi import FakeKubeApi

ROOT: Final = Path(__file__).parents[2]
API_PORT: Final = 6443
#: podman lowers its own RLIMIT_NPROC to at most this before it starts the OCI runtime,
#: and a container's limits can only be lowered from there (no CAP_SYS_RESOURCE here).
PODMAN_NPROC_MAX: Final = 32768
#: Every container of a lab carries this label (value: the lab's prefix).
LABEL: Final = "prober.lab"


def render_base() -> list[dict[str, Any]]:
    """Every object of ``kubectl kustomize deploy/base``."""
    import yaml

    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "base")], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def workload_for(objects: list[dict[str, Any]], w: runtime.Workload) -> dict[str, Any]:
    """The DaemonSet or Deployment a cluster runs ``w`` from."""
    names = {
        ("echo", SrcKind.POD): "prober-echo",
        ("agent", SrcKind.POD): "prober-agent-pod",
        ("agent", SrcKind.HOST): "prober-agent-host",
        ("collector", None): "prober-collector",
    }
    wanted = names[(w.component, w.network)]
    for obj in objects:
        if obj["kind"] in ("DaemonSet", "Deployment") and obj["metadata"]["name"] == wanted:
            return obj
    raise AssertionError(f"deploy/base has no workload {wanted}")


def pod_name(obj: Mapping[str, Any], node: str) -> str:
    """A stable pod name per node (a cluster adds a random suffix instead)."""
    suffix = node.removeprefix("node-") if obj["kind"] == "DaemonSet" else "0"
    return f"{obj['metadata']['name']}-{suffix}"


def ulimits() -> list[str]:
    """``--ulimit`` values this machine's runtime can set (podman's defaults it cannot)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], PODMAN_NPROC_MAX)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def oci_runtime() -> str | None:
    """runc where installed: crun refuses hybrid cgroup hierarchies (cgroup v1 plus a v2 mount with
    controllers), which this kind of machine has; elsewhere podman's default."""
    return "runc" if shutil.which("runc") else None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class LabApi:
    """The lab's Kubernetes API: nodes, echo Services and pods, served in the collector's namespace."""

    def __init__(self, plan: Plan, objects: list[dict[str, Any]], workdir: Path) -> None:
        self.plan = plan
        self.namespace = next(o["metadata"]["namespace"] for o in objects if o["kind"] == "DaemonSet")
        self.token = secrets.token_hex(24)
        self.fake = FakeKubeApi(self.namespace, token=self.token)
        self.workdir = workdir
        self.service_account_dir = workdir / "serviceaccount"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        for n in plan.nodes:
            self.fake.set_silently(
                "nodes",
                {
                    "metadata": {
                        "name": n.name,
                        "labels": {"kubernetes.io/os": "linux", "topology.kubernetes.io/zone": n.zone},
                    },
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": n.ip}],
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}],
                    },
                },
            )
        # The lab's kube-proxy rules implement these addresses; the collector's Service has no
        # kube-proxy rule in the lab, so its "cluster IP" is its pod's address (the lab DNS agrees).
        cluster_ips = {
            ECHO_SERVICE: ECHO_SERVICE_IP,
            LOCAL_SERVICE: LOCAL_SERVICE_IP,
            "prober-collector": COLLECTOR_IP,
        }
        for obj in objects:
            if obj["kind"] != "Service":
                continue
            name = obj["metadata"]["name"]
            if name not in cluster_ips:
                raise AssertionError(f"deploy/base has a Service {name} the lab has no address for")
            svc = copy.deepcopy(obj)
            svc["spec"]["clusterIP"] = cluster_ips[name]
            if svc["spec"].get("type") in ("NodePort", "LoadBalancer"):
                for port in svc["spec"]["ports"]:
                    port["nodePort"] = NODEPORT
            self.fake.set_silently("services", svc)

    def start(self) -> None:
        """Serve on 127.0.0.1:6443 inside the collector's namespace; write the service account files."""
        if self._thread is not None:
            return
        self.service_account_dir.mkdir(parents=True, exist_ok=True)
        cert, key = _self_signed(self.workdir)
        for name, text in (
            ("token", self.token),
            ("ca.crt", cert.read_text()),
            ("namespace", self.namespace),
        ):
            path = self.service_account_dir / name
            path.write_text(text)
            path.chmod(0o644)  # a projected volume's default mode
        self.service_account_dir.chmod(0o755)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        sock = netns.socket_in(self.plan.ctl_ns)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", API_PORT))
        sock.listen(64)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="lab-kube-api", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(ctx, sock=sock), loop).result(timeout=30)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is None:
            fn(*args)
            return

        async def call() -> None:
            fn(*args)

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def add_pod(self, obj: Mapping[str, Any], fields: PodFields) -> None:
        """The pod a started container belongs to: Running, with its address, not yet Ready."""
        template = obj["spec"]["template"]
        pod = {
            "metadata": {
                "name": fields.pod_name,
                "namespace": fields.namespace,
                "uid": secrets.token_hex(8),
                "labels": dict(template["metadata"]["labels"]),
            },
            "spec": {**copy.deepcopy(template["spec"]), "nodeName": fields.node_name},
            "status": {
                "phase": "Running",
                "podIP": fields.pod_ip,
                "hostIP": fields.host_ip,
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()}],
            },
        }
        self._call(self.fake.emit, "pods", {"type": "ADDED", "object": pod})

    def mark_ready(self) -> None:
        """Every pod's readiness probe passed now (the collector's warm-up starts here)."""
        for pod in list(self.fake.objects["pods"].values()):
            ready = copy.deepcopy(pod)
            ready["status"]["conditions"] = [
                {"type": "Ready", "status": "True", "lastTransitionTime": _now()}
            ]
            self._call(self.fake.emit, "pods", {"type": "MODIFIED", "object": ready})

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.fake.close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None


class ContainerLauncher:
    """Starts each lab workload as a container of the image its manifest names."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.objects = render_base()
        self.workdir = workdir
        self.api = LabApi(plan, self.objects, workdir / "kube")
        self.runs: dict[str, tuple[str, ContainerRun]] = {}  # lab name -> (container name, run)
        self.dns = ClusterDns(nameserver=DNS_SERVICE_IP)
        self._ulimits = ulimits()
        self._runtime = oci_runtime()

    def __call__(
        self, workload: runtime.Workload, log_path: Path
    ) -> tuple[subprocess.Popen[bytes], runtime.Endpoint]:
        w = workload
        obj = workload_for(self.objects, w)
        host_ip = self.plan.node(w.node).ip if w.node else COLLECTOR_IP
        fields = PodFields(
            node_name=w.node or self.plan.nodes[0].name,
            pod_name=pod_name(obj, w.node),
            namespace=obj["metadata"]["namespace"],
            pod_ip=w.address,
            host_ip=host_ip,
        )
        run = container_run(obj, fields)
        if run.service_account_token:
            self.api.start()
        dirs = {}
        for d in run.empty_dirs:
            path = self.workdir / "pods" / fields.pod_name / d.name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # the kubelet's emptyDir mode
            dirs[d.name] = path
        name = f"{self.plan.prefix}-{w.name}"
        host = Host(
            netns=Path("/run/netns") / w.ns,
            empty_dirs=dirs,
            service_account_dir=self.api.service_account_dir if run.service_account_token else None,
            api_host="127.0.0.1",
            api_port=API_PORT,
            ulimits=self._ulimits,
            runtime=self._runtime,
            labels={LABEL: self.plan.prefix},
        )
        argv = podman_run_argv(run, fields, name=name, host=host, dns=self.dns)
        proc = runtime.spawn(self.plan.prefix, argv, log_path)
        self.runs[w.name] = (name, run)
        self.api.add_pod(obj, fields)
        if run.readiness is None:
            raise AssertionError(f"{run.workload} has no readiness probe: the lab cannot tell when it is up")
        probe_path, port = run.readiness
        assert probe_path == "/readyz", f"{run.workload}: readiness probe path {probe_path}"
        return proc, runtime.Endpoint(name=w.name, ns=w.ns, host=w.address, port=port)

    def pid(self, lab_name: str) -> int:
        """The host PID of the container's first process."""
        container = self.runs[lab_name][0]
        out = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Pid}}", container],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())

    def containers(self) -> list[str]:
        return containers(self.plan.prefix)

    def close(self) -> None:
        remove_containers(self.plan.prefix)
        self.api.close()


def containers(prefix: str) -> list[str]:
    """Names of the containers (running or not) of the lab with this prefix."""
    out = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label={LABEL}={prefix}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(out.stdout.split())


def remove_containers(prefix: str) -> None:
    names = containers(prefix)
    if names:
        subprocess.run(["podman", "rm", "--force", "--time", "2", *names], capture_output=True, check=False)


@contextlib.contextmanager
def env_without(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def image_json(ref: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "image", "inspect", ref], capture_output=True, text=True, check=True)
    doc: list[dict[str, Any]] = json.loads(out.stdout)
    return doc[0]
