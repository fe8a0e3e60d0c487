"""The container image's facts for README.md: size, layers, start-up time, an idle agent's RSS.

Root, with podman (and buildah for the compressed size). Measures the image
``scripts/build-image`` made (default ``localhost/prober:<version>``):

* uncompressed size and layers (``podman image inspect``), the size of each layer;
* compressed size: the image written as an OCI layout with gzip layers, as a registry stores it;
* start-up: ``podman run`` of ``prober agent``, ``prober echo`` and ``prober collector`` with
  the manifests' hardening (read-only root, UID 65532, no capabilities, no-new-privileges)
  until ``/readyz`` answers 200, best and median of ``--runs``; and ``prober --version``,
  the runtime's own floor;
* RSS of an idle agent (standalone, one target: itself) 10 s after it is ready.

Containers use the host network and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).parents[1]
HARDENING = [
    *("--read-only", "--read-only-tmpfs=false", "--user", "65532:65532", "--cap-drop=ALL"),
    *("--security-opt", "no-new-privileges", "--network", "host", "--tmpfs", "/tmp"),
]


def podman(*args: str, check: bool = True) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check).stdout


def runtime_args() -> tuple[list[str], list[str]]:
    """``podman`` options before ``run`` (the OCI runtime), and the ``--ulimit`` values allowed here."""
    import resource
    import shutil

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    out = [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={nproc}:{nproc}"]
    return (["--runtime", "runc"] if shutil.which("runc") else []), out


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_until_ready(
    image: str, name: str, port: int, args: list[str], volume: str | None
) -> tuple[float, int]:
    pre, ulimits = runtime_args()
    extra = ["--volume", volume] if volume else []
    argv = ["podman", *pre, "run", "-d", "--rm", "--name", name, *HARDENING, *ulimits, *extra, image, *args]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    while not ready(port):
        if time.perf_counter() - start > 60:
            raise SystemExit(f"{name} not ready after 60 s:\n{podman('logs', name, check=False)}")
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).strip())
    return elapsed, pid


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: start-up cost independent of the machine's load."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    version = runpy.run_path(str(ROOT / "prober/__init__.py"))["__version__"]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", default=f"localhost/prober:{version}")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-size", action="store_true", help="skip the sizes (start-up and RSS only)")
    args = parser.parse_args()
    image = args.image

    if not args.no_size:
        sizes(image)
    startup(image, args.runs)


def sizes(image: str) -> None:
    info = json.loads(podman("image", "inspect", image))[0]
    print(f"image {image}: {info['Size'] / 1e6:.1f} MB uncompressed, {len(info['RootFS']['Layers'])} layers")
    history = json.loads(podman("history", "--format", "json", image))
    for h in reversed(history):
        if h.get("size", 0):
            print(f"  layer {h['size'] / 1e6:7.1f} MB  {h.get('CreatedBy', h.get('createdBy', ''))[:90]}")
    with tempfile.TemporaryDirectory() as tmp:
        layout = Path(tmp) / "oci"
        subprocess.run(
            ["buildah", "push", "--quiet", "--compression-format", "gzip", image, f"oci:{layout}"],
            check=True,
            capture_output=True,
        )
        index = json.loads((layout / "index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
        compressed = sum(layer["size"] for layer in manifest["layers"])
        print(f"compressed (gzip layers, as pushed): {compressed / 1e6:.1f} MB")


def startup(image: str, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inv = Path(tmp) / "inventory.yaml"
        inv.write_text(
            "nodes: [{name: node-a, address: 127.0.0.1}]\n"
            "agents: [{name: agent-a, node: node-a, kind: host, address: 127.0.0.1, http_port: 18480, "
            "udp_port: 18481}]\n"
        )
        inv.chmod(0o644)
        volume = f"{inv}:/etc/prober/inventory.yaml:ro"
        cases = {
            "prober agent": (
                18480,
                [
                    "agent",
                    "--network",
                    "host",
                    "--node",
                    "node-a",
                    "--name",
                    "agent-a",
                    "--listen",
                    "127.0.0.1",
                    "--http-port",
                    "18480",
                    "--udp-port",
                    "18481",
                    "--inventory",
                    "/etc/prober/inventory.yaml",
                    "--interval",
                    "10",
                    "--budget",
                    "20",
                ],
            ),
            "prober echo": (
                18482,
                [
                    "echo",
                    "--network",
                    "pod",
                    "--node",
                    "node-a",
                    "--name",
                    "echo-a",
                    "--listen",
                    "127.0.0.1",
                    "--http-port",
                    "18482",
                    "--udp-port",
                    "18483",
                ],
            ),
            "prober collector": (
                18490,
                [
                    "collector",
                    "--inventory",
                    "/etc/prober/inventory.yaml",
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    "18490",
                ],
            ),
        }
        pre, ulimits = runtime_args()
        floor = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                ["podman", *pre, "run", "--rm", *HARDENING, *ulimits, image, "--version"],
                check=True,
                capture_output=True,
            )
            floor.append(time.perf_counter() - start)
        print(
            f"podman run {image} --version: best {min(floor):.2f} s, median {statistics.median(floor):.2f} s"
        )
        for what, (port, argv) in cases.items():
            times, cpus = [], []
            for i in range(runs):
                name = f"prober-bench-{port}-{i}"
                try:
                    elapsed, pid = start_until_ready(image, name, port, argv, volume)
                    times.append(elapsed)
                    cpus.append(cpu_s(pid))
                    if what == "prober agent" and i == 0:
                        time.sleep(10.0)
                        print(f"idle agent RSS 10 s after ready: {rss_mib(pid):.1f} MiB")
                finally:
                    podman("rm", "--force", "--time", "2", name, check=False)
            best, median = min(times), statistics.median(times)
            print(
                f"{what}: podman run -> /readyz 200: best {best:.2f} s, median {median:.2f} s; "
                f"the process's CPU until ready: median {statistics.median(cpus):.2f} s"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
