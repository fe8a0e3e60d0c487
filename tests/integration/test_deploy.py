"""deploy/ and the Dockerfile: they render, validate, and keep the promises the README makes.

Every kustomization is rendered with ``kubectl kustomize``; every object is validated
against the Kubernetes OpenAPI schema (``kubernetes-validate``, strict) and the
Prometheus operator kinds against the minimal schemas in ``tests/data/crd``. Policy
tests check security settings, Pod Security Standards levels, RBAC, the agents' lack
of API access, and that what the manifests pass matches the command line and the
discovery defaults.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

import prober
from prober.commands.kube_options import KubeOptions, kube_options
from prober.inventory.cluster import KubeSettings
from tests import kubeschema
from tests.image.podspec import quantity

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
CRD_SCHEMAS = ROOT / "tests" / "data" / "crd"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
COMPONENT = DEPLOY / "components" / "prometheus-operator"
LARGE = DEPLOY / "components" / "large-cluster"
XLARGE = DEPLOY / "components" / "xlarge-cluster"

#: name -> (kustomization directory, components added on top)
KUSTOMIZATIONS: dict[str, tuple[Path, list[Path]]] = {
    "base": (DEPLOY / "base", []),
    "aws-nlb": (DEPLOY / "overlays" / "aws-nlb", []),
    "base+prometheus-operator": (DEPLOY / "base", [COMPONENT]),
    "aws-nlb+prometheus-operator": (DEPLOY / "overlays" / "aws-nlb", [COMPONENT]),
    "aws-nlb+large-cluster+prometheus-operator": (DEPLOY / "overlays" / "aws-nlb", [LARGE, COMPONENT]),
    "aws-nlb+xlarge-cluster+prometheus-operator": (DEPLOY / "overlays" / "aws-nlb", [XLARGE, COMPONENT]),
    "aws-nlb+matching": (
        DEPLOY / "overlays" / "aws-nlb",
        [DEPLOY / "components" / c for c in ("echo-cluster-policy", "nlb-cross-zone", "nlb-client-ip-off")],
    ),
    "aws-nlb+ip-targets": (DEPLOY / "overlays" / "aws-nlb", [DEPLOY / "components" / "nlb-ip-targets"]),
    "base+cluster-policy": (DEPLOY / "base", [DEPLOY / "components" / "echo-cluster-policy"]),
}
#: The components that set the echo NLB Service as a user's own Services are set.
ECHO_SETTINGS = ("echo-cluster-policy", "nlb-ip-targets", "nlb-cross-zone", "nlb-client-ip-off")

#: The agent's command line (fixed in the project brief): flag -> env var.
AGENT_FLAGS = {
    "--network": "PROBER_NETWORK",
    "--node": "PROBER_NODE_NAME",
    "--name": "PROBER_AGENT_NAME",
    "--listen": "PROBER_LISTEN",
    "--http-port": "PROBER_HTTP_PORT",
    "--udp-port": "PROBER_UDP_PORT",
    "--collector": "PROBER_COLLECTOR_URL",
    "--token-file": "PROBER_TOKEN_FILE",
}
#: ``prober echo``'s command line: the agent's identity and echo ports, nothing about probing.
ECHO_FLAGS = {flag: env for flag, env in AGENT_FLAGS.items() if flag not in ("--collector", "--token-file")}
#: The collector's own flags (the brief) and env vars; the Kubernetes ones come from kube_options.
COLLECTOR_FLAGS = {"--listen": None, "--port": "PROBER_PORT"}
#: Sample values for the downward API, to parse the env the way a pod would see it.
FIELD_VALUES = {
    "spec.nodeName": "ip-10-0-1-10.ec2.internal",
    "metadata.name": "prober-agent-pod-7xk2p",
    "metadata.namespace": "prober",
    "status.podIP": "10.0.1.57",
}


@functools.cache
def render(name: str, workdir: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not installed: cannot render the kustomizations (apt-get install kubernetes-client)"
        )
    directory, components = KUSTOMIZATIONS[name]
    if components:
        # A throwaway overlay that adds the components, as a user's own overlay would.
        target = workdir / name
        target.mkdir(parents=True, exist_ok=True)
        doc = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(directory, target)],  # kustomize wants relative paths
            "components": [os.path.relpath(c, target) for c in components],
        }
        (target / "kustomization.yaml").write_text(yaml.safe_dump(doc))
        directory = target
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kustomize")


@pytest.fixture(params=list(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest, workdir: Path) -> list[dict[str, Any]]:
    return render(request.param, workdir)


@pytest.fixture
def base(workdir: Path) -> list[dict[str, Any]]:
    return render("base", workdir)


@pytest.fixture
def nlb(workdir: Path) -> list[dict[str, Any]]:
    return render("aws-nlb", workdir)


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def workloads(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objs:
        if o["kind"] in ("DaemonSet", "Deployment"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it (downward API filled in)."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = FIELD_VALUES[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


# --- rendering and schemas --------------------------------------------------------------


def test_base_holds_exactly_the_documented_objects(base: list[dict[str, Any]]) -> None:
    assert sorted((o["kind"], o["metadata"]["name"]) for o in base) == sorted(
        [
            ("Namespace", "prober"),
            ("PriorityClass", "prober"),
            ("ServiceAccount", "prober-collector"),
            ("ServiceAccount", "prober-agent"),
            ("ServiceAccount", "prober-echo"),
            ("ClusterRole", "prober-collector"),
            ("ClusterRoleBinding", "prober-collector"),
            ("Role", "prober-collector"),
            ("RoleBinding", "prober-collector"),
            ("DaemonSet", "prober-agent-pod"),
            ("DaemonSet", "prober-agent-host"),
            ("DaemonSet", "prober-echo"),
            ("Service", "prober-echo"),
            ("Service", "prober-echo-local"),
            ("Deployment", "prober-collector"),
            ("Service", "prober-collector"),
            ("NetworkPolicy", "prober-agent"),
            ("NetworkPolicy", "prober-echo"),
            ("NetworkPolicy", "prober-collector"),
        ]
    )
    namespaced = [
        o
        for o in base
        if o["kind"] not in ("Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding")
    ]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"prober"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "prober" for o in base)


def test_every_object_matches_its_schema(rendered: list[dict[str, Any]]) -> None:
    crds = {"PodMonitor", "ServiceMonitor"}
    assert rendered
    for obj in rendered:
        if obj["kind"] in crds:
            schema = json.loads((CRD_SCHEMAS / f"{obj['kind'].lower()}-monitoring-v1.json").read_text())
            jsonschema.Draft202012Validator(schema).validate(obj)
        else:
            kubeschema.validate(obj)


def test_the_schema_check_rejects_a_broken_object(base: list[dict[str, Any]]) -> None:
    """The validation above is strict: a misspelt field fails."""
    ds = json.loads(json.dumps(find(base, "DaemonSet", "prober-agent-pod")))
    ds["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = ds["spec"]["template"]["spec"][
        "containers"
    ][0].pop("readinessProbe")
    with pytest.raises(jsonschema.ValidationError):
        kubeschema.validate(ds)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "http", "interval": "30 seconds"}]},
    }
    schema = json.loads((CRD_SCHEMAS / "podmonitor-monitoring-v1.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(monitor)


def test_the_prometheus_operator_objects_are_optional(workdir: Path) -> None:
    """The base applies on clusters without the operator's CRDs; the component adds the monitors."""
    assert not {o["kind"] for o in render("base", workdir)} & {"PodMonitor", "ServiceMonitor"}
    with_monitors = render("base+prometheus-operator", workdir)
    pm = find(with_monitors, "PodMonitor", "prober-agent")
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prober",
        "app.kubernetes.io/component": "agent",
    }
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["http"]
    echo_pm = find(with_monitors, "PodMonitor", "prober-echo")
    echo_labels = find(with_monitors, "DaemonSet", "prober-echo")["spec"]["template"]["metadata"]["labels"]
    assert echo_pm["spec"]["selector"]["matchLabels"].items() <= echo_labels.items()
    assert [e["port"] for e in echo_pm["spec"]["podMetricsEndpoints"]] == ["http"]
    sm = find(with_monitors, "ServiceMonitor", "prober-collector")
    collector_svc = find(with_monitors, "Service", "prober-collector")
    assert sm["spec"]["selector"]["matchLabels"].items() <= collector_svc["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in collector_svc["spec"]["ports"]]
    for _, pod in workloads(with_monitors):
        if pod["containers"][0]["name"] in ("agent", "echo"):  # all serve /metrics on "http"
            assert "http" in [p["name"] for p in pod["containers"][0]["ports"]]


# --- security ---------------------------------------------------------------------------


def dockerfile_user() -> tuple[int, int]:
    users = [
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    ]
    uid, gid = users[-1].split(":")
    return int(uid), int(gid)


def test_every_container_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    uid, gid = dockerfile_user()
    seen = 0
    for name, pod in workloads(rendered):
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid), name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in containers(pod):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert csc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert csc.get("privileged", False) is False, (name, c["name"])
            assert csc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])  # and nothing added
            assert "runAsUser" not in csc or csc["runAsUser"] != 0
            seen += 1
    assert seen == 4


BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def pss_violations(pod: dict[str, Any]) -> dict[str, set[str]]:
    """The Pod Security Standards controls a pod spec violates, by level.

    Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/
    (every baseline and restricted control that a Linux pod spec can trip).
    """
    baseline: set[str] = set()
    restricted: set[str] = set()
    sc = pod.get("securityContext", {})
    cs = containers(pod)
    if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        baseline.add("host-namespaces")
    if any(c.get("securityContext", {}).get("privileged") for c in cs):
        baseline.add("privileged")
    adds = {a for c in cs for a in c.get("securityContext", {}).get("capabilities", {}).get("add", [])}
    if adds - BASELINE_CAPABILITIES:
        baseline.add("capabilities")
    if any("hostPath" in v for v in pod.get("volumes", [])):
        baseline.add("host-path-volumes")
    if any(p.get("hostPort", 0) for c in cs for p in c.get("ports", [])):
        baseline.add("host-ports")
    contexts = [sc, *(c.get("securityContext", {}) for c in cs)]
    if any(x.get("appArmorProfile", {}).get("type") == "Unconfined" for x in contexts):
        baseline.add("apparmor")
    if any(
        x.get("seLinuxOptions", {}).get("type", "")
        not in ("", "container_t", "container_init_t", "container_kvm_t")
        or {"user", "role"} & x.get("seLinuxOptions", {}).keys()
        for x in contexts
    ):
        baseline.add("selinux")
    if any(x.get("procMount", "Default") != "Default" for x in contexts):
        baseline.add("proc-mount")
    if any(x.get("seccompProfile", {}).get("type") == "Unconfined" for x in contexts):
        baseline.add("seccomp")
    safe_sysctls = {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }  # fmt: skip
    if {s["name"] for s in sc.get("sysctls", [])} - safe_sysctls:
        baseline.add("sysctls")

    if any(not set(v) - {"name"} <= RESTRICTED_VOLUMES for v in pod.get("volumes", [])):
        restricted.add("volume-types")
    if any(c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False for c in cs):
        restricted.add("privilege-escalation")
    non_root = [c.get("securityContext", {}).get("runAsNonRoot", sc.get("runAsNonRoot")) for c in cs]
    if not all(v is True for v in non_root):
        restricted.add("running-as-non-root")
    if any(x.get("runAsUser") == 0 for x in contexts):
        restricted.add("running-as-non-root-user")
    profiles = [c.get("securityContext", {}).get("seccompProfile", sc.get("seccompProfile", {})) for c in cs]
    if not all(p.get("type") in ("RuntimeDefault", "Localhost") for p in profiles):
        restricted.add("seccomp")
    for c in cs:
        caps = c.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            restricted.add("capabilities")
    return {"baseline": baseline, "restricted": restricted}


def test_pod_security_levels(base: list[dict[str, Any]]) -> None:
    levels = {name: pss_violations(pod) for name, pod in workloads(base)}
    # The pod agents, the echo and the collector meet "restricted"...
    assert levels["prober-agent-pod"] == {"baseline": set(), "restricted": set()}
    assert levels["prober-echo"] == {"baseline": set(), "restricted": set()}
    assert levels["prober-collector"] == {"baseline": set(), "restricted": set()}
    # ...the host agent trips exactly the two baseline controls hostNetwork implies, nothing else.
    assert levels["prober-agent-host"] == {"baseline": {"host-namespaces", "host-ports"}, "restricted": set()}


def test_the_checker_catches_what_it_should(base: list[dict[str, Any]]) -> None:
    pod = json.loads(json.dumps(find(base, "DaemonSet", "prober-agent-pod")["spec"]["template"]["spec"]))
    pod["containers"][0]["securityContext"]["capabilities"] = {"add": ["NET_RAW"]}
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    pod["securityContext"]["runAsNonRoot"] = False
    got = pss_violations(pod)
    assert got["baseline"] == {"host-path-volumes", "capabilities"}  # NET_RAW is not on baseline's list
    assert {"capabilities", "volume-types", "running-as-non-root"} <= got["restricted"]


def test_the_namespace_admits_the_host_agent_and_audits_restricted(base: list[dict[str, Any]]) -> None:
    labels = find(base, "Namespace", "prober")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_rbac_is_read_only_on_exactly_nodes_pods_and_services(rendered: list[dict[str, Any]]) -> None:
    roles = [o for o in rendered if o["kind"] in ("ClusterRole", "Role")]
    assert sorted((r["kind"], r["metadata"]["name"]) for r in roles) == [
        ("ClusterRole", "prober-collector"),
        ("Role", "prober-collector"),
    ]
    grants: set[tuple[str, str, str, str]] = set()
    for role in roles:
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no nonResourceURLs
            if rule["resources"] != ["tokenreviews"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
            grants |= {
                (role["kind"], g, r, v)
                for g in rule["apiGroups"]
                for r in rule["resources"]
                for v in rule["verbs"]
            }
    assert grants == {
        ("ClusterRole", "", "nodes", "list"),
        ("ClusterRole", "", "nodes", "watch"),
        ("ClusterRole", "authentication.k8s.io", "tokenreviews", "create"),  # agents' tokens
        ("Role", "", "pods", "list"),
        ("Role", "", "pods", "watch"),
        ("Role", "", "services", "list"),
        ("Role", "", "services", "watch"),
    }
    bindings = [o for o in rendered if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == 2
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "prober-collector", "namespace": "prober"}
        ]
        assert b["roleRef"]["name"] == "prober-collector"
        assert b["roleRef"]["kind"] == b["kind"].removesuffix("Binding")


def test_agents_and_echoes_have_no_api_access(rendered: list[dict[str, Any]]) -> None:
    for account in ("prober-agent", "prober-echo"):
        sa = find(rendered, "ServiceAccount", account)
        assert sa["automountServiceAccountToken"] is False
        for b in (o for o in rendered if o["kind"].endswith("Binding")):
            assert all(s["name"] != account for s in b["subjects"])
    agents = [(n, p) for n, p in workloads(rendered) if n.startswith(("prober-agent-", "prober-echo"))]
    assert len(agents) == 3
    for name, pod in agents:
        assert pod["serviceAccountName"] == ("prober-echo" if name == "prober-echo" else "prober-agent"), name
        assert pod["automountServiceAccountToken"] is False, name
        assert not any("secret" in v for v in pod.get("volumes", [])), name
        # their one credential: a token for the collector, which the API server refuses
        projected = [v["projected"] for v in pod.get("volumes", []) if "projected" in v]
        if name == "prober-echo":
            assert projected == [], name
            continue
        assert projected == [
            {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": "prober",
                            "expirationSeconds": 3600,
                            "path": "token",
                        }
                    }
                ]
            }
        ], name


# --- agents -----------------------------------------------------------------------------


def test_the_agents_and_echoes_run_on_every_node(base: list[dict[str, Any]]) -> None:
    for name in ("prober-agent-pod", "prober-agent-host", "prober-echo"):
        pod = find(base, "DaemonSet", name)["spec"]["template"]["spec"]
        assert {"operator": "Exists"} in pod["tolerations"], name  # every taint, control plane included
        assert pod["priorityClassName"] == "prober"
    find(base, "PriorityClass", "prober")


def test_host_agent_shares_the_node_network_on_its_own_ports(base: list[dict[str, Any]]) -> None:
    pod_agent = find(base, "DaemonSet", "prober-agent-pod")["spec"]["template"]["spec"]
    host_agent = find(base, "DaemonSet", "prober-agent-host")["spec"]["template"]["spec"]
    assert host_agent["hostNetwork"] is True
    assert host_agent["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "hostNetwork" not in pod_agent
    host_ports = {p["name"]: p for p in host_agent["containers"][0]["ports"]}
    pod_ports = {p["name"]: p for p in pod_agent["containers"][0]["ports"]}
    assert (host_ports["http"]["containerPort"], host_ports["udp"]["containerPort"]) == (18080, 18081)
    assert (pod_ports["http"]["containerPort"], pod_ports["udp"]["containerPort"]) == (8080, 8081)
    assert all(p["hostPort"] == p["containerPort"] for p in host_ports.values())
    assert all("hostPort" not in p for p in pod_ports.values())


@pytest.mark.parametrize("name", ["prober-agent-pod", "prober-agent-host", "prober-echo"])
def test_agent_identity_comes_from_the_downward_api(base: list[dict[str, Any]], name: str) -> None:
    container = find(base, "DaemonSet", name)["spec"]["template"]["spec"]["containers"][0]
    fields = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e
    }
    assert fields == {
        "PROBER_NODE_NAME": "spec.nodeName",
        "PROBER_AGENT_NAME": "metadata.name",
        "PROBER_LISTEN": "status.podIP",
    }


@pytest.mark.parametrize("name", ["prober-agent-pod", "prober-agent-host"])
def test_agent_args_and_env_are_the_agent_command_line(base: list[dict[str, Any]], name: str) -> None:
    ds = find(base, "DaemonSet", name)
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["agent"]
    assert "command" not in container  # the image's entrypoint is `prober`
    env = env_of(container)
    assert set(env) == set(AGENT_FLAGS.values())  # every flag set, and nothing the agent does not read
    kind = ds["spec"]["template"]["metadata"]["labels"]["prober.dev/network"]
    assert env["PROBER_NETWORK"] == kind
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["PROBER_HTTP_PORT"]) == ports["http"]
    assert int(env["PROBER_UDP_PORT"]) == ports["udp"]
    collector = find(base, "Service", "prober-collector")
    assert (
        env["PROBER_COLLECTOR_URL"]
        == f"http://{collector['metadata']['name']}:{collector['spec']['ports'][0]['port']}"
    )


@pytest.mark.parametrize("name", ["prober-agent-pod", "prober-agent-host"])
def test_agent_command_line_parses_with_the_agents_own_parser(base: list[dict[str, Any]], name: str) -> None:
    try:
        parse = importlib.import_module("prober.agent.settings").agent_settings_from
    except (ImportError, AttributeError):
        pytest.skip(
            "prober.agent.settings is not on this branch yet: checked against the fixed flag list above"
        )
    container = find(base, "DaemonSet", name)["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    settings = parse(env, list(container["args"][1:]))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(settings.network) == env["PROBER_NETWORK"]
    assert (settings.node, settings.name, settings.listen) == (
        FIELD_VALUES["spec.nodeName"],
        FIELD_VALUES["metadata.name"],
        FIELD_VALUES["status.podIP"],
    )
    assert (settings.http_port, settings.udp_port) == (ports["http"], ports["udp"])
    assert settings.collector == env["PROBER_COLLECTOR_URL"]


def test_echo_args_and_env_are_the_echo_command_line(base: list[dict[str, Any]]) -> None:
    from prober.agent.settings import echo_settings_from
    from prober.commands.echo import echo

    container = find(base, "DaemonSet", "prober-echo")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["echo"]
    assert "command" not in container
    env = env_of(container)
    assert set(env) == set(ECHO_FLAGS.values())
    declared = {p.opts[0]: p.envvar for p in echo.params if isinstance(p, click.Option) and p.envvar}
    assert declared == ECHO_FLAGS  # the real command reads exactly these variables
    settings = echo_settings_from(env, list(container["args"][1:]))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(settings.network) == env["PROBER_NETWORK"] == "pod"
    assert (settings.node, settings.name, settings.listen) == (
        FIELD_VALUES["spec.nodeName"],
        FIELD_VALUES["metadata.name"],
        FIELD_VALUES["status.podIP"],
    )
    assert (settings.http_port, settings.udp_port) == (ports["http"], ports["udp"])


def test_collector_args_and_env_are_the_collector_command_line(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = find(base, "Deployment", "prober-collector")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "collector"
    seen: list[KubeOptions] = []

    @click.command()
    @click.option("--listen")
    @click.option("--port", type=int, envvar="PROBER_PORT")
    @kube_options
    def collector(listen: str | None, port: int, kube: KubeOptions) -> None:
        seen.append(kube)
        assert port == 9090

    env = env_of(container)
    # the operator credential: the optional Secret's mount
    assert env.pop("PROBER_TOKEN_FILE") == "/var/run/secrets/prober-operator/token"
    # the windows' snapshot, on an emptyDir that outlives a container restart
    assert env.pop("PROBER_STATE_DIR") == "/var/lib/prober"
    pod = find(base, "Deployment", "prober-collector")["spec"]["template"]["spec"]
    [state] = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/prober"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == state["name"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    collector.main(container["args"][1:], standalone_mode=False)
    assert seen == [KubeOptions(enabled=True, namespace="prober")]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env_of(container)["PROBER_PORT"]) == ports["http"]
    try:
        real: click.Command = importlib.import_module("prober.commands.collector").collector
    except ImportError:
        return  # not on this branch yet: checked against the fixed flags and kube_options above
    real.make_context("collector", list(container["args"][1:]))


def test_probes_and_draining(rendered: list[dict[str, Any]]) -> None:
    for name, pod in workloads(rendered):
        c = pod["containers"][0]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        if name.startswith(("prober-agent-", "prober-echo")):
            # preStop keeps the echo up while endpoints and pinglists forget the pod; the
            # process then needs time to fail /readyz and drain before the kill.
            sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert 5 <= sleep <= pod["terminationGracePeriodSeconds"] - 15, name


def test_resources_are_requested_and_memory_is_capped(rendered: list[dict[str, Any]]) -> None:
    for name, pod in workloads(rendered):
        for c in containers(pod):
            res = c["resources"]
            assert {"cpu", "memory"} <= res["requests"].keys(), name
            assert "memory" in res["limits"], name
            assert "cpu" not in res["limits"], name  # throttling would read as probe latency


def test_requests_fit_under_limits(rendered: list[dict[str, Any]]) -> None:
    for name, pod in workloads(rendered):
        for c in containers(pod):
            res = c["resources"]
            assert quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"]), name


def test_each_larger_cluster_component_raises_what_its_size_needs(workdir: Path) -> None:
    """The base holds up to 200 nodes; large-cluster (up to 1,000) raises the collector's
    requests and limit, xlarge-cluster (up to 5,000) the collector's further and the
    agents' (a 5,000-node mesh); the echo is the same at any size."""

    def resources(name: str) -> dict[str, dict[str, Any]]:
        return {n: containers(pod)[0]["resources"] for n, pod in workloads(render(name, workdir))}

    def memory(res: dict[str, Any], kind: str) -> float:
        return quantity(res[kind]["memory"])

    sizes = [
        resources("aws-nlb+prometheus-operator"),
        resources("aws-nlb+large-cluster+prometheus-operator"),
        resources("aws-nlb+xlarge-cluster+prometheus-operator"),
    ]
    assert sizes[0].keys() == sizes[1].keys() == sizes[2].keys()
    steps = [{"prober-collector"}, {"prober-agent-pod", "prober-agent-host", "prober-collector"}]
    for smaller, larger, raised in zip(sizes[:-1], sizes[1:], steps, strict=True):
        for kind in ("limits", "requests"):
            assert {n for n in smaller if memory(larger[n], kind) > memory(smaller[n], kind)} == raised
        assert {n for n in smaller if larger[n] != smaller[n]} == raised
    collector = [size["prober-collector"] for size in sizes]
    # From bench/collector_scale.py at 200, 1,000 and 5,000 nodes (the manifests say so).
    assert [quantity(c["requests"]["cpu"]) for c in collector] == [0.5, 0.6, 1.5]


# --- echo Services and discovery ----------------------------------------------------------


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selector match (the form prober's defaults use)."""
    pairs = [req.split("=", 1) for req in selector.split(",")]
    return all(labels.get(k) == v for k, v in pairs)


def test_discovery_defaults_find_what_the_manifests_deploy(rendered: list[dict[str, Any]]) -> None:
    settings = KubeSettings()
    agents = [
        o
        for o in rendered
        if o["kind"] == "DaemonSet"
        and selects(settings.agent_selector, o["spec"]["template"]["metadata"]["labels"])
    ]
    assert sorted(o["metadata"]["name"] for o in agents) == ["prober-agent-host", "prober-agent-pod"]
    for ds in agents:
        labels = ds["spec"]["template"]["metadata"]["labels"]
        pod = ds["spec"]["template"]["spec"]
        assert labels[settings.network_label] == ("host" if pod.get("hostNetwork") else "pod")
        names = {(p["name"], p["protocol"]) for p in pod["containers"][0]["ports"]}
        assert {(settings.http_port_name, "TCP"), (settings.udp_port_name, "UDP")} <= names
    echo = [
        o
        for o in rendered
        if o["kind"] == "Service" and selects(settings.echo_selector, o["metadata"]["labels"])
    ]
    assert sorted(o["metadata"]["name"] for o in echo) == ["prober-echo", "prober-echo-local"]
    collector = find(rendered, "Deployment", "prober-collector")["spec"]["template"]["metadata"]["labels"]
    assert not selects(settings.agent_selector, collector)  # the collector is not mistaken for an agent
    echo_pods = find(rendered, "DaemonSet", "prober-echo")["spec"]["template"]["metadata"]["labels"]
    assert not selects(settings.agent_selector, echo_pods)  # nor are the echo backends


def test_echo_services_front_the_echo_daemonset(rendered: list[dict[str, Any]]) -> None:
    echo = find(rendered, "DaemonSet", "prober-echo")
    echo_labels = echo["spec"]["template"]["metadata"]["labels"]
    echo_ports = {p["name"] for p in echo["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "hostNetwork" not in echo["spec"]["template"]["spec"]  # a pod-network backend
    agents = [
        find(rendered, "DaemonSet", name)["spec"]["template"]["metadata"]["labels"]
        for name in ("prober-agent-pod", "prober-agent-host")
    ]
    for name in ("prober-echo", "prober-echo-local"):
        svc = find(rendered, "Service", name)
        selector = svc["spec"]["selector"]
        assert selector.items() <= echo_labels.items(), name
        for labels in agents:  # the agents are never Service endpoints
            assert not selector.items() <= labels.items(), name
        assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", "http")]
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= echo_ports
    assert find(rendered, "Service", "prober-echo-local")["spec"]["internalTrafficPolicy"] == "Local"
    # Local as shipped; Cluster where the echo-cluster-policy component says so.
    assert find(rendered, "Service", "prober-echo")["spec"]["externalTrafficPolicy"] in ("Local", "Cluster")


def test_base_echo_is_a_nodeport(base: list[dict[str, Any]]) -> None:
    echo = find(base, "Service", "prober-echo")
    assert echo["spec"]["type"] == "NodePort"
    assert echo["spec"]["externalTrafficPolicy"] == "Local"
    assert "annotations" not in echo["metadata"]


def test_aws_nlb_overlay_makes_an_instance_target_nlb_with_client_ip(nlb: list[dict[str, Any]]) -> None:
    echo = find(nlb, "Service", "prober-echo")
    assert echo["spec"]["type"] == "LoadBalancer"
    assert echo["spec"]["externalTrafficPolicy"] == "Local"
    assert echo["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
        "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes": (
            "preserve_client_ip.enabled=true"
        ),
    }


@pytest.mark.parametrize(
    ("name", "policy", "changed"),
    [
        pytest.param(
            "aws-nlb+matching",
            "Cluster",
            {
                "service.beta.kubernetes.io/aws-load-balancer-attributes": (
                    "load_balancing.cross_zone.enabled=true"
                ),
                "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes": (
                    "preserve_client_ip.enabled=false"
                ),
            },
            id="cluster-cross-zone-no-client-ip",
        ),
        pytest.param(
            "aws-nlb+ip-targets",
            "Local",
            {"service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip"},
            id="ip-targets",
        ),
    ],
)
def test_components_set_the_echo_nlb_as_the_users_services(
    name: str, policy: str, changed: dict[str, str], workdir: Path
) -> None:
    """Each component changes exactly its setting of the echo NLB Service, nothing else."""
    echo = find(render(name, workdir), "Service", "prober-echo")
    before = find(render("aws-nlb", workdir), "Service", "prober-echo")
    assert echo["spec"]["externalTrafficPolicy"] == policy
    assert echo["spec"] == {**before["spec"], "externalTrafficPolicy": policy}
    assert echo["metadata"]["annotations"] == {**before["metadata"]["annotations"], **changed}


def test_the_cluster_policy_component_applies_to_the_base_nodeport(workdir: Path) -> None:
    echo = find(render("base+cluster-policy", workdir), "Service", "prober-echo")
    assert (echo["spec"]["type"], echo["spec"]["externalTrafficPolicy"]) == ("NodePort", "Cluster")
    assert (
        find(render("base", workdir), "Service", "prober-echo-local")["spec"]
        == find(render("base+cluster-policy", workdir), "Service", "prober-echo-local")["spec"]
    )


def test_every_echo_setting_component_is_rendered_and_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for c in ECHO_SETTINGS:
        assert (DEPLOY / "components" / c / "kustomization.yaml").is_file()
        assert any(c in [p.name for p in comps] for _, comps in KUSTOMIZATIONS.values()), c
        assert f"components/{c}" in readme, c


def test_network_policies(rendered: list[dict[str, Any]]) -> None:
    for name in ("prober-agent", "prober-echo"):
        policy = find(rendered, "NetworkPolicy", name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        target = find(rendered, "DaemonSet", "prober-agent-pod" if name == "prober-agent" else name)
        labels = target["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), name
        (rule,) = policy["spec"]["ingress"]
        assert {"namespaceSelector": {}} in rule["from"]  # anywhere in the cluster
        cidrs = {p["ipBlock"]["cidr"] for p in rule["from"] if "ipBlock" in p}
        assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= cidrs  # node and NLB client addresses
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}, {"port": "udp", "protocol": "UDP"}]
    collector = find(rendered, "NetworkPolicy", "prober-collector")
    (rule,) = collector["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    sources = rule["from"]
    assert {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "prober", "app.kubernetes.io/component": "agent"}
        }
    } in sources
    # scrapes from a namespace named by a label no pod can forge; no selector of any
    # namespace with a pod label (a pod anywhere could label itself so)
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources
    assert not any("namespaceSelector" in p and "podSelector" in p for p in sources)
    assert cidrs <= {p["ipBlock"]["cidr"] for p in sources if "ipBlock" in p}  # host agents post from nodes


# --- image ------------------------------------------------------------------------------


def test_manifests_use_the_project_image(rendered: list[dict[str, Any]]) -> None:
    images = {c["image"] for _, pod in workloads(rendered) for c in containers(pod)}
    assert images == {f"prober:{prober.__version__}"}


def test_dockerfile() -> None:
    lines = [
        line.strip()
        for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    # requirements (the dependency list alone, so its layer survives code changes), build, final
    assert [stage.split()[-1] for stage in stages[:-1]] == ["requirements", "build"]
    assert len({stage.split()[1] for stage in stages}) == 1  # the venv's python: one base
    assert "COPY --from=requirements /src/requirements.txt /src/requirements.txt" in lines
    final = lines[lines.index(stages[-1]) :]
    assert any(line.startswith("COPY --from=build /opt/prober /opt/prober") for line in final)
    assert not any(
        line.startswith(("RUN pip", "RUN apt", "ADD ")) for line in final
    )  # nothing built in the final stage
    assert dockerfile_user()[0] >= 1000
    assert [line for line in final if line.startswith("ENTRYPOINT")] == ['ENTRYPOINT ["prober"]']
    assert any(
        "pip wheel" in line and " . " in line for line in lines
    )  # prober's wheel, built from this source tree
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    assert {"!pyproject.toml", "!README.md", "!prober/"} <= set(ignore)
    assert PROJECT["scripts"]["prober"] == "prober.cli:main"
