"""Discovery from the Kubernetes API: the collector's inventory source in a cluster.

Only the collector talks to the API server, with one list+watch per resource for the
whole cluster: nodes (cluster-wide), the agent pods of both DaemonSets and the echo
Services (in prober's namespace). Agents learn their targets from the collector's
pinglist and need no API access at all. This is the only module that imports
``kubernetes``; what the objects mean (gating, ports, zones) is pure code in
:mod:`prober.inventory.cluster`.

The ``kubernetes`` client is synchronous, so each watch runs in its own daemon
thread that decodes events and hands them to the event loop through a queue; all
state lives on the asyncio side. A watch resumes from its last resourceVersion after
a server timeout or a broken connection, and lists again after ``410 Gone``. While
the API is unreachable the last good inventory stays in force, the log says so once
and ``prober_inventory_source_up`` is 0.

Load-balancer hostnames from ``status.loadBalancer.ingress`` are resolved through an
injectable resolver, again every ``lb_refresh_s``. Each address's zone comes from the
AWS zonal name (``<zone>.<hostname>``, one lookup per zone that has nodes), else from
the node subnet it falls into (see :func:`~prober.inventory.cluster.attribute_zones`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import random
import socket
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import kubernetes
import msgspec
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from prober.errors import UsageError
from prober.inventory import Inventory, InventoryError, Node, ZoneAddress
from prober.inventory.cluster import (
    DEFAULT_AGENT_SELECTOR,
    DEFAULT_DNS_QUERY,
    DEFAULT_ECHO_SELECTOR,
    AgentState,
    ApiNode,
    ApiPod,
    ApiService,
    Built,
    KubeSettings,
    attribute_zones,
    build_inventory,
    is_aws_elb_hostname,
    kube_settings_from,
    lb_addresses_of,
    node_address,
    node_zone,
)
from prober.settings import WARMUP

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RESOURCES = ("nodes", "pods", "services")

T = TypeVar("T")


# --- DNS -------------------------------------------------------------------------------


class Resolver(Protocol):
    """Resolve a name to addresses.

    Returns the addresses, or an empty list when the name does not exist; raises
    ``OSError`` when the lookup failed and is worth trying again.
    """

    async def __call__(self, name: str) -> list[str]: ...


async def system_resolver(name: str) -> list[str]:
    """The system resolver (``getaddrinfo``), as the agents' probes will resolve names."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return []
        raise
    return sorted({str(info[4][0]) for info in infos})


# --- metrics ---------------------------------------------------------------------------


class InventoryMetrics:
    """The inventory source's health, for alerting on a collector that flies blind.

    ``up`` lets the collector hand over the ``prober_inventory_source_up`` gauge it
    already registered, so the source drives the one series instead of registering a
    second one (which the registry would refuse).
    """

    def __init__(self, registry: CollectorRegistry, *, up: Gauge | None = None) -> None:
        self.up = up or Gauge(
            "prober_inventory_source_up",
            "1 while every watch of the inventory source is in sync with the API; 0 while it "
            "retries (the last good inventory stays in force)",
            registry=registry,
        )
        self.errors = Counter(
            "prober_inventory_errors_total",
            "Failed API requests and watches (reason api|network|decode|internal) and failed "
            "load-balancer lookups (resource lb, reason resolve)",
            ["resource", "reason"],
            registry=registry,
        )
        self.relists = Counter(
            "prober_inventory_relists_total",
            "Full lists after a watch could not resume (410 Gone)",
            ["resource"],
            registry=registry,
        )
        self.events = Counter(
            "prober_inventory_watch_events_total",
            "Watch events received",
            ["resource"],
            registry=registry,
        )
        self.agents = Gauge(
            "prober_inventory_agent_states",
            "Agents in the published inventory, by gating state (only 'probed' ones are probe targets)",
            ["state"],
            registry=registry,
        )
        self.updates = Counter(
            "prober_inventory_updates_total", "Inventories published to the collector", registry=registry
        )
        for resource in RESOURCES:
            for reason in ("api", "network", "decode"):
                self.errors.labels(resource, reason)
            self.relists.labels(resource)
            self.events.labels(resource)
        self.errors.labels("lb", "resolve")
        for state in AgentState:
            self.agents.labels(state.value)


# --- the watch threads -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Synced:
    resource: str
    items: list[Any]


@dataclass(frozen=True, slots=True)
class _Changed:
    resource: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Any


@dataclass(frozen=True, slots=True)
class _Failed:
    resource: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class _Watching:
    """A watch is open again after a failure, resuming where it left off."""

    resource: str


@dataclass(frozen=True, slots=True)
class _Relisting:
    resource: str
    message: str


_Message = _Synced | _Changed | _Failed | _Watching | _Relisting


class _ListMeta(msgspec.Struct, frozen=True, rename="camel"):
    resource_version: str = ""
    continue_: str = msgspec.field(default="", name="continue")


class _ApiList(msgspec.Struct, Generic[T], frozen=True):
    items: list[T]
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)


class _Event(msgspec.Struct, frozen=True):
    type: str
    object: msgspec.Raw


class _Versioned(msgspec.Struct, frozen=True):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)


class _Status(msgspec.Struct, frozen=True):
    code: int = 0
    reason: str = ""
    message: str = ""


class _GoneError(Exception):
    """The resourceVersion is too old to resume from (410): list again."""


class _WatchError(Exception):
    """An ERROR event other than 410 in a watch stream."""


def _api_message(exc: ApiException) -> str:
    detail = ""
    if exc.body:
        try:
            detail = msgspec.json.decode(exc.body, type=_Status).message
        except msgspec.DecodeError:
            detail = str(exc.body).strip()[:200]
    text = f"HTTP {exc.status} {exc.reason or ''}".rstrip()
    if detail:
        text += f": {detail}"
    if exc.status in (401, 403):
        text += (
            " (the collector needs list/watch on nodes, and on pods and services in its namespace:"
            " apply deploy/base/rbac.yaml)"
        )
    return text


def _describe(exc: BaseException) -> tuple[str, str]:
    """(reason label, one-line message) for a failed request or watch."""
    if isinstance(exc, ApiException):
        return "api", _api_message(exc)
    if isinstance(exc, _WatchError):
        return "api", str(exc)
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return "network", f"cannot reach the API server: {exc.reason}"
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return "network", f"{type(exc).__name__}: {exc}"
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        return "decode", f"unexpected API response: {exc}"
    return "internal", f"{type(exc).__name__}: {exc}"


def _abort(resp: Any) -> None:
    """Unblock a thread reading a watch response: shut the socket down under it."""
    conn = getattr(resp, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watcher:
    """One resource's list+watch loop, in a daemon thread (the client is synchronous)."""

    def __init__(
        self,
        resource: str,
        list_fn: Callable[..., Any],
        item_type: type[Any],
        selector: str | None,
        *,
        settings: KubeSettings,
        emit: Callable[[_Message], bool],
        rng: random.Random,
    ) -> None:
        self.resource = resource
        self._list_fn = list_fn
        self._item_type = item_type
        self._list_type: Any = _ApiList[item_type]  # type: ignore[valid-type]
        self._selector = selector
        self._settings = settings
        self._emit_fn = emit
        self._rng = rng
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._resp: Any = None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"prober-watch-{resource}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            resp = self._resp
        if resp is not None:
            _abort(resp)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _emit(self, msg: _Message) -> None:
        if not self._emit_fn(msg):
            self._stopping.set()  # the event loop is gone: nobody listens any more

    def _backoff(self, failures: int) -> float:
        s = self._settings
        cap = min(s.backoff_max_s, s.backoff_min_s * 2.0 ** min(failures, 16))
        return s.backoff_min_s + self._rng.random() * (cap - s.backoff_min_s)

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if rv is None:
                    items, rv = self._list()
                    if self._stopping.is_set():
                        return
                    self._failing = False
                    self._emit(_Synced(self.resource, items))
                started = time.monotonic()
                rv = self._watch(rv)
                failures = 0
                if time.monotonic() - started < 1.0:
                    # A server that ends every watch at once must not make us spin.
                    self._stopping.wait(self._settings.backoff_min_s)
            except _GoneError as exc:
                rv = None
                if not self._stopping.is_set():
                    self._emit(_Relisting(self.resource, str(exc)))
                    self._stopping.wait(self._settings.backoff_min_s)  # never a tight list/410 loop
            except Exception as exc:  # noqa: BLE001 - a dead watcher would freeze the inventory unnoticed
                if self._stopping.is_set():
                    return
                reason, message = _describe(exc)
                if reason == "decode":
                    rv = None
                self._failing = True
                failures += 1
                self._emit(_Failed(self.resource, reason, message))
                self._stopping.wait(self._backoff(failures))

    def _request(self, **kwargs: Any) -> Any:
        if self._selector:
            kwargs["label_selector"] = self._selector
        return self._list_fn(_preload_content=False, **kwargs)

    def _list(self) -> tuple[list[Any], str]:
        s = self._settings
        items: list[Any] = []
        token: str | None = None
        while True:
            try:
                resp = self._request(
                    limit=s.list_page_size,
                    _continue=token,
                    _request_timeout=(s.connect_timeout_s, s.list_timeout_s),
                )
            except ApiException as exc:
                if exc.status == 410:  # the continue token expired mid-list
                    raise _GoneError(_api_message(exc)) from None
                raise
            try:
                data = resp.data
            finally:
                resp.release_conn()
            page = msgspec.json.decode(data, type=self._list_type)
            items.extend(page.items)
            if not page.metadata.continue_:
                return items, page.metadata.resource_version
            token = page.metadata.continue_

    def _watch(self, rv: str) -> str:
        s = self._settings
        timeout = int(s.watch_timeout_s * (1 + self._rng.random() / 2))
        try:
            resp = self._request(
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _request_timeout=(s.connect_timeout_s, timeout + s.read_grace_s),
            )
        except ApiException as exc:
            if exc.status == 410:
                raise _GoneError(_api_message(exc)) from None
            raise
        with self._lock:
            self._resp = resp
        try:
            if self._stopping.is_set():
                return rv
            if self._failing:
                self._failing = False
                self._emit(_Watching(self.resource))
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stopping.is_set():
                    break
                if not line.strip():
                    continue
                event = msgspec.json.decode(line, type=_Event)
                if event.type == "ERROR":
                    status = msgspec.json.decode(event.object, type=_Status)
                    if status.code == 410:
                        raise _GoneError(f"{status.reason}: {status.message}")
                    raise _WatchError(f"watch error {status.code} {status.reason}: {status.message}")
                rv = msgspec.json.decode(event.object, type=_Versioned).metadata.resource_version or rv
                if event.type == "BOOKMARK":
                    continue
                obj = msgspec.json.decode(event.object, type=self._item_type)
                self._emit(_Changed(self.resource, event.type, obj))
        finally:
            with self._lock:
                self._resp = None
            resp.close()
            resp.release_conn()
        return rv


def _post(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Message], msg: _Message) -> bool:
    try:
        loop.call_soon_threadsafe(queue.put_nowait, msg)
    except RuntimeError:  # the loop is closed
        return False
    return True


# --- the source ------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    """The latest object of each kind, as the watches last reported them."""

    objects: dict[str, dict[str, Any]] = field(default_factory=lambda: {r: {} for r in RESOURCES})
    synced: set[str] = field(default_factory=set)
    failing: dict[str, str] = field(default_factory=dict)
    lbs: dict[str, list[ZoneAddress]] = field(default_factory=dict)
    lb_key: tuple[frozenset[str], tuple[str, ...]] | None = None
    problems: set[str] = field(default_factory=set)

    @property
    def ready(self) -> bool:
        return len(self.synced) == len(RESOURCES)

    @property
    def up(self) -> bool:
        return self.ready and not self.failing


class KubernetesInventory:
    """An :class:`~prober.inventory.InventorySource` backed by the Kubernetes API.

    ``configuration`` is a ``kubernetes.client.Configuration`` (see
    :func:`configuration_from`); ``resolver`` resolves load-balancer hostnames
    (default: the system resolver); ``clock`` is the wall clock the warm-up is
    measured with; ``up_gauge`` an already registered ``prober_inventory_source_up``
    to drive instead of registering one. Iterate ``updates()`` under
    ``contextlib.aclosing`` so the watch threads stop when the collector does.
    """

    def __init__(
        self,
        settings: KubeSettings,
        *,
        configuration: Any,
        resolver: Resolver = system_resolver,
        registry: CollectorRegistry = REGISTRY,
        up_gauge: Gauge | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._configuration = configuration
        self._resolver = resolver
        self.metrics = InventoryMetrics(registry, up=up_gauge)
        self._clock = clock
        self._rng = rng or random.Random()
        # The generated API module takes a second or two to import: pay for it here,
        # at start-up, rather than with the event loop blocked.
        self._core_api = kubernetes.client.CoreV1Api

    @property
    def configuration(self) -> Any:
        """The ``kubernetes.client.Configuration`` it reaches the API with (the TokenReview
        client, :mod:`prober.inventory.tokenreview`, uses the same)."""
        return self._configuration

    def _watchers(self, api: Any, emit: Callable[[_Message], bool]) -> list[_Watcher]:
        core = self._core_api(api)
        s = self.settings
        kw: dict[str, Any] = {"settings": s, "emit": emit, "rng": self._rng}
        return [
            _Watcher("nodes", core.list_node, ApiNode, None, **kw),
            _Watcher(
                "pods",
                functools.partial(core.list_namespaced_pod, s.namespace),
                ApiPod,
                s.agent_selector,
                **kw,
            ),
            _Watcher(
                "services",
                functools.partial(core.list_namespaced_service, s.namespace),
                ApiService,
                s.echo_selector,
                **kw,
            ),
        ]

    async def updates(self) -> AsyncGenerator[Inventory, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        st = _State()
        api = kubernetes.client.ApiClient(self._configuration)
        watchers = self._watchers(api, functools.partial(_post, loop, queue))
        self.metrics.up.set(0)
        s = self.settings
        log.info(
            "watching nodes, pods (%s) and services (%s) in namespace %s",
            s.agent_selector,
            s.echo_selector,
            s.namespace,
        )
        for w in watchers:
            w.start()
        last: Inventory | None = None
        dirty_at: float | None = None  # loop time of the first change not yet published
        warm_at: float | None = None  # wall-clock time at which a warm-up ends
        resolve_at = 0.0  # loop time of the next load-balancer lookup
        try:
            while True:
                if st.up:  # while a watch fails, keep quiet: the last published inventory stands
                    now = loop.time()
                    if now >= resolve_at or st.lb_key != self._lb_key(st):
                        if await self._refresh_lbs(st) and dirty_at is None:
                            dirty_at = now
                        resolve_at = loop.time() + s.lb_refresh_s
                    if warm_at is not None and self._clock() >= warm_at:
                        warm_at = None
                        dirty_at = now if dirty_at is None else dirty_at
                    if dirty_at is not None and (last is None or now >= dirty_at + s.settle_s):
                        dirty_at = None
                        built = self._build(st)
                        if built is not None:
                            warm_at = built.next_change_at
                            if built.inventory != last:
                                last = built.inventory
                                self.metrics.updates.inc()
                                yield last
                        continue
                wait_s = self._wait_s(st, loop.time(), dirty_at, warm_at, resolve_at)
                msg = await self._next_message(queue, wait_s)
                changed = False
                while msg is not None:
                    changed |= self._apply(st, msg)
                    msg = queue.get_nowait() if not queue.empty() else None
                if changed and dirty_at is None:
                    dirty_at = loop.time()
        finally:
            for w in watchers:
                w.stop()
            await asyncio.to_thread(_join_all, watchers, 5.0)
            api.close()  # type: ignore[no-untyped-call]
            self.metrics.up.set(0)

    def _wait_s(
        self, st: _State, now: float, dirty_at: float | None, warm_at: float | None, resolve_at: float
    ) -> float | None:
        if not st.up:
            return None  # nothing to do until a watcher reports
        waits = []
        if dirty_at is not None:
            waits.append(dirty_at + self.settings.settle_s - now)
        if st.lb_key and st.lb_key[0]:
            waits.append(resolve_at - now)
        if warm_at is not None:
            waits.append(warm_at - self._clock())
        return max(0.0, min(waits)) if waits else None

    @staticmethod
    async def _next_message(queue: asyncio.Queue[_Message], wait_s: float | None) -> _Message | None:
        try:
            async with asyncio.timeout(wait_s):
                return await queue.get()
        except TimeoutError:
            return None

    def _apply(self, st: _State, msg: _Message) -> bool:
        """Fold one watcher message into the state; True when the objects changed."""
        changed = False
        resource = msg.resource
        if isinstance(msg, _Synced):
            fresh = {_key(o): o for o in msg.items}
            changed = fresh != st.objects[resource] or resource not in st.synced
            st.objects[resource] = fresh
            st.synced.add(resource)
            if st.failing.pop(resource, None) is not None:
                log.info("kubernetes %s: in sync again (%d objects)", resource, len(fresh))
        elif isinstance(msg, _Changed):
            self.metrics.events.labels(resource).inc()
            key = _key(msg.obj)
            objects = st.objects[resource]
            if msg.type == "DELETED":
                changed = objects.pop(key, None) is not None
            else:
                changed = objects.get(key) != msg.obj
                objects[key] = msg.obj
        elif isinstance(msg, _Failed):
            self.metrics.errors.labels(resource, msg.reason).inc()
            if resource not in st.failing:
                log.warning(
                    "kubernetes %s: %s; keeping the last good inventory and retrying", resource, msg.message
                )
            else:
                log.debug("kubernetes %s: still failing: %s", resource, msg.message)
            st.failing[resource] = msg.message
        elif isinstance(msg, _Watching):
            if st.failing.pop(resource, None) is not None:
                log.info("kubernetes %s: watching again", resource)
        else:
            self.metrics.relists.labels(resource).inc()
            log.info("kubernetes %s: cannot resume the watch (%s); listing again", resource, msg.message)
        self.metrics.up.set(1 if st.up else 0)
        return changed

    def _build(self, st: _State) -> Built | None:
        try:
            built = build_inventory(
                st.objects["nodes"],
                st.objects["pods"],
                st.objects["services"],
                lb_addresses=st.lbs,
                settings=self.settings,
                now=self._clock(),
            )
        except InventoryError as exc:
            self.metrics.errors.labels("inventory", "invalid").inc()
            log.error("the cluster state gives an unusable inventory, keeping the last good one: %s", exc)  # noqa: TRY400
            return None
        for problem in sorted(set(built.problems) - st.problems):
            log.info("inventory: %s", problem)
        st.problems = set(built.problems)
        for state, count in built.agent_states.items():
            self.metrics.agents.labels(state.value).set(count)
        return built

    # --- load balancers ----------------------------------------------------------------

    def _zone_nodes(self, st: _State) -> list[Node]:
        return [
            Node(name=n.metadata.name, address=address, zone=node_zone(n))
            for n in st.objects["nodes"].values()
            if (address := node_address(n))
        ]

    def _lb_key(self, st: _State) -> tuple[frozenset[str], tuple[str, ...]]:
        hosts = frozenset(h for svc in st.objects["services"].values() for h in lb_addresses_of(svc))
        zones = sorted({node_zone(n) for n in st.objects["nodes"].values()} - {""})
        return hosts, tuple(zones)

    async def _refresh_lbs(self, st: _State) -> bool:
        """Resolve every load-balancer hostname; True when any address or zone changed."""
        key = self._lb_key(st)
        hosts, zones = key
        nodes = self._zone_nodes(st)
        async with asyncio.TaskGroup() as tg:
            tasks = {h: tg.create_task(self._resolve_lb(h, zones, nodes)) for h in sorted(hosts)}
        fresh: dict[str, list[ZoneAddress]] = {}
        for host, task in tasks.items():
            got = task.result()
            if got is not None:
                fresh[host] = got
            elif host in st.lbs:
                fresh[host] = st.lbs[host]  # lookup failed: keep what we had
        st.lb_key = key
        changed = fresh != st.lbs
        st.lbs = fresh
        return changed

    async def _resolve_lb(
        self, host: str, zones: Sequence[str], nodes: Sequence[Node]
    ) -> list[ZoneAddress] | None:
        """The zone-attributed addresses of one load balancer; ``None`` when a lookup failed."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return attribute_zones([host], {}, nodes)
        zonal_names = [f"{z}.{host}" for z in zones] if is_aws_elb_hostname(host) else []
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._try_lookup(n)) for n in [host, *zonal_names]]
        results = [t.result() for t in tasks]
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            self.metrics.errors.labels("lb", "resolve").inc()
            log.warning("cannot resolve load balancer %s: %s", host, str(failed) or type(failed).__name__)
            return None
        addresses, *zonal = [r for r in results if not isinstance(r, BaseException)]
        if not addresses:
            log.info("load balancer %s does not resolve (yet)", host)
        return attribute_zones(addresses, dict(zip(zones, zonal, strict=False)), nodes)

    async def _try_lookup(self, name: str) -> list[str] | OSError | TimeoutError:
        try:
            async with asyncio.timeout(self.settings.resolve_timeout_s):
                return sorted(set(await self._resolver(name)))
        except (OSError, TimeoutError) as exc:
            return exc


def _key(obj: Any) -> str:
    meta = obj.metadata
    return f"{meta.namespace}/{meta.name}" if meta.namespace else str(meta.name)


def _join_all(watchers: Sequence[_Watcher], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for w in watchers:
        if not w.join(max(0.0, deadline - time.monotonic())):
            log.debug("watch thread for %s still finishing a request; leaving it (daemon)", w.resource)


# --- construction from the command line ------------------------------------------------


def configuration_from(
    settings: KubeSettings,
    *,
    in_cluster: bool,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """A ``kubernetes.client.Configuration``: in-cluster by default, else the kubeconfig.

    In a pod: the API server from ``KUBERNETES_SERVICE_HOST``/``_PORT``, the service
    account's CA and token (re-read every minute, as projected tokens rotate). With
    ``--kubeconfig``, or outside a cluster: that file (``$KUBECONFIG`` or
    ``~/.kube/config`` when none is given). Raises :class:`~prober.errors.UsageError`
    with a one-line reason when neither works.
    """
    cfg = kubernetes.client.Configuration()
    try:
        if settings.kubeconfig is None and in_cluster:
            kubernetes.config.incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(service_account_dir / "token"),
                cert_filename=str(service_account_dir / "ca.crt"),
                environ=os.environ if environ is None else environ,
            ).load_and_set(cfg)
        else:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=settings.kubeconfig, context=settings.context, client_configuration=cfg
            )
    except (kubernetes.config.ConfigException, OSError, ValueError, yaml.YAMLError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        hint = "" if settings.kubeconfig or in_cluster else " (not in a cluster: pass --kubeconfig PATH)"
        raise UsageError(f"cannot configure the Kubernetes client: {text}{hint}") from None
    return cfg


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def kube_inventory_from(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    agent_selector: str = DEFAULT_AGENT_SELECTOR,
    echo_selector: str = DEFAULT_ECHO_SELECTOR,
    warmup_s: float = WARMUP.default,
    dns_servers: Sequence[str] = (),
    dns_query: str = DEFAULT_DNS_QUERY,
    externals: Sequence[str] = (),
    registry: CollectorRegistry = REGISTRY,
    up_gauge: Gauge | None = None,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    resolv_conf: Path = Path("/etc/resolv.conf"),
) -> KubernetesInventory:
    """The collector's ``--kubernetes`` source, from its command-line values.

    Fails fast (:class:`~prober.errors.UsageError`) on bad flags or a client that
    cannot be configured; API errors after that are retried, never raised.
    """
    env = os.environ if environ is None else environ
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir / "token").exists()
    settings = kube_settings_from(
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        agent_selector=agent_selector,
        echo_selector=echo_selector,
        warmup_s=warmup_s,
        dns_servers=dns_servers,
        dns_query=dns_query,
        externals=externals,
        in_cluster_namespace=_read(service_account_dir / "namespace") if in_cluster else None,
        resolv_conf=_read(resolv_conf) if in_cluster else None,
    )
    configuration = configuration_from(
        settings, in_cluster=in_cluster, service_account_dir=service_account_dir, environ=env
    )
    return KubernetesInventory(settings, configuration=configuration, registry=registry, up_gauge=up_gauge)
