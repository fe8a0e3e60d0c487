"""A real Prometheus for tests: a temp dir, a loopback port, a short scrape interval, a bounded life."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.integration.waits import STARTED_S

PROMETHEUS = shutil.which("prometheus")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (loopback only; a tiny race is acceptable here)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Prometheus:
    url: str
    log: Path

    def _get(self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.load(resp)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (a scalar comes back as one unlabelled sample)."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = [("match[]", match)] if match else []
        values: list[str] = self._get(f"/api/v1/label/{label}/values", params)
        return values

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups

    def targets_up(self) -> dict[str, str]:
        data = self._get("/api/v1/targets", {"state": "active"})
        return {t["scrapeUrl"]: t["health"] for t in data["activeTargets"]}

    def wait_for(self, expr: str, *, timeout_s: float, min_results: int = 1) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least ``min_results`` samples."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if len(result) >= min_results:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"no data for {expr!r} after {timeout_s:.0f} s; log: {self.log}")
            time.sleep(0.5)


@contextlib.contextmanager
def prometheus(
    tmp: Path,
    *,
    jobs: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    interval_s: float = 1.0,
    target_labels: Mapping[str, str] | None = None,
) -> Iterator[Prometheus]:
    """Run Prometheus scraping ``jobs`` (job name → host:port targets) with ``rule_files``
    loaded; ``target_labels`` are added to every scraped series (as a fleet's ``cluster``
    label arrives in Thanos or Mimir)."""
    assert PROMETHEUS is not None, "prometheus not installed"
    tmp.mkdir(parents=True, exist_ok=True)
    interval = f"{int(interval_s * 1000)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p.resolve()) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": list(targets), "labels": dict(target_labels or {})}],
            }
            for job, targets in jobs.items()
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as log_fh:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTED_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"prometheus exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"prometheus not ready after 20 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield Prometheus(url=url, log=log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
