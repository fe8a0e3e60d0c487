"""``prober echo`` as a DaemonSet runs it: a subprocess on loopback, flags and env, SIGTERM."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prober.agent.echo import parse_udp_reply, udp_request
from prober.agent.settings import echo_settings_from
from prober.model import SrcKind
from tests.integration.waits import STARTED_S

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HOST = "127.0.0.7"


def prober(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prober", *args], capture_output=True, text=True, env=env or ENV, cwd=ROOT,
        timeout=30, check=False,
    )  # fmt: skip


def free_ports(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def running_echo(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "prober", "echo", *args],
        env=env or ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTED_S
    while True:
        assert proc.poll() is None, "prober echo exited early"
        try:
            if get(f"{url}/readyz")[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "prober echo did not become ready"
        time.sleep(0.05)


def test_help_says_what_it_serves() -> None:
    out = prober("echo", "--help")
    assert out.returncode == 0
    for fragment in ("--network", "PROBER_NODE_NAME", "PROBER_LISTEN", "/readyz", "SIGTERM", "NLB"):
        assert fragment in out.stdout
    assert "--collector" not in out.stdout  # it probes nothing
    listed = prober("--help")
    assert "echo" in listed.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["--network", "pod"], "--node", id="missing-node"),
        pytest.param(["--node", "a"], "--network", id="missing-network"),
        pytest.param(["--network", "pod", "--node", "a", "--listen", "nowhere"], "not an IP address",
                     id="bad-listen"),
        pytest.param(["--network", "pod", "--node", "a", "--collector", "http://x"], "No such option",
                     id="no-probing-flags"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    out = prober("echo", *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("prober: error:")
    assert fragment in lines[0]


def test_env_and_flags_parse_like_the_agents() -> None:
    env = {"PROBER_NETWORK": "pod", "PROBER_NODE_NAME": "node-a", "PROBER_LISTEN": "10.0.0.5"}
    s = echo_settings_from(env, [])
    assert (s.network, s.node, s.name, s.listen, s.http_port, s.udp_port) == (
        SrcKind.POD, "node-a", "echo-node-a", "10.0.0.5", 8080, 8081,
    )  # fmt: skip
    s = echo_settings_from({**env, "PROBER_AGENT_NAME": "prober-echo-x1"}, ["--http-port", "9000"])
    assert (s.name, s.http_port) == ("prober-echo-x1", 9000)


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = prober("echo", "--network", "pod", "--node", "a", "--listen", HOST, "--http-port", str(port))
    assert out.returncode == 2
    assert "cannot serve on 127.0.0.7" in out.stderr
    assert "Traceback" not in out.stderr


def test_serves_both_echoes_metrics_and_drains_on_sigterm() -> None:
    http_port, udp_port = free_ports(socket.SOCK_STREAM), free_ports(socket.SOCK_DGRAM)
    env = {**ENV, "PROBER_NETWORK": "pod", "PROBER_NODE_NAME": "node-b"}
    env["PROBER_AGENT_NAME"] = "prober-echo-7k"
    url = f"http://{HOST}:{http_port}"
    with running_echo(
        "--listen", HOST, "--http-port", str(http_port), "--udp-port", str(udp_port), env=env
    ) as proc:
        wait_ready(url, proc)
        status, body = get(f"{url}/")
        answer = json.loads(body)
        assert status == 200
        # who answered and whom it saw, never the echo's (or agent's) name: that is what
        # an agent's pinglist is keyed by
        assert set(answer) == {"node", "kind", "client_ip", "client_port"}
        assert (answer["node"], answer["kind"], answer["client_ip"]) == ("node-b", "pod", "127.0.0.1")
        assert isinstance(answer["client_port"], int)
        assert b"prober-echo-7k" not in body
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.bind(("127.0.0.3", 0))
            nonce = b"12345678"
            s.sendto(udp_request(nonce), (HOST, udp_port))
            reply = parse_udp_reply(s.recv(2048), nonce)
        assert reply is not None
        assert (reply.node, reply.client_ip) == ("node-b", "127.0.0.3")
        assert get(f"{url}/healthz")[0] == 200
        status, _ = _post(f"{url}/sweep")
        assert status == 404  # nothing on an echo starts work
        metrics = get(f"{url}/metrics")[1].decode()
        assert 'prober_echo_requests_total{proto="http"} 1.0' in metrics
        assert 'prober_echo_requests_total{proto="udp"} 1.0' in metrics
        assert 'prober_echo_info{kind="pod",node="node-b"' in metrics
        assert "prober_probes_total" not in metrics

        proc.send_signal(signal.SIGTERM)
        # Readiness fails first, while the echo still answers.
        deadline = time.monotonic() + 5
        while get(f"{url}/readyz")[0] != 503:
            assert time.monotonic() < deadline, "readiness did not fail after SIGTERM"
            time.sleep(0.02)
        assert get(f"{url}/")[0] == 200
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert b"shutdown: done" in proc.stderr.read()


def _post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_slow_headers_are_cut_off_and_the_connection_cap_holds() -> None:
    """600 connections that send half a request head and stop: those under the cap (512)
    are held at most the header deadline (5 s), the rest are closed at once; then the
    echo answers again. About 10 s."""
    http_port, udp_port = free_ports(socket.SOCK_STREAM), free_ports(socket.SOCK_DGRAM)
    env = {**ENV, "PROBER_NETWORK": "pod", "PROBER_NODE_NAME": "node-b"}
    url = f"http://{HOST}:{http_port}"
    with running_echo(
        "--listen", HOST, "--http-port", str(http_port), "--udp-port", str(udp_port), env=env
    ) as proc:
        wait_ready(url, proc)
        sel = selectors.DefaultSelector()
        socks: list[socket.socket] = []
        try:
            opened: dict[int, float] = {}
            for _ in range(600):
                s = socket.create_connection((HOST, http_port), timeout=5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: echo\r\nX-Slow: ")
                s.setblocking(False)  # noqa: FBT003
                sel.register(s, selectors.EVENT_READ)
                socks.append(s)
                opened[s.fileno()] = time.monotonic()
            closed_after: dict[int, float] = {}
            deadline = time.monotonic() + 12
            while len(closed_after) < len(socks) and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        closed_after[sock.fileno()] = time.monotonic() - opened[sock.fileno()]
                        sel.unregister(sock)
            assert len(closed_after) == 600, (
                f"{600 - len(closed_after)} slow connections still open after 12 s"
            )
            assert max(closed_after.values()) < 5.0 + 3.0  # the header deadline, and some slack for load
        finally:
            for s in socks:
                s.close()
        assert get(f"{url}/")[0] == 200
        metrics = get(f"{url}/metrics")[1].decode()
        closed = {
            reason: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            for reason in ("header_timeout", "over_cap", "body_timeout")
            if line.startswith(f'prober_http_closed_connections_total{{reason="{reason}"}}')
        }
        # every slow connection was closed by the server's bounds: held until the header
        # deadline while under the cap (512), closed at once above it; how many of each
        # depends on how fast this machine opened them (tests/integration/test_http_server.py
        # holds the cap exactly)
        assert closed.get("header_timeout", 0) + closed.get("over_cap", 0) == 600, closed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
