"""The run options the image test derives from deploy/base: what each container gets, and refusals.

Pure (no root, no podman): renders ``deploy/base`` with ``kubectl kustomize`` and reads
the four workloads the way :mod:`tests.image.kubelet` does before it starts them.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.image.kubelet import render_base
from tests.image.podspec import (
    ClusterDns,
    Host,
    PodFields,
    PodSpecError,
    container_run,
    podman_run_argv,
    quantity,
)

FIELDS = PodFields(
    node_name="node-b",
    pod_name="prober-agent-pod-b",
    namespace="prober",
    pod_ip="10.244.1.10",
    host_ip="172.31.16.11",
)


@functools.cache
def _objects() -> tuple[dict[str, Any], ...]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: cannot render deploy/base (apt-get install kubernetes-client)")
    return tuple(render_base())


def workload(name: str) -> dict[str, Any]:
    obj = next(
        o for o in _objects() if o["metadata"]["name"] == name and o["kind"] in ("DaemonSet", "Deployment")
    )
    return copy.deepcopy(obj)


@pytest.mark.parametrize(
    ("name", "args", "readiness", "memory", "host_network"),
    [
        pytest.param("prober-agent-pod", ("agent",), ("/readyz", 8080), 96 * 2**20, False, id="agent-pod"),
        pytest.param("prober-agent-host", ("agent",), ("/readyz", 18080), 96 * 2**20, True, id="agent-host"),
        pytest.param("prober-echo", ("echo",), ("/readyz", 8080), 128 * 2**20, False, id="echo"),
        pytest.param(
            "prober-collector",
            ("collector", "--kubernetes"),
            ("/readyz", 9090),
            1024 * 2**20,
            False,
            id="collector",
        ),
    ],
)
def test_every_workload_runs_locked_down(
    name: str, args: tuple[str, ...], readiness: tuple[str, int], memory: int, host_network: bool
) -> None:
    run = container_run(workload(name), FIELDS)
    assert run.args == args
    assert (run.user, run.group) == (65532, 65532)
    assert run.read_only_root
    assert run.cap_drop == ("ALL",)
    assert run.cap_add == ()
    assert run.no_new_privileges
    assert not run.privileged
    assert run.seccomp == "RuntimeDefault"
    # the collector's windows' snapshot outlives a container restart on an emptyDir
    assert [d.path for d in run.empty_dirs] == ["/tmp", "/var/lib/prober"][
        : 2 if name == "prober-collector" else 1
    ]
    # an agent's one credential: a token for the collector (audience prober)
    assert [(t.path, t.audience) for t in run.tokens] == (
        [("/var/run/secrets/prober", "prober")] if name.startswith("prober-agent") else []
    )
    assert run.readiness == readiness
    assert run.memory_limit_bytes == memory
    assert run.host_network is host_network
    assert run.service_account_token is (name == "prober-collector")
    assert run.image == "prober:0.1.0"


def test_the_downward_api_is_filled_from_the_pod() -> None:
    run = container_run(workload("prober-agent-host"), FIELDS)
    env = dict(run.env)
    assert env["PROBER_NODE_NAME"] == "node-b"
    assert env["PROBER_AGENT_NAME"] == "prober-agent-pod-b"
    assert env["PROBER_LISTEN"] == "10.244.1.10"
    assert env["PROBER_NETWORK"] == "host"
    assert env["PROBER_HTTP_PORT"] == "18080"
    assert run.hostname == "node-b"  # a hostNetwork pod has its node's name
    assert dict(container_run(workload("prober-collector"), FIELDS).env)["PROBER_NAMESPACE"] == "prober"


def test_podman_arguments() -> None:
    run = container_run(workload("prober-agent-pod"), FIELDS)
    host = Host(
        netns=Path("/run/netns/x-node-b-agent"),
        empty_dirs={"tmp": Path("/var/tmp/pods/tmp")},
        tokens={"prober-token": Path("/var/tmp/pods/prober-token")},
        service_account_dir=None,
        api_host="127.0.0.1",
        api_port=6443,
        ulimits=("nofile=1024:1024",),
        runtime="runc",
        labels={"prober.lab": "x"},
    )
    argv = podman_run_argv(
        run, FIELDS, name="x-agent-pod-b", host=host, dns=ClusterDns(nameserver="10.96.0.10")
    )
    joined = " ".join(argv)
    for part in (
        "podman --runtime runc run --rm",
        "--network ns:/run/netns/x-node-b-agent",
        "--user 65532:65532",
        "--read-only --read-only-tmpfs=false",
        "--cap-drop=ALL",
        "--security-opt no-new-privileges",
        f"--memory {96 * 2**20}",
        "--cpu-shares 20",
        "--dns 10.96.0.10 --dns-option ndots:5",
        "--dns-search=prober.svc.cluster.local --dns-search=svc.cluster.local --dns-search=cluster.local",
        "--env PROBER_LISTEN=10.244.1.10",
        "--env KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--mount type=bind,source=/var/tmp/pods/tmp,destination=/tmp",
        "--mount type=bind,source=/var/tmp/pods/prober-token,destination=/var/run/secrets/prober,ro=true",
        "--env PROBER_TOKEN_FILE=/var/run/secrets/prober/token",
        "--stop-timeout 35",
        "--ulimit=nofile=1024:1024",
        "--label=prober.lab=x",
    ):
        assert part in joined, part
    assert argv[-2:] == ["prober:0.1.0", "agent"]
    assert "seccomp=unconfined" not in joined


def _edit(name: str, path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    obj = workload(name)
    target: Any = obj["spec"]["template"]["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(("hostPID",), True, "hostPID", id="unknown-pod-field"),
        pytest.param(("containers", 0, "workingDir"), "/x", "workingDir", id="unknown-container-field"),
        pytest.param(
            ("containers", 0, "env", 0),
            {"name": "X", "valueFrom": {"secretKeyRef": {}}},
            "fieldRef",
            id="secret-env",
        ),
        pytest.param(("volumes", 0), {"name": "tmp", "hostPath": {"path": "/"}}, "emptyDir", id="host-path"),
        pytest.param(("securityContext", "runAsUser"), 0, "runAsNonRoot", id="root"),
        pytest.param(
            ("securityContext", "seccompProfile"), {"type": "Localhost"}, "seccompProfile", id="seccomp"
        ),
        pytest.param(("containers", 0, "resources", "limits", "cpu"), "1", "CPU limit", id="cpu-limit"),
    ],
)
def test_what_cannot_be_reproduced_is_refused(path: tuple[str | int, ...], value: Any, message: str) -> None:
    with pytest.raises(PodSpecError, match=message):
        container_run(_edit("prober-agent-pod", path, value), FIELDS)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("128Mi", 128 * 2**20, id="Mi"),
        pytest.param("1Gi", 2**30, id="Gi"),
        pytest.param("20m", 0.02, id="milli"),
        pytest.param("2", 2.0, id="plain"),
        pytest.param("64M", 64e6, id="M"),
    ],
)
def test_quantity(text: str, value: float) -> None:
    assert quantity(text) == pytest.approx(value)
