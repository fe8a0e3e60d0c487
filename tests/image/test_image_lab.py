"""The image users deploy, built from the Dockerfile and run as the manifests run it, in the lab.

``scripts/build-image`` builds the Dockerfile with buildah on a locally made Debian
base (a second run in the same CI run reuses every layer). Then a 3-node bridge lab
starts every prober process as a container of that image (:mod:`tests.image.kubelet`):
the echo and both agents per node and the collector, each with the securityContext,
args, env, volumes and memory limit of its DaemonSet or Deployment in
``deploy/base``, in the lab's network namespaces. The collector runs
``collector --kubernetes`` against the lab's API server, at the production schedule.

Checked: every process runs as 65532:65532 with no capabilities, no-new-privileges,
seccomp and a read-only root, and is the image's prober; the containerised collector
discovers the six agents, reports no finding while the lab is clean, and names
``bridge-netfilter`` on node-b, and nothing else, once the fault is on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prober_lab import netns, runtime
from prober_lab.faults import parse_fault
from prober_lab.plan import Cni, LabSpec, Plan, build_plan
from tests.image.kubelet import ROOT, ContainerLauncher, containers

# The first build on a machine makes the base and installs the dependencies: minutes.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

PREFIX = os.environ.get("PROBER_LAB_TEST_PREFIX", "plabt") + "i"
#: The collector's default warm-up (30 s after a pod turns Ready) plus two 10 s rounds.
DISCOVER_S = 90.0
#: bench/lab_time_to_detect.py: bridge-netfilter is named 16 s after it starts at the
#: production schedule; the longer window's evidence may take a few rounds more.
DETECT_S = 120.0


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the image test needs root (buildah, podman, network namespaces); run as root or in CI"
    missing = [
        t for t in ("buildah", "podman", "mmdebstrap", "kubectl", "openssl") if shutil.which(t) is None
    ]
    if missing:
        return f"the image test needs {', '.join(missing)}: run scripts/install"
    try:
        netns.check_can_run()
    except netns.LabError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def image() -> str:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    log = Path("/var/tmp") / f"prober-build-image-{PREFIX}.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [str(ROOT / "scripts" / "build-image")], stdout=subprocess.PIPE, stderr=out, check=False
        )
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-image failed (status {proc.returncode}):\n{log.read_text()[-3000:]}")
    return proc.stdout.decode().strip().splitlines()[-1]


_failed: list[str] = []


@pytest.fixture(scope="module")
def lab(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Plan, ContainerLauncher]]:
    if _failed:  # a module fixture that failed is set up again for each test: once is enough
        pytest.fail(f"the containerised lab did not start: {_failed[0]}")
    runtime.down(PREFIX)
    spec = LabSpec(nodes=3, cni=Cni.BRIDGE, prefix=PREFIX)
    launcher = ContainerLauncher(build_plan(spec), tmp_path_factory.mktemp("pods"))
    try:
        # podman starts ten containers one after the other, each importing prober: on a
        # loaded 2-core machine that takes minutes.
        state = runtime.up(spec, [], runtime.UpOptions(launcher=launcher, ready_timeout_s=600.0))
        images = {run.image for _, run in launcher.runs.values()}
        assert images == {image.removeprefix("localhost/")}, (
            f"the manifests run {images}, the build made {image}"
        )
        launcher.api.mark_ready()
    except Exception as exc:
        _failed.append(str(exc))
        _take_down(launcher)
        raise
    try:
        yield state.plan, launcher
    finally:
        _take_down(launcher)


def _take_down(launcher: ContainerLauncher) -> None:
    launcher.close()
    runtime.down(PREFIX)
    assert containers(PREFIX) == [], "containers of the image test left behind"
    assert netns.namespaces_with_prefix(PREFIX) == []
    deadline = time.monotonic() + 10.0  # podman's own clean-up processes exit after their container
    while runtime.lab_pids(PREFIX) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert runtime.lab_pids(PREFIX) == []


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _root_mount_options(pid: int) -> set[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def test_every_process_runs_as_the_manifests_say(lab: tuple[Plan, ContainerLauncher]) -> None:
    plan, launcher = lab
    assert sorted(launcher.runs) == sorted(
        [
            "collector",
            *(f"echo-{x}" for x in "abc"),
            *(f"agent-{k}-{x}" for k in ("pod", "host") for x in "abc"),
        ]
    )
    for name in launcher.runs:
        pid = launcher.pid(name)
        status = _status(pid)
        assert status["Uid"].split() == ["65532"] * 4, (name, status["Uid"])
        assert status["Gid"].split() == ["65532"] * 4, (name, status["Gid"])
        assert status["Groups"].split() == ["65532"], (name, status["Groups"])  # no other group
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == 0, (name, caps, status[caps])
        assert status["NoNewPrivs"] == "1", name
        assert status["Seccomp"] == "2", name  # a filter: the runtime's default profile
        assert "ro" in _root_mount_options(pid), name
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[0] == b"/opt/prober/bin/python", (name, argv)  # the image's prober, not this tree's
        assert argv[1] == b"/opt/prober/bin/prober", (name, argv)
    pod_agent, host_agent = plan.node("node-a").agent, plan.node("node-a")
    assert launcher.runs["agent-host-a"][1].host_network
    assert not launcher.runs["agent-pod-a"][1].host_network
    # The host agent answers on the manifest's host port, the pod agent on the pod's.
    assert runtime.http_get(host_agent.ns, host_agent.ip, 18080, "/readyz")[0] == 200
    assert runtime.http_get(pod_agent.ns, pod_agent.ip, 8080, "/readyz")[0] == 200


def _findings(plan: Plan) -> set[tuple[str, tuple[str, ...]]]:
    body = json.loads(runtime.collector_get(plan, "/api/v1/findings", timeout_s=30.0))
    return {(f["kind"], tuple(f["nodes"])) for f in body["findings"]}


def _probed_agents(plan: Plan) -> float:
    text = runtime.collector_get(plan, "/metrics").decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "prober_inventory_agent_states"
        for s in family.samples
        if s.labels.get("state") == "probed"
    )


def _wait(what: str, check: Callable[[], bool], limit_s: float, last: Callable[[], object]) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if check():
            return time.monotonic() - start
        time.sleep(2.0)
    pytest.fail(f"{what}: not within {limit_s:g} s (last: {last()})")


def test_the_containerised_collector_names_the_lab_fault(lab: tuple[Plan, ContainerLauncher]) -> None:
    plan, _ = lab
    _wait(
        "the collector probes all six agents",
        lambda: _probed_agents(plan) == 6,
        DISCOVER_S,
        lambda: _probed_agents(plan),
    )
    # A clean mesh: nothing to report (a first round may still be settling).
    _wait(
        "no findings while the lab is clean", lambda: _findings(plan) == set(), 30.0, lambda: _findings(plan)
    )
    wanted = {("bridge-netfilter", ("node-b",))}
    runtime.set_faults(plan.prefix, [parse_fault("bridge-netfilter@node-b")])
    try:
        _wait(
            "bridge-netfilter on node-b, and nothing else",
            lambda: _findings(plan) == wanted,
            DETECT_S,
            lambda: _findings(plan),
        )
    finally:
        runtime.set_faults(plan.prefix, [])


_DISTRIBUTIONS = r"""
import importlib.metadata as md, json, re
installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d for d in md.distributions()}
need, todo = set(), ["prober"]
while todo:
    name = todo.pop()
    if name in need:
        continue
    need.add(name)
    for req in installed[name].requires or []:
        if "extra ==" in req:
            continue
        dep = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", req).group(0)).lower()
        if dep in installed:  # a requirement under a marker that does not hold here is absent
            todo.append(dep)
print(json.dumps({"installed": sorted(installed), "needed": sorted(need)}))
"""


def test_the_image_holds_prober_and_its_dependencies_only(image: str) -> None:
    """No dev tools, no build tools, no pip: what prober needs to run, and the Python base."""
    from tests.image.kubelet import oci_runtime, ulimits
    from tests.integration.test_cli_lab_missing import MISSING_LAB

    pre = ["--runtime", r] if (r := oci_runtime()) else []
    argv = [
        *("podman", *pre, "run", "--rm", "--network", "none", "--read-only", "--user", "65532:65532"),
        *("--cap-drop=ALL", *(f"--ulimit={u}" for u in ulimits())),
        *("--entrypoint", "/opt/prober/bin/python", image, "-c", _DISTRIBUTIONS),
    ]
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert "prober" in out["installed"]
    assert set(out["installed"]) - set(out["needed"]) == set(), "installed, and prober does not need them"
    for dev in ("pytest", "ruff", "mypy", "hatchling", "playwright", "pip", "setuptools", "prober-lab"):
        assert dev not in out["installed"]
    # The lab is its own distribution: the image's `prober lab` says so in one line.
    lab = subprocess.run(
        [*argv[: argv.index("--entrypoint")], image, "lab", "--help"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert (lab.returncode, lab.stdout) == (2, "")
    assert lab.stderr.strip().splitlines() == [MISSING_LAB]
