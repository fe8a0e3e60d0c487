"""A running lab: its state file, its processes, and the operations on it (up, fault, down).

``up`` builds the network (:mod:`prober_lab.cluster`), starts the workloads (kube-dns
and the external server in :mod:`prober_lab.fabric`, the real ``prober echo`` in every
echo pod) and, unless asked not to, the real prober collector and one agent per node
per network, all with ``ip netns exec`` and ``[sys.executable, "-m", ...]`` so they run
this source tree, and waits until every one of them answers ``/readyz``. It records everything in
``/run/<prefix>/state.json`` so ``status``, ``fault`` and ``down`` find the lab from
another shell. ``down`` does not need the state file: it removes every namespace
with the prefix and every process inside them.

How the prober processes are started is a seam: each is a :class:`Workload` (what a
pod of the DaemonSet or Deployment would be on that node) handed to a
:class:`Launcher`. The default one runs this source tree with ``ip netns exec``; the
image tests pass one that runs the built container image in the same namespaces.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

import msgspec

import prober
from prober.inventory import TrafficPolicy
from prober.model import SrcKind
from prober.settings import RETENTION, WINDOW
from prober_lab import cluster, netns
from prober_lab.faults import Fault, check_faults, parse_fault
from prober_lab.inventory import agent_name, inventory_yaml, lab_inventory
from prober_lab.plan import (
    COLLECTOR_IP,
    COLLECTOR_PORT,
    DEFAULT_TRAFFIC_POLICY,
    ECHO_HTTP_PORT,
    ECHO_UDP_PORT,
    LabSpec,
    Plan,
    build_plan,
)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class LabState(msgspec.Struct, kw_only=True):
    nodes: int
    cni: str
    prefix: str
    zones: int | None = None
    external_traffic_policy: TrafficPolicy = DEFAULT_TRAFFIC_POLICY
    faults: list[str] = msgspec.field(default_factory=list)
    #: When the current fault set was put in force (Unix time): reports start there.
    faults_since: float = 0.0
    pids: dict[str, int] = msgspec.field(default_factory=dict)
    agents: bool = False
    interval_s: float = 2.0
    timeout_s: float = 0.9
    budget: float = 50.0
    started_at: float = 0.0
    setup_s: float = 0.0
    #: Seconds from the start of ``up`` until every process answered ``/readyz``.
    ready_s: float = 0.0

    @property
    def spec(self) -> LabSpec:
        from prober_lab.plan import Cni  # noqa: PLC0415 - avoid a cycle in the type's namespace

        return LabSpec(
            nodes=self.nodes,
            cni=Cni(self.cni),
            prefix=self.prefix,
            zones=self.zones,
            external_traffic_policy=self.external_traffic_policy,
        )

    @property
    def plan(self) -> Plan:
        return build_plan(self.spec)

    @property
    def active_faults(self) -> list[Fault]:
        return [parse_fault(f) for f in self.faults]


def state_dir(prefix: str) -> Path:
    return Path("/run") / prefix


def state_path(prefix: str) -> Path:
    return state_dir(prefix) / "state.json"


def load_state(prefix: str) -> LabState | None:
    try:
        return msgspec.json.decode(state_path(prefix).read_bytes(), type=LabState)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise netns.LabError(
            f"{state_path(prefix)} is damaged; run `prober lab down` to clean up the lab"
        ) from None


def save_state(state: LabState) -> None:
    path = state_path(state.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(state))
    tmp.replace(path)


def require_state(prefix: str) -> LabState:
    state = load_state(prefix)
    if state is None or not netns.namespaces_with_prefix(prefix):
        raise netns.LabError(f"no lab is running (prefix {prefix!r}); start one with `prober lab up`")
    return state


def source_root() -> Path:
    """The directory that holds the ``prober`` package this process runs."""
    return Path(prober.__file__).resolve().parent.parent


#: Set in the environment of every process a lab starts: how ``down`` and the tests
#: recognise the lab's processes even after their namespace is gone.
LAB_ENV = "PROBER_LAB"


def _env(prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env[LAB_ENV] = prefix
    root = str(source_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


#: Children this process started, kept so ``down`` can reap them (no zombies, no
#: "still running" warnings when a Popen object is collected).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    prefix: str, argv: Sequence[str], log_path: Path, *, pipe_stdout: bool = False
) -> subprocess.Popen[bytes]:
    """Start one of the lab's processes: marked with :data:`LAB_ENV`, reaped by ``down``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=log,
            env=_env(prefix),
            start_new_session=True,  # a Ctrl-C in the shell reaches `prober lab`, which tears down
            cwd=str(source_root()),
        )
    _children[proc.pid] = proc
    return proc


def _spawn(
    ns: str, argv: Sequence[str], log_path: Path, *, pipe_stdout: bool = False
) -> subprocess.Popen[bytes]:
    prefix = ns.partition("-")[0]
    return spawn(prefix, ["ip", "netns", "exec", ns, *argv], log_path, pipe_stdout=pipe_stdout)


Component = Literal["echo", "agent", "collector"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """One prober process of the lab: what one pod of prober's workloads is on a node."""

    #: The lab's name for it (``echo-a``, ``agent-pod-a``, ``collector``): its key in
    #: :attr:`LabState.pids` and its log file's name.
    name: str
    component: Component
    #: The network namespace it runs in: the pod's, or the node's for a host agent.
    ns: str
    #: The node it runs on; empty for the collector.
    node: str = ""
    #: The agents' and the echo's network kind.
    network: SrcKind | None = None
    #: The pod's address (the node's for a host agent; the collector's for the collector).
    address: str
    #: The ``prober`` arguments the lab's own processes run with.
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where one of the lab's processes answers ``/readyz``."""

    name: str
    ns: str
    host: str
    port: int


class Launcher(Protocol):
    """Starts one workload; returns its process (killed by ``down``) and its ``/readyz``."""

    def __call__(self, workload: Workload, log_path: Path) -> tuple[subprocess.Popen[bytes], Endpoint]: ...


def process_launcher(workload: Workload, log_path: Path) -> tuple[subprocess.Popen[bytes], Endpoint]:
    """The lab's own way: ``python -m prober ARGV`` from this source tree, in the namespace."""
    proc = _spawn(workload.ns, [sys.executable, "-m", "prober", *workload.argv], log_path)
    host, port = workload.address, ECHO_HTTP_PORT
    if workload.component == "collector":
        host, port = "127.0.0.1", COLLECTOR_PORT
    return proc, Endpoint(name=workload.name, ns=workload.ns, host=host, port=port)


def agents_available() -> bool:
    import importlib.util  # noqa: PLC0415

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("prober.commands.agent", "prober.commands.collector")
    )


#: The lab's probe schedule. A 2 s round gives every pair and shared target a probe
#: from every agent each round (3 nodes: about 20 probes per agent per round), so a
#: fault has the samples diagnosis needs (min_samples 6 per test, at 99% confidence)
#: within a few rounds. The 0.9 s timeout turns a lost SYN into a failure instead of a
#: 1 s retransmit; diagnosis counts both as impaired (RETRANSMIT_BINS), so the rules
#: read the same loss either way. The budget (50 probes/s per agent) is never the
#: limit in a lab of up to 16 nodes, so the schedule covers every pair each round.
LAB_INTERVAL_S: Final = 1.0
LAB_TIMEOUT_S: Final = 0.9
LAB_BUDGET: Final = 50.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UpOptions:
    agents: bool = True
    interval_s: float = LAB_INTERVAL_S
    timeout_s: float = LAB_TIMEOUT_S
    window_s: float = WINDOW.default
    budget: float = LAB_BUDGET
    #: How long to wait for every process to answer ``/readyz``.
    ready_timeout_s: float = 30.0
    #: Starts the echo pods, the collector and the agents (the default: this source tree).
    launcher: Launcher = process_launcher


def up(spec: LabSpec, faults: Sequence[Fault], opts: UpOptions, *, progress: Progress = _quiet) -> LabState:
    """Build and start a lab; on any error, tear down what was built and re-raise."""
    netns.check_can_run()
    plan = build_plan(spec)
    check_faults(faults, plan)
    if opts.agents and not agents_available():
        raise netns.LabError(
            "running prober in the lab needs `prober agent` and `prober collector`, which this "
            "installation lacks; `prober lab up --no-agents` and `prober lab check` work without them"
        )
    if shutil.which("conntrack") is None:
        progress(
            "note: conntrack(8) not found; stale flows age out instead of being flushed on fault changes"
        )
    state = LabState(
        nodes=spec.nodes,
        cni=spec.cni.value,
        prefix=spec.prefix,
        zones=spec.zones,
        external_traffic_policy=spec.external_traffic_policy,
        agents=opts.agents,
        interval_s=opts.interval_s,
        timeout_s=opts.timeout_s,
        budget=opts.budget,
        started_at=time.time(),
    )
    start = time.perf_counter()
    try:
        timing = cluster.build_network(plan)
        state.setup_s = timing.setup_s
        progress(
            f"network: {timing.namespaces} namespaces ({spec.nodes} nodes, {spec.cni} CNI, "
            f"{len(plan.zones)} zones, externalTrafficPolicy {spec.external_traffic_policy}) "
            f"in {timing.setup_s:.2f} s"
        )
        save_state(state)
        state.pids["fabric"] = _start_fabric(plan)
        ready = _start(plan, state, echo_workloads(plan), opts.launcher)
        save_state(state)
        if opts.agents:
            inv_path = inventory_path(plan.prefix)
            inv_path.write_text(inventory_yaml(lab_inventory(plan)))
            ready += _start(plan, state, prober_workloads(plan, opts, inv_path), opts.launcher)
            save_state(state)
        wait_ready(plan, state, ready, timeout_s=opts.ready_timeout_s)
        state.ready_s = time.perf_counter() - start
        what = f"{spec.nodes} echo pods"
        if opts.agents:
            what = f"collector, {2 * spec.nodes} agents and " + what
        progress(
            f"prober: {what} ready in {state.ready_s:.1f} s"
            + (f" (interval {opts.interval_s:g} s, timeout {opts.timeout_s:g} s)" if opts.agents else "")
        )
        if faults:
            cluster.apply_faults(plan, faults)
            state.faults = [str(f) for f in faults]
            progress(f"faults on: {', '.join(state.faults)}")
        state.faults_since = time.time()
        save_state(state)
    except BaseException:
        down(spec.prefix, progress=progress)
        raise
    return state


def _start_fabric(plan: Plan) -> int:
    argv = [
        sys.executable,
        "-m",
        "prober_lab.fabric",
        "--nodes",
        str(plan.spec.nodes),
        "--cni",
        plan.cni.value,
        "--prefix",
        plan.prefix,
        "--zones",
        str(plan.spec.zone_count),
    ]
    proc = _spawn(plan.ctl_ns, argv, state_dir(plan.prefix) / "logs" / "fabric.log", pipe_stdout=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once every listener is open
    if line.strip() != b"ready":
        log = state_dir(plan.prefix) / "logs" / "fabric.log"
        raise netns.LabError(f"the lab's workloads did not start; see {log}")
    proc.stdout.close()
    return proc.pid


def echo_process_name(node: str) -> str:
    return f"echo-{node.removeprefix('node-')}"


def echo_workloads(plan: Plan) -> list[Workload]:
    """``prober echo`` in every echo pod: the Services', NodePort's and NLB's backend."""
    out = []
    for n in plan.nodes:
        name = echo_process_name(n.name)
        argv = (
            *("echo", "--network", SrcKind.POD.value, "--node", n.name, "--name", name),
            *("--listen", n.echo.ip, "--http-port", str(ECHO_HTTP_PORT), "--udp-port", str(ECHO_UDP_PORT)),
        )
        out.append(
            Workload(
                name=name,
                component="echo",
                ns=n.echo.ns,
                node=n.name,
                network=SrcKind.POD,
                address=n.echo.ip,
                argv=argv,
            )
        )
    return out


def _start(plan: Plan, state: LabState, workloads: Sequence[Workload], launcher: Launcher) -> list[Endpoint]:
    logs = state_dir(plan.prefix) / "logs"
    ready = []
    for w in workloads:
        proc, endpoint = launcher(w, logs / f"{w.name}.log")
        state.pids[w.name] = proc.pid
        ready.append(endpoint)
    return ready


def wait_ready(
    plan: Plan, state: LabState, endpoints: Sequence[Endpoint], *, timeout_s: float = 30.0
) -> None:
    """Wait until every process of the lab answers ``/readyz``; a dead one is named at once."""
    pending = list(endpoints)
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while pending:
        still = []
        for ep in pending:
            pid = state.pids.get(ep.name)
            child = _children.get(pid) if pid is not None else None
            if child is not None and child.poll() is not None:
                log = state_dir(plan.prefix) / "logs" / f"{ep.name}.log"
                raise netns.LabError(f"the lab's {ep.name} exited (status {child.returncode}); see {log}")
            try:
                status, _ = http_get(ep.ns, ep.host, ep.port, "/readyz", timeout_s=1.0)
                if status == 200:
                    continue
                last[ep.name] = f"HTTP {status}"
            except OSError as exc:
                last[ep.name] = str(exc) or type(exc).__name__
            still.append(ep)
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{ep.name} ({last.get(ep.name, '?')})" for ep in pending)
            logs = state_dir(plan.prefix) / "logs"
            raise netns.LabError(f"not ready after {timeout_s:g} s: {names}; see the logs in {logs}")
        time.sleep(0.1)


def prober_workloads(plan: Plan, opts: UpOptions, inventory: Path) -> list[Workload]:
    """The collector (reading the lab's inventory file) and one agent per node per network."""
    collector = (
        *("collector", "--inventory", str(inventory), "--listen", "0.0.0.0", "--port", str(COLLECTOR_PORT)),
        *("--interval", f"{opts.interval_s:g}", "--budget", str(opts.budget)),
        *("--timeout", f"{opts.timeout_s:g}", "--window", f"{opts.window_s:g}"),
        *("--retention", f"{max(RETENTION.default, opts.window_s):g}"),
    )
    out = [
        Workload(
            name="collector", component="collector", ns=plan.ctl_ns, address=COLLECTOR_IP, argv=collector
        )
    ]
    url = f"http://{COLLECTOR_IP}:{COLLECTOR_PORT}"
    for n in plan.nodes:
        for kind, ns, addr in ((SrcKind.POD, n.agent.ns, n.agent.ip), (SrcKind.HOST, n.ns, n.ip)):
            name = agent_name(kind, n.name)
            argv = (
                *("agent", "--network", kind.value, "--node", n.name, "--name", name),
                *("--listen", addr, "--http-port", str(ECHO_HTTP_PORT), "--udp-port", str(ECHO_UDP_PORT)),
                *("--source-ip", addr, "--collector", url),
            )
            out.append(
                Workload(
                    name=name, component="agent", ns=ns, node=n.name, network=kind, address=addr, argv=argv
                )
            )
    return out


#: Seconds between an agent's deletion mark and its SIGTERM in :func:`roll_agent`: the
#: deployed preStop hook's 15 s, shortened to what the lab's collector needs to read its
#: inventory file again (it looks every 2 s).
ROLL_GRACE_S: Final = 3.0


def inventory_path(prefix: str) -> Path:
    return state_dir(prefix) / "inventory.yaml"


def _write_inventory(plan: Plan, stopping: Collection[str]) -> None:
    path = inventory_path(plan.prefix)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(inventory_yaml(lab_inventory(plan, stopping=stopping)))
    tmp.replace(path)


def roll_agent(
    prefix: str,
    name: str,
    *,
    down_s: float,
    grace_s: float = ROLL_GRACE_S,
    launcher: Launcher = process_launcher,
) -> None:
    """Replace one agent as a DaemonSet rollout replaces its pod, and return once the new one is in.

    The inventory marks it stopping first (Kubernetes discovery reads that from the pod's
    deletion mark), and ``grace_s`` later (the pod's preStop hook) it gets SIGTERM;
    ``down_s`` seconds without it; then the agent starts again at the same address and,
    once it answers ``/readyz``, the inventory lists it ready again.
    """
    state = require_state(prefix)
    plan = state.plan
    opts = UpOptions(interval_s=state.interval_s, timeout_s=state.timeout_s, budget=state.budget)
    (workload,) = [w for w in prober_workloads(plan, opts, inventory_path(prefix)) if w.name == name]
    pid = state.pids.get(name)
    if pid is None or workload.component != "agent":
        raise netns.LabError(f"the lab has no agent {name!r}")
    with _inventory_lock:
        stopping = {*_stopping.setdefault(prefix, set()), name}
        _stopping[prefix] = stopping
        _write_inventory(plan, stopping)
    time.sleep(grace_s)
    _stop_process(pid, prefix)
    time.sleep(down_s)
    logs = state_dir(prefix) / "logs"
    proc, endpoint = launcher(workload, logs / f"{name}.log")
    with _inventory_lock:
        state = require_state(prefix)
        state.pids[name] = proc.pid
        save_state(state)
    wait_ready(plan, state, [endpoint])
    with _inventory_lock:
        _stopping[prefix].discard(name)
        _write_inventory(plan, _stopping[prefix])


#: Agents being replaced (``roll_agent``), per lab, and the lock their inventory writes share.
_stopping: dict[str, set[str]] = {}
_inventory_lock = threading.Lock()


def _stop_process(pid: int, prefix: str, *, timeout_s: float = 10.0) -> None:
    """SIGTERM one of the lab's processes and wait for it to exit (SIGKILL past ``timeout_s``)."""
    if not _is_lab_process(pid, prefix):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    child = _children.pop(pid, None)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        if child is None and not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if child is not None:
        child.wait(timeout=5.0)


def set_faults(prefix: str, faults: Sequence[Fault]) -> LabState:
    state = require_state(prefix)
    plan = state.plan
    check_faults(faults, plan)
    cluster.apply_faults(plan, faults)
    state.faults = [str(f) for f in faults]
    state.faults_since = time.time()
    save_state(state)
    return state


def fault_on(prefix: str, fault: Fault) -> LabState:
    state = require_state(prefix)
    current = [f for f in state.active_faults if f != fault]
    return set_faults(prefix, [*current, fault])


def fault_off(prefix: str, fault: Fault | None) -> LabState:
    """Switch one fault off (any fault of its kind if no node was named), or all with ``None``."""
    state = require_state(prefix)
    if fault is None:
        return set_faults(prefix, [])
    keep = [
        f
        for f in state.active_faults
        if not (f.kind is fault.kind and (not fault.nodes or f.nodes == fault.nodes))
    ]
    if len(keep) == len(state.active_faults):
        raise netns.LabError(f"{fault} is not on (on: {', '.join(state.faults) or 'nothing'})")
    return set_faults(prefix, keep)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during teardown must not leave half a lab: hold them off meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def down(prefix: str, *, progress: Progress = _quiet) -> tuple[int, float]:
    """Remove everything the lab created; safe to run any number of times, not interruptible."""
    with _uninterrupted():
        return _down(prefix, progress)


def _down(prefix: str, progress: Progress) -> tuple[int, float]:
    netns.check_can_run()
    pids: list[int] = []
    with contextlib.suppress(netns.LabError):
        state = load_state(prefix)
        if state is not None:
            pids = list(state.pids.values())
    pids += lab_pids(prefix)
    count, seconds = cluster.teardown(prefix, extra_pids=[p for p in pids if _is_lab_process(p, prefix)])
    for pid in pids:
        child = _children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
    shutil.rmtree(state_dir(prefix), ignore_errors=True)
    if count:
        progress(f"lab down: {count} namespaces removed in {seconds:.2f} s")
    return count, seconds


def lab_pids(prefix: str) -> list[int]:
    """Every process whose environment says a lab with this prefix started it."""
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _is_lab_process(int(p.name), prefix)
    ]


def _is_lab_process(pid: int, prefix: str) -> bool:
    """Only processes the lab started: a recorded pid reused by something else is left alone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{LAB_ENV}={prefix}".encode() in environ


def http_get(ns: str, host: str, port: int, path: str, *, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """A GET sent from inside namespace ``ns`` (the CLI talks to the collector this way)."""
    sock = netns.socket_in(ns)
    sock.settimeout(timeout_s)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    conn.sock = sock
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def collector_get(plan: Plan, path: str, *, timeout_s: float = 10.0) -> bytes:
    try:
        status, body = http_get(plan.ctl_ns, "127.0.0.1", COLLECTOR_PORT, path, timeout_s=timeout_s)
    except OSError as exc:
        raise netns.LabError(f"the lab's collector did not answer {path}: {exc}") from None
    if status != 200:
        raise netns.LabError(f"the lab's collector answered {status} to {path}: {body[:200]!r}")
    return body
