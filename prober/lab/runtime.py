"""A running lab: its state file, its processes, and the operations on it (up, fault, down).

``up`` builds the network (:mod:`prober.lab.cluster`), starts the workloads
(:mod:`prober.lab.fabric`) and, unless asked not to, the real prober collector and
one agent per node per network, all with ``ip netns exec`` and
``[sys.executable, "-m", ...]`` so they run this source tree. It records everything in
``/run/<prefix>/state.json`` so ``status``, ``fault`` and ``down`` find the lab from
another shell. ``down`` does not need the state file: it removes every namespace
with the prefix and every process inside them.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

import prober
from prober.lab import cluster, netns
from prober.lab.faults import Fault, check_faults, parse_fault
from prober.lab.inventory import agent_name, inventory_yaml, lab_inventory
from prober.lab.plan import (
    COLLECTOR_IP,
    COLLECTOR_PORT,
    ECHO_HTTP_PORT,
    ECHO_UDP_PORT,
    LabSpec,
    Plan,
    build_plan,
)
from prober.model import SrcKind

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class LabState(msgspec.Struct, kw_only=True):
    nodes: int
    cni: str
    prefix: str
    faults: list[str] = msgspec.field(default_factory=list)
    pids: dict[str, int] = msgspec.field(default_factory=dict)
    agents: bool = False
    interval_s: float = 2.0
    timeout_s: float = 0.9
    started_at: float = 0.0
    setup_s: float = 0.0

    @property
    def spec(self) -> LabSpec:
        from prober.lab.plan import Cni  # noqa: PLC0415 - avoid a cycle in the type's namespace

        return LabSpec(nodes=self.nodes, cni=Cni(self.cni), prefix=self.prefix)

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


def _spawn(
    ns: str, argv: Sequence[str], log_path: Path, *, pipe_stdout: bool = False
) -> subprocess.Popen[bytes]:
    prefix = ns.partition("-")[0]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=log,
            env=_env(prefix),
            start_new_session=True,  # a Ctrl-C in the shell reaches `prober lab`, which tears down
            cwd=str(source_root()),
        )
    _children[proc.pid] = proc
    return proc


def agents_available() -> bool:
    import importlib.util  # noqa: PLC0415

    return all(
        importlib.util.find_spec(m) is not None
        for m in ("prober.commands.agent", "prober.commands.collector")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UpOptions:
    agents: bool = True
    interval_s: float = 2.0
    timeout_s: float = 0.9
    window_s: float = 60.0
    budget: int = 50


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
        agents=opts.agents,
        interval_s=opts.interval_s,
        timeout_s=opts.timeout_s,
        started_at=time.time(),
    )
    try:
        timing = cluster.build_network(plan)
        state.setup_s = timing.setup_s
        progress(
            f"network: {timing.namespaces} namespaces ({spec.nodes} nodes, {spec.cni} CNI, "
            f"{len(plan.zones)} zones) in {timing.setup_s:.2f} s"
        )
        save_state(state)
        state.pids["fabric"] = _start_fabric(plan)
        save_state(state)
        if opts.agents:
            _start_prober(plan, state, opts)
            save_state(state)
            progress(
                f"prober: collector and {2 * spec.nodes} agents started (interval {opts.interval_s:g} s)"
            )
        if faults:
            cluster.apply_faults(plan, faults)
            state.faults = [str(f) for f in faults]
            save_state(state)
            progress(f"faults on: {', '.join(state.faults)}")
    except BaseException:
        down(spec.prefix, progress=progress)
        raise
    return state


def _start_fabric(plan: Plan) -> int:
    argv = [
        sys.executable,
        "-m",
        "prober.lab.fabric",
        "--nodes",
        str(plan.spec.nodes),
        "--cni",
        plan.cni.value,
        "--prefix",
        plan.prefix,
    ]
    proc = _spawn(plan.ctl_ns, argv, state_dir(plan.prefix) / "logs" / "fabric.log", pipe_stdout=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once every listener is open
    if line.strip() != b"ready":
        log = state_dir(plan.prefix) / "logs" / "fabric.log"
        raise netns.LabError(f"the lab's workloads did not start; see {log}")
    proc.stdout.close()
    return proc.pid


def _start_prober(plan: Plan, state: LabState, opts: UpOptions) -> None:
    inv_path = state_dir(plan.prefix) / "inventory.yaml"
    inv_path.write_text(inventory_yaml(lab_inventory(plan)))
    logs = state_dir(plan.prefix) / "logs"
    py = [sys.executable, "-m", "prober"]
    collector = [
        *py,
        "collector",
        "--inventory",
        str(inv_path),
        "--listen",
        "0.0.0.0",
        "--port",
        str(COLLECTOR_PORT),
        "--interval",
        f"{opts.interval_s:g}",
        "--budget",
        str(opts.budget),
        "--timeout",
        f"{opts.timeout_s:g}",
        "--window",
        f"{opts.window_s:g}",
    ]
    state.pids["collector"] = _spawn(plan.ctl_ns, collector, logs / "collector.log").pid
    url = f"http://{COLLECTOR_IP}:{COLLECTOR_PORT}"
    for n in plan.nodes:
        for kind, ns, addr in ((SrcKind.POD, n.agent.ns, n.agent.ip), (SrcKind.HOST, n.ns, n.ip)):
            name = agent_name(kind, n.name)
            argv = [
                *py,
                "agent",
                "--network",
                kind.value,
                "--node",
                n.name,
                "--name",
                name,
                "--listen",
                "0.0.0.0",
                "--http-port",
                str(ECHO_HTTP_PORT),
                "--udp-port",
                str(ECHO_UDP_PORT),
                "--source-ip",
                addr,
                "--collector",
                url,
            ]
            state.pids[name] = _spawn(ns, argv, logs / f"{name}.log").pid


def set_faults(prefix: str, faults: Sequence[Fault]) -> LabState:
    state = require_state(prefix)
    plan = state.plan
    check_faults(faults, plan)
    cluster.apply_faults(plan, faults)
    state.faults = [str(f) for f in faults]
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


def down(prefix: str, *, progress: Progress = _quiet) -> tuple[int, float]:
    """Remove everything the lab created; safe to run any number of times."""
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


def wait_collector_ready(plan: Plan, *, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            status, _ = http_get(plan.ctl_ns, "127.0.0.1", COLLECTOR_PORT, "/readyz", timeout_s=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    log = state_dir(plan.prefix) / "logs" / "collector.log"
    raise netns.LabError(f"the lab's collector did not become ready in {timeout_s:g} s ({last}); see {log}")
