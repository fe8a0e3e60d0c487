"""A small Kubernetes API server for tests: list and watch nodes, pods and services; TokenReview.

It serves recorded objects (``tests/data/kube/``) over real HTTP the way the API
server does: lists with ``resourceVersion``, ``limit`` and ``continue``; equality
label selectors; watches as chunked JSON lines resumable from a resourceVersion,
with ``410 Gone`` (an ERROR event) for versions older than the last compaction;
``timeoutSeconds``; and error answers as ``Status`` objects. Tests drive it with
:meth:`FakeKubeApi.emit` (a change, delivered to watchers), :meth:`set_silently` (a
change nobody is told about: only a relist sees it), :meth:`drop_watches`,
:meth:`compact` and :attr:`failing`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DATA = Path(__file__).parents[1] / "data" / "kube"

LIST_KINDS = {"nodes": "NodeList", "pods": "PodList", "services": "ServiceList"}
UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def load_events(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@dataclass
class Request:
    resource: str
    watch: bool
    query: dict[str, str]


@dataclass
class _Watch:
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)


class FakeKubeApi:
    def __init__(self, namespace: str = "prober", *, token: str | None = None) -> None:
        self.namespace = namespace
        self.token = token  # when set, requests must carry "Authorization: Bearer <token>"
        self.rv = 5000
        self.objects: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in LIST_KINDS}
        self.history: dict[str, list[tuple[int, str]]] = {r: [] for r in LIST_KINDS}
        self.compacted = 0
        self.watches: dict[str, list[_Watch]] = {r: [] for r in LIST_KINDS}
        self.requests: list[Request] = []
        #: resource -> (HTTP status, Status body) answered to every request while set
        self.failing: dict[str, tuple[int, dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        #: token -> the recorded TokenReview answered for it (``tokenreviews.json``)
        self.token_reviews: dict[str, dict[str, Any]] = {}
        self.reviewed: list[str] = []  # every token a TokenReview was created for
        self._unauthenticated: dict[str, Any] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "status": {"user": {}, "error": "[invalid bearer token, token lookup failed]"},
        }

    def issue_token(self, *, pod: str, node: str, service_account: str, audience: str) -> str:
        """A projected token of ``pod`` (as the kubelet asks the API server for one), which
        TokenReview then vouches for, with the pod and node claims."""
        token = f"lab.{secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)}"
        uid = secrets.token_hex(8)
        self.token_reviews[token] = {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"token": token, "audiences": [audience]},
            "status": {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{self.namespace}:{service_account}",
                    "uid": uid,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}"],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [pod],
                        "authentication.kubernetes.io/node-name": [node],
                    },
                },
                "audiences": [audience],
            },
        }
        return token

    def load_token_reviews(self, doc: dict[str, Any]) -> dict[str, str]:
        """Serve the recorded reviews; returns their tokens by the recording's names."""
        tokens = {}
        for name, review in doc["reviews"].items():
            self.token_reviews[review["spec"]["token"]] = review
            tokens[name] = review["spec"]["token"]
        self._unauthenticated = doc["unauthenticated"]
        return tokens

    # --- state ------------------------------------------------------------------------

    def load_list(self, resource: str, doc: dict[str, Any]) -> None:
        assert doc["kind"] == LIST_KINDS[resource]
        for item in doc["items"]:
            self.objects[resource][item["metadata"]["name"]] = copy.deepcopy(item)

    def _stamp(self, obj: dict[str, Any]) -> int:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return self.rv

    def set_silently(self, resource: str, obj: dict[str, Any] | None, *, name: str | None = None) -> None:
        """Change the state without a watch event (as if it happened while nobody watched)."""
        if obj is None:
            assert name is not None
            self.objects[resource].pop(name, None)
            self.rv += 1
            return
        obj = copy.deepcopy(obj)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        self._stamp(obj)
        self.objects[resource][obj["metadata"]["name"]] = obj

    def emit(self, resource: str, event: dict[str, Any]) -> None:
        """Apply a recorded watch event and deliver it to every open watch."""
        obj = copy.deepcopy(event["object"])
        rv = self._stamp(obj)
        stored = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        if event["type"] == "DELETED":
            self.objects[resource].pop(obj["metadata"]["name"], None)
        else:
            self.objects[resource][obj["metadata"]["name"]] = stored
        line = json.dumps({"type": event["type"], "object": obj}, separators=(",", ":"))
        self.history[resource].append((rv, line))
        for w in self.watches[resource]:
            w.queue.put_nowait(line)

    def send_raw(self, resource: str, event: dict[str, Any]) -> None:
        """Send an event (e.g. a recorded ERROR) to the open watches as it is."""
        line = json.dumps(event, separators=(",", ":"))
        for w in self.watches[resource]:
            w.queue.put_nowait(line)

    def drop_watches(self, resource: str | None = None) -> None:
        """End open watch streams (the server closing them, as on a timeout)."""
        for r in [resource] if resource else list(LIST_KINDS):
            for w in self.watches[r]:
                w.queue.put_nowait(None)

    def compact(self) -> None:
        """Forget history: a watch from an older resourceVersion gets 410 Gone."""
        self.compacted = self.rv
        for r in LIST_KINDS:
            self.history[r].clear()

    def lists(self, resource: str) -> list[Request]:
        return [r for r in self.requests if r.resource == resource and not r.watch]

    # --- HTTP -------------------------------------------------------------------------

    async def start(
        self, ssl_context: ssl.SSLContext | None = None, *, sock: socket.socket | None = None
    ) -> str:
        """Serve on 127.0.0.1 (a free port), or on ``sock`` (a listening socket made elsewhere)."""
        app = web.Application()
        app.router.add_get("/api/v1/nodes", self._nodes)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._pods)
        app.router.add_get("/api/v1/namespaces/{ns}/services", self._services)
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        else:
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        return self.url

    async def close(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _nodes(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("nodes", request)

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("pods", request)

    async def _services(self, request: web.Request) -> web.StreamResponse:
        return await self._serve("services", request)

    def _authorized(self, request: web.Request) -> bool:
        """The caller's bearer token, as the API server reads it: the scheme in any case (the
        client's in-cluster configuration sends ``bearer``)."""
        if self.token is None:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and credentials == self.token

    async def _token_review(self, request: web.Request) -> web.StreamResponse:
        """``create`` a TokenReview: the recorded answer for a known token reviewed for its own
        audiences; unauthenticated for any other token or audience, as the API server answers."""
        self.requests.append(Request("tokenreviews", watch=False, query=dict(request.query)))
        if not self._authorized(request):
            return web.json_response(UNAUTHORIZED, status=401)
        if "tokenreviews" in self.failing:
            status, body = self.failing["tokenreviews"]
            return web.json_response(body, status=status)
        spec = (await request.json())["spec"]
        self.reviewed.append(spec["token"])
        recorded = self.token_reviews.get(spec["token"])
        if recorded is None or sorted(spec.get("audiences") or []) != sorted(recorded["spec"]["audiences"]):
            answer = copy.deepcopy(self._unauthenticated)
        else:
            answer = copy.deepcopy(recorded)
        answer["spec"] = spec
        return web.json_response(answer, status=201)

    @staticmethod
    def _selector(request: web.Request) -> dict[str, str]:
        wanted = {}
        for req in filter(None, request.query.get("labelSelector", "").split(",")):
            key, _, value = req.partition("=")
            wanted[key] = value
        return wanted

    def _selected(self, resource: str, request: web.Request) -> list[dict[str, Any]]:
        if resource != "nodes" and request.match_info["ns"] != self.namespace:
            return []
        wanted = self._selector(request)
        return [
            o
            for _, o in sorted(self.objects[resource].items())
            if all(o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]

    @staticmethod
    def _event_selected(line: str, wanted: dict[str, str]) -> bool:
        """A watch, like a list, sees only the objects its label selector matches (ERROR events pass)."""
        if not wanted:
            return True
        obj = json.loads(line).get("object", {})
        labels = obj.get("metadata", {}).get("labels")
        return labels is None or all(labels.get(k) == v for k, v in wanted.items())

    async def _serve(self, resource: str, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        self.requests.append(Request(resource, watch, dict(request.query)))
        if not self._authorized(request):
            return web.json_response(UNAUTHORIZED, status=401)
        if resource in self.failing:
            status, body = self.failing[resource]
            return web.json_response(body, status=status)
        if watch:
            return await self._watch(resource, request)
        items = self._selected(resource, request)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        doc = {"kind": LIST_KINDS[resource], "apiVersion": "v1", "metadata": meta, "items": page}
        return web.json_response(doc)

    async def _watch(self, resource: str, request: web.Request) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 3600)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if since < self.compacted:
            gone = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {since} ({self.compacted})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            await resp.write(json.dumps(gone).encode() + b"\n")
            await resp.write_eof()
            return resp
        w = _Watch()
        wanted = self._selector(request)
        for rv, past in self.history[resource]:
            if rv > since:
                w.queue.put_nowait(past)
        self.watches[resource].append(w)
        try:
            async with asyncio.timeout(timeout):
                while (line := await w.queue.get()) is not None:
                    if self._event_selected(line, wanted):
                        await resp.write(line.encode() + b"\n")
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.watches[resource].remove(w)
        if not request.transport or request.transport.is_closing():
            return resp
        await resp.write_eof()
        return resp
