"""Every setting of prober's commands, declared once: flag, variable, default, range, unit, help.

A :class:`Setting` is the one place where a setting's default, valid values and
meaning are written. Everything else reads it:

- the settings values take their field defaults from it and check their fields with
  :func:`check_fields` (:class:`~prober.schedule.SchedulePolicy`,
  :class:`~prober.collector.settings.CollectorSettings`,
  :class:`~prober.agent.settings.AgentSettings`, :class:`~prober.agent.settings.EchoSettings`);
- the click options of ``prober collector``, ``agent``, ``echo``, ``sweep`` and
  ``diagnose`` are built from it (:mod:`prober.options`): ``--help`` shows its
  default with its unit, its range and its variable;
- ``docs/settings.md`` is generated from :data:`COMMANDS` (``python -m prober.generate``);
  a unit test fails when the committed file drifts from the declarations.

"No limit" is spelled one way: ``None`` in a settings value, ``none`` on the command
line and in a ``PROBER_*`` variable. A setting that has such a value says what it
means in :attr:`Setting.none`; anything else that is not a number is an error.

Pure: no click, no I/O, no other prober module but the error types and the model's
enums, so the pure core and the agent read their defaults from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

from prober.errors import SettingError
from prober.model import SrcKind

T = TypeVar("T")

#: How a setting's text is read: a number (``float``, ``int``), text, a file path,
#: a directory, an on/off flag, or one of :attr:`Setting.choices`.
Kind = Literal["float", "int", "text", "path", "dir", "flag", "choice"]


def number_text(value: int | float) -> str:
    """``10``, ``0.01``, ``25,000``: whole floats without a fraction, thousands grouped."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting(Generic[T]):
    """One setting: what a command-line flag, its variable and a settings field share."""

    #: The field of the settings values (and the click parameter) that holds it.
    field: str
    flag: str
    #: One or two sentences for ``--help`` and the docs, without the default or range.
    help: str
    #: The default: the settings values' field default and the flag's.
    default: T
    kind: Kind = "text"
    metavar: str | None = None
    env: str | None = None
    #: Unit of a number, as shown after it ("s", "probes/s").
    unit: str = ""
    low: float | None = None
    #: ``low`` itself is not allowed ("greater than").
    low_open: bool = False
    high: float | None = None
    #: What ``None`` (``none`` on the command line) means, e.g. "no limit"; ``None``:
    #: the setting has no such value.
    none: str | None = None
    choices: tuple[str, ...] = ()
    #: The flag may be given more than once; its variable takes a space-separated list.
    repeatable: bool = False
    required: bool = False
    #: A standalone agent's schedule: unset (``None``) with a collector, whose pinglist
    #: carries it; the default applies without one.
    standalone: bool = False
    #: The default in words, where it is computed at run time ("<network>-<node>").
    default_text: str | None = None

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")

    def with_unit(self, value: float) -> str:
        return f"{number_text(value)} {self.unit}" if self.unit else number_text(value)

    def range_text(self) -> str:
        """The valid values in words: ``at least 0.1 s``, ``from 0 to 65535``, ``pod or host``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.choices:
            text = " or ".join(self.choices)
        elif self.low is not None and self.high is not None and not self.low_open:
            text = f"from {number_text(self.low)} to {number_text(self.high)}{unit}"
        elif self.low is not None and self.high is not None:
            text = f"greater than {number_text(self.low)}, at most {number_text(self.high)}{unit}"
        elif self.low is not None:
            text = f"{'greater than' if self.low_open else 'at least'} {number_text(self.low)}{unit}"
        elif self.high is not None:
            text = f"at most {number_text(self.high)}{unit}"
        else:
            text = ""
        if self.none is not None:
            text = f"{text}, or none ({self.none})" if text else f"none ({self.none})"
        return text

    def default_shown(self) -> str:
        """The default as ``--help`` and the docs show it; empty when there is none."""
        if self.default_text is not None:
            return self.default_text
        if self.kind == "flag":
            return "on" if self.default else "off"
        if self.required:
            return "required"
        if self.default is None:
            return f"none ({self.none})" if self.none is not None else ""
        if isinstance(self.default, int | float) and not isinstance(self.default, bool):
            return self.with_unit(self.default)
        return str(self.default)

    def described(self) -> str:
        """The help text, with what a standalone-only setting needs said first."""
        if self.standalone:
            return f"Standalone only. {self.help}"
        return self.help

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not valid (``must be at least 0.1 s, got 0.05``), or ``None``."""
        if not self.numeric:
            return None
        if value is None:
            if self.none is not None or self.standalone:
                return None
            return f"must be {self.range_text()}, got none"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if self.kind == "int" and not isinstance(value, int):
            return f"must be a whole number, got {value!r}"
        ok = math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value <= self.high
        return None if ok else f"must be {self.range_text()}, got {number_text(value)}"

    def check(self, value: object) -> None:
        """Raise a :class:`~prober.errors.SettingError` naming the flag if ``value`` is not valid."""
        if (problem := self.problem(value)) is not None:
            raise SettingError(f"{self.flag} {problem}")

    def parse(self, text: str) -> Any:
        """A number (or ``None``) from command-line or variable text, checked; else :class:`SettingError`."""
        raw = text.strip()
        if self.none is not None and raw.lower() == "none":
            return None
        try:
            value: float = int(raw) if self.kind == "int" else float(raw)
        except ValueError:
            noun = "a whole number" if self.kind == "int" else "a number"
            nor = f" nor none ({self.none})" if self.none is not None else ""
            raise SettingError(f"{self.flag}: {text!r} is not {noun}{nor}") from None
        self.check(value)
        return value

    def for_standalone_agent(self) -> Setting[T]:
        return replace(self, standalone=True)


def check_fields(value: object, settings: Iterable[Setting[Any]]) -> None:
    """Check every declared field of a settings value; the first bad one raises, naming its flag."""
    for setting in settings:
        setting.check(getattr(value, setting.field))


# --------------------------------------------------------------------------- schedule
# One policy for the whole mesh: the collector's flags, which its pinglists carry to
# every agent; a standalone agent's own flags; SchedulePolicy's fields.

INTERVAL = Setting(
    field="interval_s", flag="--interval", metavar="S", kind="float", unit="s", default=10.0, low=0.1,
    help="Length of a probe round: every agent probes its round's targets once per interval.",
)  # fmt: skip
TIMEOUT = Setting(
    field="timeout_s", flag="--timeout", metavar="S", kind="float", unit="s", default=5.0, low=0.01, high=60,
    help="Probe timeout; the collector's must be shorter than --interval. 5 s keeps the 1 s and 3 s SYN "
    "retransmits visible as latency, not failure.",
)  # fmt: skip
BUDGET = Setting(
    field="budget_per_s", flag="--budget", metavar="N", kind="float", unit="probes/s", default=20.0, low=0.01,
    help="Most probes per second one agent sends.",
)  # fmt: skip
CONCURRENCY = Setting(
    field="concurrency", flag="--concurrency", metavar="N", kind="int", default=64, low=1,
    help="Most probes one agent has in flight at once.",
)  # fmt: skip
SHARED_BUDGET = Setting(
    field="shared_budget_per_s", flag="--shared-budget", metavar="N", kind="float", unit="probes/s",
    default=20.0, low=0, low_open=True,
    help="Probes per second one shared target (Service, NLB address, DNS server, external) receives "
    "from all agents together.",
)  # fmt: skip
NLB_BUDGET = Setting(
    field="nlb_budget_per_node", flag="--nlb-budget-per-node", metavar="N", kind="float",
    unit="probes/s per node", default=0.3, low=0,
    help="Probes per second an NLB receives from all agents together, per node behind it, where that is "
    "more than --shared-budget gives it (past ~200 nodes at the defaults). The hairpin and 5-tuple "
    "collision tests need NLB probes in proportion to the nodes (the NLB picks a client's own node 1 "
    "time in N): at most 300 probes/s at 1,000 nodes and 1,500 at 5,000, 0.3 a second per node. 0: an "
    "NLB address gets --shared-budget like any shared target.",
)  # fmt: skip
CLUSTER_BUDGET = Setting(
    field="cluster_budget_per_s", flag="--cluster-budget", metavar="N", kind="float", unit="probes/s",
    default=5_000.0, low=0, low_open=True, none="no limit",
    help="Probes per second of the whole mesh together: every result comes to the one collector, whose "
    "CPU and memory grow with the results it takes (at 1,000 nodes, 5,000/s took about 0.6 core and up to "
    "0.7 GiB, 25,000/s about a core and up to 1.9 GiB), so in large clusters each agent gets its share, "
    "min(--budget, "
    "N / agents), but never so little that it probes fewer than 3 peers a round: past ~1,000 nodes "
    "that floor sets the rate, ~2.5 probes/s an agent (25,000/s at 5,000 nodes).",
)  # fmt: skip
#: The largest answer an echo serves to a large-payload probe (``GET /?size=N``).
MAX_LARGE_PROBE_BYTES = 65_536
LARGE_PROBE_BYTES = Setting(
    field="large_probe_bytes", flag="--large-probe-bytes", metavar="N", kind="int", unit="bytes",
    default=8_900, low=0, high=MAX_LARGE_PROBE_BYTES,
    help="Size of the large-payload (MTU) probe's echo answer. Once per round each agent asks one peer's "
    "echo of its own network (pod to pod, host to host; the peer rotates with the round) for this many "
    "bytes, sent with DF as Linux TCP does: where small probes pass and this one connects, then stalls, "
    "a hop on the path has a smaller MTU and drops the ICMP fragmentation-needed that would tell (an MTU "
    "black hole). It must exceed the smallest MTU to be seen: 8,900 suits jumbo-frame (9,001) VPCs; "
    "1,400 finds a hop under 1,400 on a 1,500 network. 0 sends no large probes.",
)  # fmt: skip
SCHEDULE: tuple[Setting[Any], ...] = (
    INTERVAL, TIMEOUT, BUDGET, CONCURRENCY, SHARED_BUDGET, NLB_BUDGET, CLUSTER_BUDGET, LARGE_PROBE_BYTES,
)  # fmt: skip
FOCUS_PER_AGENT = Setting(
    field="focus_per_agent", flag="--focus-per-agent", metavar="N", kind="int", unit="probes/round",
    default=10, low=0,
    help="Focused probes one agent may get per round for diagnosis' open questions (a pair of nodes or a "
    "node's outside target with too few samples to decide), on top of its schedule and within --budget. "
    "0: no focused probes.",
)  # fmt: skip
SUSPECTS_MAX = Setting(
    field="suspects_max", flag="--suspects-max", metavar="N", kind="int", default=32, low=0,
    help="Open questions the whole cluster probes at once (each costs about 20 probes a round). 0: none.",
)  # fmt: skip
SUSPECT_ROUNDS = Setting(
    field="suspect_rounds", flag="--suspect-rounds", metavar="N", kind="int", unit="passes", default=6, low=1,
    help="Diagnosis passes an open question keeps its focused probes before it is given up; a question a "
    "finding answers keeps them while the finding stands.",
)  # fmt: skip
# --------------------------------------------------------------- echo (and the agent's echo)

NETWORK = Setting(
    field="network", flag="--network", kind="choice", choices=tuple(k.value for k in SrcKind),
    env="PROBER_NETWORK", default=None, required=True,
    help="Which network this process runs on: the pod network or the node's own (hostNetwork).",
)  # fmt: skip
NODE = Setting(
    field="node", flag="--node", metavar="NAME", env="PROBER_NODE_NAME", default=None, required=True,
    help="The node this process runs on (in Kubernetes: spec.nodeName).",
)  # fmt: skip
ECHO_NAME = Setting(
    field="name", flag="--name", metavar="NAME", env="PROBER_AGENT_NAME", default=None,
    default_text="echo-<node>", help="This echo's name, in its answers (in Kubernetes: the pod name).",
)  # fmt: skip
LISTEN = Setting(
    field="listen", flag="--listen", metavar="ADDR", env="PROBER_LISTEN", default="0.0.0.0",
    help="Address the HTTP and UDP echo bind to (in Kubernetes: status.podIP; a node with several "
    "addresses answers UDP from the one it was asked on only when bound to it).",
)  # fmt: skip
HTTP_PORT = Setting(
    field="http_port", flag="--http-port", metavar="N", kind="int", env="PROBER_HTTP_PORT", default=8080,
    low=0, high=65535, help="HTTP echo, /metrics, /healthz, /readyz.",
)  # fmt: skip
UDP_PORT = Setting(
    field="udp_port", flag="--udp-port", metavar="N", kind="int", env="PROBER_UDP_PORT", default=8081,
    low=0, high=65535, help="UDP echo.",
)  # fmt: skip
ECHO: tuple[Setting[Any], ...] = (NETWORK, NODE, ECHO_NAME, LISTEN, HTTP_PORT, UDP_PORT)
ECHO_PORTS: tuple[Setting[Any], ...] = (HTTP_PORT, UDP_PORT)

# ---------------------------------------------------------------------------- agent

AGENT_NAME = replace(
    ECHO_NAME, default_text="<network>-<node>",
    help="This agent's name: its name in the inventory, and in its echo's answers (in Kubernetes: the "
    "pod name).",
)  # fmt: skip
SOURCE_IP = Setting(
    field="source_ip", flag="--source-ip", metavar="ADDR", env="PROBER_SOURCE_IP", default=None,
    default_text="routing picks",
    help="Bind every probe to this local address (e.g. a loopback mesh, one ENI).",
)  # fmt: skip
AGENT_COLLECTOR = Setting(
    field="collector", flag="--collector", metavar="URL", env="PROBER_COLLECTOR_URL", default=None,
    help="Collector base URL: the pinglist and the schedule come from it, results go to it.",
)  # fmt: skip
AGENT_INVENTORY = Setting(
    field="inventory", flag="--inventory", metavar="FILE", kind="path", env="PROBER_INVENTORY", default=None,
    help="Standalone: build the pinglist from this inventory file (YAML or JSON); use this or --collector.",
)  # fmt: skip
PER_TARGET_METRICS = Setting(
    field="per_target_metrics", flag="--per-target-metrics", kind="flag", env="PROBER_PER_TARGET_METRICS",
    default=False,
    help="Also export prober_target_probes_total per destination node (series grow with the cluster).",
)  # fmt: skip
AGENT_TOKEN_FILE = Setting(
    field="token_file", flag="--token-file", metavar="FILE", kind="path", env="PROBER_TOKEN_FILE",
    default=None, default_text="none: send no credential",
    help="With --collector: a file holding the token to present to the collector (re-read when it "
    "changes): in Kubernetes a projected ServiceAccount token with the audience prober, else the "
    "collector's --token-file.",
)  # fmt: skip
RESULTS_FILE = Setting(
    field="results_file", flag="--results-file", metavar="FILE", kind="path", env="PROBER_RESULTS_FILE",
    default=None, help="Append every result to this JSONL file (for prober diagnose).",
)  # fmt: skip
#: The standalone agent's schedule: unset with --collector.
AGENT_SCHEDULE: tuple[Setting[Any], ...] = tuple(
    s.for_standalone_agent() for s in (INTERVAL, BUDGET, TIMEOUT, CONCURRENCY)
)
AGENT: tuple[Setting[Any], ...] = (
    NETWORK, NODE, AGENT_NAME, LISTEN, HTTP_PORT, UDP_PORT, SOURCE_IP, AGENT_COLLECTOR, AGENT_TOKEN_FILE,
    AGENT_INVENTORY, *AGENT_SCHEDULE, PER_TARGET_METRICS, RESULTS_FILE,
)  # fmt: skip

# ------------------------------------------------------------------------ collector

COLLECTOR_INVENTORY = Setting(
    field="inventory", flag="--inventory", metavar="FILE", env="PROBER_INVENTORY", default=None,
    help="Inventory file (YAML or JSON): nodes, agents, Services, NLBs, externals; re-read when it "
    "changes. Use this or --kubernetes.",
)  # fmt: skip
COLLECTOR_LISTEN = Setting(
    field="listen", flag="--listen", metavar="ADDR", env="PROBER_LISTEN", default="0.0.0.0",
    help="Address to serve the API on.",
)  # fmt: skip
COLLECTOR_PORT = Setting(
    field="port", flag="--port", metavar="N", kind="int", env="PROBER_PORT", default=9090, low=0, high=65535,
    help="API port.",
)  # fmt: skip
WINDOW = Setting(
    field="window_s", flag="--window", metavar="S", kind="float", unit="s", default=60.0, low=0,
    low_open=True,
    help="Window of the matrix, findings and metrics; a request may ask for another with ?window=. "
    "At most --retention.",
)  # fmt: skip
RETENTION = Setting(
    field="retention_s", flag="--retention", metavar="S", kind="float", unit="s", default=900.0, low=0,
    low_open=True,
    help="How long results are kept: the longest window a request may ask for. Memory grows with it; "
    "the peer, Service and NodePort paths (N² keys) are kept only as far back as the long "
    "window reads them (2 million entries: at 1,000 nodes about 95 s).",
)  # fmt: skip
RECORDS_BUFFER = Setting(
    field="records_buffer_mib", flag="--records-buffer", metavar="MIB", kind="int", unit="MiB",
    env="PROBER_RECORDS_BUFFER", default=32, low=0, high=4096,
    help="Memory for the raw results GET /api/v1/records exports (as JSONL, the newest kept; 0: none). "
    "Diagnosis never reads them: its windows are counts per time bucket.",
)  # fmt: skip
INGEST_QUOTA = Setting(
    field="ingest_quota_per_s", flag="--ingest-quota", metavar="N", kind="float", unit="records/s",
    env="PROBER_INGEST_QUOTA", default=200.0, low=0, low_open=True, none="no limit",
    help="Results one source node may add per second on average (its pod and host agents together; "
    "5 minutes' worth at once, for a backlog). Beyond it a result line is rejected. At least twice "
    "--budget.",
)  # fmt: skip
CLOCK_SKEW = Setting(
    field="clock_skew_s", flag="--clock-skew", metavar="S", kind="float", unit="s", env="PROBER_CLOCK_SKEW",
    default=30.0, low=0, high=3600,
    help="How far ahead of the collector's clock a result's ts may be; results older than --retention "
    "are rejected too.",
)  # fmt: skip
MAX_CONNECTIONS = Setting(
    field="max_connections", flag="--max-connections", metavar="N", kind="int",
    env="PROBER_MAX_CONNECTIONS", default=1024, low=1, high=65535,
    help="Open HTTP connections the collector keeps; beyond it a new connection is closed at once. "
    "Allow one per agent (agents keep theirs open) plus scrapes and users.",
)  # fmt: skip
COLLECTOR_TOKEN_FILE = Setting(
    field="token_file", flag="--token-file", metavar="FILE", kind="path", env="PROBER_TOKEN_FILE",
    default=None, default_text="none: no operator credential",
    help="The operator credential: a file holding a secret token (re-read when it changes). Callers "
    "that present it as 'Authorization: Bearer TOKEN' may post results, read pinglists and raw records "
    "and start sweeps (prober sweep --token-file, agents of a static inventory). Without it and without "
    "--kubernetes, every endpoint is open.",
)  # fmt: skip
AGENT_SERVICE_ACCOUNT = Setting(
    field="agent_service_account", flag="--agent-service-account", metavar="NAME",
    env="PROBER_AGENT_SERVICE_ACCOUNT", default="prober-agent",
    help="With --kubernetes: the agents' ServiceAccount in --namespace. An agent's token (audience "
    "prober, checked by TokenReview) must be of it, and of a pod the inventory has as an agent.",
)  # fmt: skip
STATE_DIR = Setting(
    field="state_dir", flag="--state-dir", metavar="DIR", kind="dir", env="PROBER_STATE_DIR",
    default=None, default_text="none: the windows start empty after a restart",
    help="Keep a snapshot of the windows in DIR (every 30 s and at exit) and load it at start, so a "
    "restarted collector (OOM kill, liveness restart) keeps them. A corrupt or foreign snapshot is "
    "reported and ignored.",
)  # fmt: skip
SWEEP_DEADLINE_MAX = Setting(
    field="sweep_deadline_max_s", flag="--sweep-deadline-max", metavar="S", kind="float", unit="s",
    env="PROBER_SWEEP_DEADLINE_MAX", default=120.0, low=1, high=3600,
    help="The longest a sweep may run: a request's deadline_s above it is lowered to it. The sweep "
    "spreads its probes over about this long less one interval and the probe timeout.",
)  # fmt: skip
SWEEP_TIMEOUT_MAX = Setting(
    field="sweep_timeout_max_s", flag="--sweep-timeout-max", metavar="S", kind="float", unit="s",
    env="PROBER_SWEEP_TIMEOUT_MAX", default=10.0, low=0.01, high=60,
    help="The longest probe timeout a sweep may ask for: a request's timeout_s above it is lowered to it.",
)  # fmt: skip
SWEEP_MIN_GAP = Setting(
    field="sweep_min_gap_s", flag="--sweep-min-gap", metavar="S", kind="float", unit="s",
    env="PROBER_SWEEP_MIN_GAP", default=10.0, low=0, high=3600,
    help="Least time from the end of one sweep to the start of the next; a request sooner gets 429 "
    "with Retry-After (a request while one runs joins it).",
)  # fmt: skip
#: The collector's own flags; with :data:`KUBE` they are ``prober collector``'s.
COLLECTOR: tuple[Setting[Any], ...] = (
    COLLECTOR_INVENTORY, COLLECTOR_LISTEN, COLLECTOR_PORT, INTERVAL, BUDGET, TIMEOUT, SHARED_BUDGET,
    NLB_BUDGET, CLUSTER_BUDGET, LARGE_PROBE_BYTES, WINDOW, RETENTION, RECORDS_BUFFER, INGEST_QUOTA,
    CLOCK_SKEW, MAX_CONNECTIONS,
    COLLECTOR_TOKEN_FILE, STATE_DIR, SWEEP_DEADLINE_MAX, SWEEP_TIMEOUT_MAX, SWEEP_MIN_GAP, FOCUS_PER_AGENT,
    SUSPECTS_MAX, SUSPECT_ROUNDS,
)  # fmt: skip

# ------------------------------------------------------- the collector's Kubernetes discovery

KUBERNETES = Setting(
    field="kubernetes", flag="--kubernetes", kind="flag", env="PROBER_KUBERNETES", default=False,
    help="Discover nodes, agents and echo Services from the Kubernetes API (in-cluster service account "
    "by default).",
)  # fmt: skip
KUBECONFIG = Setting(
    field="kubeconfig", flag="--kubeconfig", metavar="PATH", kind="path", env="PROBER_KUBECONFIG",
    default=None,
    default_text="in-cluster service account, else $KUBECONFIG or ~/.kube/config",
    help="With --kubernetes, outside a cluster: the kubeconfig to use.",
)  # fmt: skip
KUBE_CONTEXT = Setting(
    field="context", flag="--kube-context", metavar="NAME", env="PROBER_KUBE_CONTEXT", default=None,
    default_text="the kubeconfig's current context", help="The kubeconfig context to use.",
)  # fmt: skip
NAMESPACE = Setting(
    field="namespace", flag="--namespace", metavar="NS", env="PROBER_NAMESPACE", default=None,
    default_text="the collector's own namespace in a pod, else prober",
    help="Where the agent pods and echo Services live.",
)  # fmt: skip
AGENT_SELECTOR = Setting(
    field="agent_selector", flag="--agent-selector", metavar="SELECTOR", env="PROBER_AGENT_SELECTOR",
    default="app.kubernetes.io/name=prober,app.kubernetes.io/component=agent",
    help="Label selector of the agent pods (both DaemonSets). Their network kind comes from hostNetwork "
    "(and the prober.dev/network label); their ports from the container ports named http (TCP) and "
    "udp (UDP).",
)  # fmt: skip
ECHO_SELECTOR = Setting(
    field="echo_selector", flag="--echo-selector", metavar="SELECTOR", env="PROBER_ECHO_SELECTOR",
    default="app.kubernetes.io/name=prober,app.kubernetes.io/component=echo",
    help="Label selector of the echo Services (ClusterIP, internalTrafficPolicy: Local, NodePort, "
    "LoadBalancer).",
)  # fmt: skip
WARMUP = Setting(
    field="warmup_s", flag="--warmup", metavar="SECONDS", kind="float", unit="s", env="PROBER_WARMUP",
    default=30.0, low=0, help="Probe a new agent only this long after its pod became Ready.",
)  # fmt: skip
DNS_SERVERS = Setting(
    field="dns_servers", flag="--dns-server", metavar="NAME=ADDR[:PORT]", env="PROBER_DNS_SERVERS",
    default=(), repeatable=True,
    default_text="in a pod: kube-dns=<the collector's resolv.conf nameserver>",
    help="A DNS server to probe (repeatable; the variable takes a space-separated list).",
)  # fmt: skip
DNS_QUERY = Setting(
    field="dns_query", flag="--dns-query", metavar="NAME", env="PROBER_DNS_QUERY",
    default="kubernetes.default.svc.cluster.local", help="The name DNS probes ask for.",
)  # fmt: skip
EXTERNALS = Setting(
    field="externals", flag="--external", metavar="NAME=HOST:PORT[/tcp|http|udp]", env="PROBER_EXTERNALS",
    default=(), repeatable=True, default_text="none",
    help="An endpoint outside the cluster to probe (repeatable; the variable takes a space-separated list).",
)  # fmt: skip
KUBE: tuple[Setting[Any], ...] = (
    KUBERNETES, KUBECONFIG, KUBE_CONTEXT, NAMESPACE, AGENT_SELECTOR, ECHO_SELECTOR, WARMUP, DNS_SERVERS,
    DNS_QUERY, EXTERNALS, AGENT_SERVICE_ACCOUNT,
)  # fmt: skip

# ------------------------------------------------------------------- sweep and diagnose

JSON_OUTPUT = Setting(
    field="as_json", flag="--json", kind="flag", default=False,
    help='Print {"matrix": ..., "findings": [...]} to stdout and nothing else.',
)  # fmt: skip
SWEEP_COLLECTOR = Setting(
    field="url", flag="--collector", metavar="URL", env="PROBER_COLLECTOR_URL",
    default=f"http://127.0.0.1:{COLLECTOR_PORT.default}", help="The collector's base URL.",
)  # fmt: skip
SWEEP_TIMEOUT = Setting(
    field="deadline_s", flag="--timeout", metavar="S", kind="float", unit="s", default=60.0, low=0,
    low_open=True,
    help="How long the sweep runs: agents learn of it at their next pinglist fetch (within one interval) "
    "and must deliver by then; those that do not are listed as failed. The collector lowers it to its "
    "--sweep-deadline-max.",
)  # fmt: skip
SWEEP_TOKEN_FILE = Setting(
    field="token_file", flag="--token-file", metavar="FILE", kind="path", env="PROBER_TOKEN_FILE",
    default=None, default_text="none: send no credential",
    help="A file holding the collector's operator token (its --token-file; in Kubernetes the Secret "
    "prober-operator-token), sent as 'Authorization: Bearer TOKEN'.",
)  # fmt: skip
SWEEP: tuple[Setting[Any], ...] = (SWEEP_COLLECTOR, SWEEP_TOKEN_FILE, JSON_OUTPUT, SWEEP_TIMEOUT)

DIAGNOSE_WINDOW = Setting(
    field="window_s", flag="--window", metavar="S", kind="float", unit="s", default=None, low=0,
    low_open=True, none="all of it",
    help="Only the last S seconds of the recording (before its newest result).",
)  # fmt: skip
DIAGNOSE_INVENTORY = Setting(
    field="inventory", flag="--inventory", metavar="FILE", kind="path", env="PROBER_INVENTORY", default=None,
    default_text="none: the nodes of the results",
    help="Inventory file: node order and zones (zones sharpen the NLB rules).",
)  # fmt: skip
DIAGNOSE: tuple[Setting[Any], ...] = (JSON_OUTPUT, DIAGNOSE_WINDOW, DIAGNOSE_INVENTORY)


@dataclass(frozen=True, slots=True)
class Section:
    """A command's settings (or a part of them), as ``docs/settings.md`` lists them."""

    title: str
    intro: str
    settings: tuple[Setting[Any], ...]


COMMANDS: tuple[Section, ...] = (
    Section(
        "prober agent",
        "One agent per node per network. With `--collector` the pinglist and the schedule come from the "
        "collector; with `--inventory` the agent runs standalone on the schedule flags below.",
        AGENT,
    ),
    Section(
        "prober echo",
        "The HTTP and UDP echo alone: the backend of the echo Services, the NodePort and the NLB.",
        ECHO,
    ),
    Section(
        "prober collector",
        "Hands every agent its pinglist (which carries the schedule flags to the agents), ingests their "
        "results, serves the matrix, the findings and sweeps.",
        COLLECTOR,
    ),
    Section(
        "prober collector: Kubernetes discovery",
        "With `--kubernetes` the inventory comes from the Kubernetes API instead of `--inventory`.",
        KUBE,
    ),
    Section("prober sweep", "Asks the collector to probe everything now.", SWEEP),
    Section("prober diagnose FILE.jsonl", "Diagnoses recorded results.", DIAGNOSE),
)
