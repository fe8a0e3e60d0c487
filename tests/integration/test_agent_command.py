"""``prober agent`` as users run it: a subprocess, flags, signals, exit codes."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prober.model import Outcome
from prober.records import read_records
from tests.integration.test_agent_reporter import free_port
from tests.integration.waits import STARTED_S

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def prober(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prober", *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
        timeout=30, check=False,
    )  # fmt: skip


def test_help_teaches_with_examples() -> None:
    out = prober("agent", "--help")
    assert out.returncode == 0
    for fragment in ("--network", "PROBER_NODE_NAME", "--collector", "--inventory",
                     "prober agent --network pod", "GET only", "SIGTERM"):  # fmt: skip
        assert fragment in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["--network", "pod"], "--node", id="missing-node"),
        pytest.param(["--network", "pod", "--node", "a", "--collector", "ftp://x"], "http(s)://", id="url"),
        pytest.param(["--network", "pod", "--node", "a", "--inventory", "/nonexistent/inv.yaml"],
                     "cannot read inventory /nonexistent/inv.yaml", id="unreadable-inventory"),
        pytest.param(["--network", "pod", "--node", "a", "--inventory", "examples/loopback-inventory.yaml"],
                     "agent 'pod-a' is not in the inventory", id="unknown-agent"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    out = prober("agent", *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("prober: error:")
    assert fragment in lines[0]


@pytest.mark.slow
def test_two_standalone_agents_probe_each_other_and_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    ports = {n: (free_port(), free_port()) for n in ("a", "b")}
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        "nodes:\n"
        "  - {name: node-a, address: 127.0.0.2}\n"
        "  - {name: node-b, address: 127.0.0.3}\n"
        "agents:\n"
        f"  - {{name: host-node-a, node: node-a, kind: host, address: 127.0.0.2, http_port: {ports['a'][0]}, "
        f"udp_port: {ports['a'][1]}}}\n"
        f"  - {{name: host-node-b, node: node-b, kind: host, address: 127.0.0.3, http_port: {ports['b'][0]}, "
        f"udp_port: {ports['b'][1]}}}\n"
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for n, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
            procs[n] = subprocess.Popen(
                [sys.executable, "-m", "prober", "agent", "--network", "host", "--node", f"node-{n}",
                 "--inventory", str(inv), "--listen", ip, "--source-ip", ip, "--http-port", str(ports[n][0]),
                 "--udp-port", str(ports[n][1]), "--interval", "1", "--timeout", "1",
                 "--results-file", str(tmp_path / f"{n}.jsonl")],
                env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip

        def peers_ok() -> bool:
            for n, other in (("a", "node-b"), ("b", "node-a")):
                path = tmp_path / f"{n}.jsonl"
                if not path.exists() or not path.read_bytes().endswith(b"\n"):
                    return False
                if not any(r.dst_node == other and r.outcome is Outcome.OK for r in read_records(path)):
                    return False
            return True

        deadline = time.monotonic() + STARTED_S
        while not peers_ok():
            assert all(p.poll() is None for p in procs.values()), "an agent exited early"
            assert time.monotonic() < deadline, "agents did not probe each other"
            time.sleep(0.2)
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            assert p.wait(timeout=15) == 0
            assert p.stderr is not None
            assert b"shutdown: done" in p.stderr.read()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdout, p.stderr):
                if stream is not None:
                    stream.close()
    a = read_records(tmp_path / "a.jsonl")
    assert {r.src_ip for r in a} == {"127.0.0.2"}
    # What node-b's echo saw, in every answer (a probe sent before node-b listened, or
    # cut short by the stop, has no answer and no seen address).
    assert {r.seen_src_ip for r in a if r.dst_node == "node-b" and r.outcome is Outcome.OK} == {"127.0.0.2"}


def self_signed(where: Path, subject: str, *extensions: str) -> tuple[Path, Path]:
    """A self-signed P-256 certificate made by ``openssl``: (certificate, key)."""
    where.mkdir(exist_ok=True)
    cert, key = where / "tls.crt", where / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", subject, *extensions, "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def serving_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1: (certificate, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a serving certificate")
    return self_signed(tmp_path / "serving", "/CN=prober-collector", "-addext", "subjectAltName=IP:127.0.0.1")


@contextlib.contextmanager
def tls_front(cert: Path, key: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS server standing in front of a collector: (URL, the paths asked for). Answers 503."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_an_https_collector_is_verified_against_the_system_cas(
    tmp_path: Path, serving_cert: tuple[Path, Path], trusted: bool
) -> None:
    """The agent loads aiohttp without its CA-holding default contexts (for memory), so
    it must verify an https:// collector with a context of its own: one that trusts what
    the system trusts (here ``SSL_CERT_FILE``) and nothing else."""
    cert, key = serving_cert
    other_cert, _ = self_signed(tmp_path / "other", "/CN=someone-else")
    env = {
        **ENV,
        "SSL_CERT_FILE": str(cert if trusted else other_cert),
        "SSL_CERT_DIR": str(other_cert.parent),
    }
    with tls_front(cert, key) as (url, asked):
        proc = subprocess.Popen(
            [sys.executable, "-m", "prober", "agent", "--network", "host", "--node", "node-a",
             "--collector", url, "--listen", "127.0.0.1", "--http-port", str(free_port()),
             "--udp-port", str(free_port())],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stderr = proc.stderr
        assert stderr is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + STARTED_S
            while not (asked if trusted else any("pinglist fetch failed" in line for line in lines)):
                assert proc.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                reader.join(timeout=5)
                stderr.close()
    if trusted:
        assert asked[0].startswith("/api/v1/pinglist"), asked
    else:
        assert asked == []
        failed = next(line for line in lines if "pinglist fetch failed" in line)
        assert "CERTIFICATE_VERIFY_FAILED" in failed, failed
