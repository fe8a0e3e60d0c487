"""How a kubelet runs one of prober's containers, read from the rendered manifests.

Pure: from a workload object of ``kubectl kustomize deploy/base`` (a DaemonSet or
Deployment) and the values the downward API fills in (node name, pod name,
namespace, pod and host address) to a :class:`ContainerRun`, and from that to the
``podman run`` arguments that reproduce it: user and group, read-only root,
capabilities, no-new-privileges, seccomp, the args and env, the emptyDir and
service-account mounts, the memory limit, cluster DNS. Nothing here is a second copy
of the manifests: change them and the image test runs what they now say.

Every field is either reproduced, or listed in :data:`NOT_REPRODUCED` with the
reason it does not change how the container runs (scheduling, probes the lab does
itself, the preStop hook); anything else is a :class:`PodSpecError`. A manifest
change the image test cannot reproduce fails loudly instead of being dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SERVICE_ACCOUNT_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

#: Fields that do not change how the container runs on its node, and why.
NOT_REPRODUCED: Final[Mapping[str, str]] = {
    "pod.serviceAccountName": "only the API server reads it (RBAC); the token mount is reproduced",
    "pod.priorityClassName": "scheduling and preemption",
    "pod.nodeSelector": "scheduling",
    "pod.tolerations": "scheduling",
    "pod.affinity": "scheduling",
    "pod.enableServiceLinks": "false: no Service environment variables are added (none are)",
    "container.name": "the container is named after the pod",
    "container.imagePullPolicy": "the image is built locally; nothing is pulled",
    "container.ports": "the process binds them itself; the lab's API server publishes them",
    "container.livenessProbe": "the lab does not restart containers",
    "container.readinessProbe": "the lab polls it (ContainerRun.readiness)",
    "container.lifecycle": "preStop runs only when a pod is deleted by the API",
    "container.resources.requests.memory": "scheduling",
}

_POD_KEYS: Final = {
    "containers",
    "securityContext",
    "volumes",
    "hostNetwork",
    "dnsPolicy",
    "automountServiceAccountToken",
    "terminationGracePeriodSeconds",
}
_CONTAINER_KEYS: Final = {"image", "command", "args", "env", "securityContext", "volumeMounts", "resources"}
_POD_SECURITY_KEYS: Final = {"runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile"}
_CONTAINER_SECURITY_KEYS: Final = {
    "allowPrivilegeEscalation",
    "privileged",
    "readOnlyRootFilesystem",
    "capabilities",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "seccompProfile",
}
#: Downward API fields the lab can fill in.
FIELD_PATHS: Final = (
    "spec.nodeName",
    "metadata.name",
    "metadata.namespace",
    "status.podIP",
    "status.hostIP",
    "spec.serviceAccountName",
)


class PodSpecError(ValueError):
    """The manifest asks for something the image test cannot reproduce."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodFields:
    """What the API server and the kubelet fill in for one pod."""

    node_name: str
    pod_name: str
    namespace: str
    pod_ip: str
    host_ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EmptyDir:
    name: str
    path: str
    size_limit: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectedToken:
    """A projected service-account token volume (``serviceAccountToken`` sources only)."""

    name: str
    path: str  # where it is mounted
    file: str  # the token's file name in it
    audience: str
    expiration_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRun:
    """One container as its kubelet would run it."""

    workload: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    user: int
    group: int
    read_only_root: bool
    cap_drop: tuple[str, ...]
    cap_add: tuple[str, ...]
    no_new_privileges: bool
    privileged: bool
    #: ``RuntimeDefault`` (the runtime's default profile) or ``Unconfined``.
    seccomp: str
    host_network: bool
    dns_policy: str
    empty_dirs: tuple[EmptyDir, ...]
    #: The service account token, CA and namespace at :data:`SERVICE_ACCOUNT_PATH`.
    service_account_token: bool
    memory_limit_bytes: int | None
    #: cgroup v1 cpu.shares from the CPU request, as the kubelet computes them.
    cpu_shares: int | None
    #: The readiness probe's HTTP path and port.
    readiness: tuple[str, int] | None
    stop_timeout_s: int
    hostname: str
    #: Projected service-account tokens (a token the lab's API server reviews); an
    #: optional Secret the lab does not create is not mounted, as the kubelet leaves it empty.
    tokens: tuple[ProjectedToken, ...] = ()


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS: Final = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity (``128Mi``, ``20m``, ``1``) as a number."""
    m = _QUANTITY.match(str(text))
    if m is None:
        raise PodSpecError(f"{text!r} is not a resource quantity this test understands")
    return float(m.group(1)) * _FACTORS[m.group(2)]


def _check_keys(obj: Mapping[str, Any], allowed: set[str], where: str, prefix: str) -> None:
    unknown = sorted(k for k in obj if k not in allowed and f"{prefix}.{k}" not in NOT_REPRODUCED)
    if unknown:
        raise PodSpecError(f"{where}: {', '.join(unknown)}: not reproduced by the image test; teach it")


def _field_value(path: str, fields: PodFields, service_account: str) -> str:
    values = {
        "spec.nodeName": fields.node_name,
        "metadata.name": fields.pod_name,
        "metadata.namespace": fields.namespace,
        "status.podIP": fields.pod_ip,
        "status.hostIP": fields.host_ip,
        "spec.serviceAccountName": service_account,
    }
    if path not in values:
        raise PodSpecError(f"env fieldRef {path!r}: the image test fills in only {', '.join(FIELD_PATHS)}")
    return values[path]


def _env(
    container: Mapping[str, Any], fields: PodFields, service_account: str, where: str
) -> list[tuple[str, str]]:
    out = []
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            out.append((name, str(var["value"])))
            continue
        ref = var.get("valueFrom", {})
        if set(ref) != {"fieldRef"}:
            raise PodSpecError(f"{where}: env {name}: only value and valueFrom.fieldRef are reproduced")
        out.append((name, _field_value(ref["fieldRef"]["fieldPath"], fields, service_account)))
    return out


def _readiness(container: Mapping[str, Any], where: str) -> tuple[str, int] | None:
    probe = container.get("readinessProbe")
    if probe is None:
        return None
    get = probe.get("httpGet")
    if get is None:
        raise PodSpecError(f"{where}: only an httpGet readiness probe is reproduced")
    port = get["port"]
    if isinstance(port, str):
        named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
        if not named:
            raise PodSpecError(f"{where}: readiness probe port {port!r} is no container port")
        port = named[0]
    return str(get.get("path", "/")), int(port)


def container_run(workload: Mapping[str, Any], fields: PodFields) -> ContainerRun:
    """The one container of ``workload`` (a rendered DaemonSet or Deployment) in the pod ``fields`` name."""
    name = workload["metadata"]["name"]
    where = f"{workload['kind']} {name}"
    pod = workload["spec"]["template"]["spec"]
    _check_keys(pod, _POD_KEYS, where, "pod")
    if len(pod["containers"]) != 1:
        raise PodSpecError(f"{where}: {len(pod['containers'])} containers; the image test runs exactly one")
    c = pod["containers"][0]
    _check_keys(c, _CONTAINER_KEYS, where, "container")
    pod_sc = pod.get("securityContext", {})
    c_sc = c.get("securityContext", {})
    _check_keys(pod_sc, _POD_SECURITY_KEYS, f"{where} pod securityContext", "podSecurityContext")
    _check_keys(c_sc, _CONTAINER_SECURITY_KEYS, f"{where} securityContext", "securityContext")

    def setting(key: str, default: Any = None) -> Any:
        return c_sc.get(key, pod_sc.get(key, default))

    user, group = setting("runAsUser"), setting("runAsGroup")
    if user is None or group is None:
        raise PodSpecError(f"{where}: no runAsUser/runAsGroup; the image test needs the numbers")
    if setting("runAsNonRoot", default=False) and int(user) == 0:
        raise PodSpecError(f"{where}: runAsNonRoot with runAsUser 0: the kubelet refuses to start it")
    seccomp = (setting("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp not in ("RuntimeDefault", "Unconfined"):
        raise PodSpecError(
            f"{where}: seccompProfile {seccomp}: only RuntimeDefault and Unconfined are reproduced"
        )
    caps = c_sc.get("capabilities", {})
    _check_keys(caps, {"drop", "add"}, f"{where} capabilities", "capabilities")

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    empty_dirs = []
    tokens = []
    for mount in c.get("volumeMounts", []):
        _check_keys(mount, {"name", "mountPath", "readOnly"}, f"{where} volumeMount", "volumeMount")
        volume = volumes.get(mount["name"])
        if volume is not None and set(volume) - {"name"} == {"projected"}:
            tokens.append(_projected_token(volume, mount, where))
            continue
        if volume is not None and set(volume) - {"name"} == {"secret"}:
            if not volume["secret"].get("optional", False):
                raise PodSpecError(f"{where}: secret volume {mount['name']!r}: only optional Secrets "
                                   "(which the lab does not create) are reproduced")  # fmt: skip
            continue
        if volume is None or set(volume) - {"name"} != {"emptyDir"}:
            raise PodSpecError(f"{where}: volume {mount['name']!r}: only emptyDir volumes are reproduced")
        medium = (volume["emptyDir"] or {}).get("medium", "")
        if medium:
            raise PodSpecError(f"{where}: emptyDir medium {medium!r}: only the node's disk is reproduced")
        size = str((volume["emptyDir"] or {}).get("sizeLimit", ""))
        empty_dirs.append(EmptyDir(name=mount["name"], path=mount["mountPath"], size_limit=size))

    resources = c.get("resources", {})
    _check_keys(resources, {"limits", "requests"}, f"{where} resources", "resources")
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    _check_keys(limits, {"memory", "cpu"}, f"{where} resources.limits", "limits")
    _check_keys(requests, {"cpu"}, f"{where} resources.requests", "container.resources.requests")
    if "cpu" in limits:
        raise PodSpecError(f"{where}: a CPU limit (CFS quota) is not reproduced by the image test")
    memory = int(quantity(limits["memory"])) if "memory" in limits else None
    # The kubelet's cpu.shares: milli-CPU * 1024 / 1000, at least 2.
    shares = max(2, int(quantity(requests["cpu"]) * 1024)) if "cpu" in requests else None

    host_network = bool(pod.get("hostNetwork", False))
    service_account = str(pod.get("serviceAccountName", "default"))
    return ContainerRun(
        workload=name,
        image=str(c["image"]),
        command=tuple(c["command"]) if "command" in c else None,
        args=tuple(str(a) for a in c.get("args", [])),
        env=tuple(_env(c, fields, service_account, where)),
        user=int(user),
        group=int(group),
        read_only_root=bool(c_sc.get("readOnlyRootFilesystem", False)),
        cap_drop=tuple(caps.get("drop", ())),
        cap_add=tuple(caps.get("add", ())),
        no_new_privileges=not c_sc.get("allowPrivilegeEscalation", True),
        privileged=bool(c_sc.get("privileged", False)),
        seccomp=seccomp,
        host_network=host_network,
        dns_policy=str(pod.get("dnsPolicy", "ClusterFirst")),
        empty_dirs=tuple(empty_dirs),
        service_account_token=bool(pod.get("automountServiceAccountToken", True)),
        memory_limit_bytes=memory,
        cpu_shares=shares,
        readiness=_readiness(c, where),
        stop_timeout_s=int(pod.get("terminationGracePeriodSeconds", 30)),
        hostname=fields.node_name if host_network else fields.pod_name,
        tokens=tuple(tokens),
    )


def _projected_token(volume: Mapping[str, Any], mount: Mapping[str, Any], where: str) -> ProjectedToken:
    _check_keys(volume["projected"], {"sources"}, f"{where} projected volume", "projected")
    [source] = volume["projected"]["sources"]
    if set(source) != {"serviceAccountToken"}:
        raise PodSpecError(
            f"{where}: projected volume {mount['name']!r}: only a serviceAccountToken is reproduced"
        )
    token = source["serviceAccountToken"]
    _check_keys(token, {"audience", "expirationSeconds", "path"}, f"{where} serviceAccountToken", "token")
    return ProjectedToken(
        name=str(mount["name"]),
        path=str(mount["mountPath"]),
        file=str(token["path"]),
        audience=str(token.get("audience", "")),
        expiration_s=int(token.get("expirationSeconds", 3600)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterDns:
    """What the kubelet writes into a ClusterFirst pod's resolv.conf."""

    nameserver: str
    domain: str = "cluster.local"
    ndots: int = 5

    def searches(self, namespace: str) -> tuple[str, ...]:
        return (f"{namespace}.svc.{self.domain}", f"svc.{self.domain}", self.domain)


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """Where and how this machine runs the container (nothing here comes from the manifest)."""

    netns: Path
    #: emptyDir name -> the directory on the "node" that backs it.
    empty_dirs: Mapping[str, Path]
    #: The directory holding ``token``, ``ca.crt`` and ``namespace``.
    service_account_dir: Path | None
    #: ``KUBERNETES_SERVICE_HOST``/``_PORT``, set in every container as the kubelet does.
    api_host: str
    api_port: int
    #: projected token volume name -> the directory on the "node" that holds its token.
    tokens: Mapping[str, Path] | None = None
    #: ``--ulimit`` values the runtime can set on this machine.
    ulimits: Sequence[str] = ()
    runtime: str | None = None
    labels: Mapping[str, str] | None = None


def podman_run_argv(
    run: ContainerRun, fields: PodFields, *, name: str, host: Host, dns: ClusterDns
) -> list[str]:
    """``podman run`` arguments that run ``run`` as its kubelet would, in ``host.netns``."""
    argv = ["podman"]
    if host.runtime:
        argv += ["--runtime", host.runtime]
    argv += ["run", "--rm", "--replace", "--pull", "never", "--name", name]
    argv += ["--network", f"ns:{host.netns}", "--hostname", run.hostname]
    argv += ["--user", f"{run.user}:{run.group}"]
    if run.read_only_root:
        # podman would add writable tmpfs on /tmp, /run and /var/tmp; a kubelet does not.
        argv += ["--read-only", "--read-only-tmpfs=false"]
    argv += [f"--cap-drop={c}" for c in run.cap_drop] + [f"--cap-add={c}" for c in run.cap_add]
    if run.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    if run.privileged:
        argv += ["--privileged"]
    if run.seccomp == "Unconfined":
        argv += ["--security-opt", "seccomp=unconfined"]
    if run.memory_limit_bytes is not None:
        argv += ["--memory", str(run.memory_limit_bytes), "--memory-swap", str(run.memory_limit_bytes)]
    if run.cpu_shares is not None:
        argv += ["--cpu-shares", str(run.cpu_shares)]
    if run.dns_policy == "ClusterFirstWithHostNet" or (
        run.dns_policy == "ClusterFirst" and not run.host_network
    ):
        argv += ["--dns", dns.nameserver, "--dns-option", f"ndots:{dns.ndots}"]
        argv += [f"--dns-search={d}" for d in dns.searches(fields.namespace)]
    elif run.dns_policy not in ("ClusterFirst", "Default"):
        raise PodSpecError(f"{run.workload}: dnsPolicy {run.dns_policy}: not reproduced by the image test")
    # The kubelet sets these in every container, whatever enableServiceLinks says.
    env = [
        ("KUBERNETES_SERVICE_HOST", host.api_host),
        ("KUBERNETES_SERVICE_PORT", str(host.api_port)),
        *run.env,
    ]
    for key, value in env:
        argv += ["--env", f"{key}={value}"]
    for d in run.empty_dirs:
        argv += ["--mount", f"type=bind,source={host.empty_dirs[d.name]},destination={d.path}"]
    if run.service_account_token:
        if host.service_account_dir is None:
            raise PodSpecError(f"{run.workload}: mounts a service account token, and the lab has none")
        argv += [
            "--mount",
            f"type=bind,source={host.service_account_dir},destination={SERVICE_ACCOUNT_PATH},ro=true",
        ]
    for t in run.tokens:
        if host.tokens is None or t.name not in host.tokens:
            raise PodSpecError(f"{run.workload}: mounts the projected token {t.name!r}, and the lab has none")
        argv += ["--mount", f"type=bind,source={host.tokens[t.name]},destination={t.path},ro=true"]
    argv += ["--stop-timeout", str(run.stop_timeout_s)]
    argv += [f"--ulimit={u}" for u in host.ulimits]
    argv += [f"--label={k}={v}" for k, v in (host.labels or {}).items()]
    if run.command is not None:
        argv += ["--entrypoint", json.dumps(list(run.command))]
    return [*argv, run.image, *run.args]
