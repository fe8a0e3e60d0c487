"""A bounded property-based fuzz of the collector's ingest endpoint, over real HTTP on loopback.

Hypothesis makes batches of hostile lines (random bytes, genuine records with one field
replaced by any JSON value, deep nesting, huge names) and sends each with a slice of
genuine results of a cluster whose node is unreachable. Whatever it sends: no answer
is a 5xx, the collector's memory stays bounded, and the genuine results still name the
fault. Bounded: at most 60 batches, each at most 2 MiB.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prober.records import encode_records
from tests.integration.collector_helpers import running_collector
from tests.synth import Cluster, Fault, generate

C5 = Cluster(n_nodes=5)
UNREACHABLE = Fault(kind="node-unreachable", nodes=(C5.nodes[2],))
EXAMPLES = 60


@contextmanager
def collector_in_thread(tmp_path: Path) -> Iterator[str]:
    """A real collector on its own event loop in a thread; yields its URL."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = (asyncio.get_running_loop(), stop)
        async with running_collector(tmp_path, C5.inventory()) as (_, url):
            box["url"] = url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the collector did not start"
    try:
        yield box["url"]
    finally:
        loop, stop = box["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(f"{url}/api/v1/results", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def test_no_input_makes_the_collector_fail_or_forget_the_genuine_results(tmp_path: Path) -> None:
    now = time.time()
    genuine = generate(C5, rounds=6, faults=[UNREACHABLE], seed=3, start_ts=now - 60.0)
    # Hostile lines are built on a record stamped outside every diagnosed window, so a
    # mutation that happens to be valid cannot change what the genuine results say.
    base = msgspec.json.decode(msgspec.json.encode(genuine[0]))
    base["ts"] = now - 800.0
    fields = sorted(k for k in base if k != "ts")
    mutated = st.builds(
        lambda field, value: json.dumps({**base, field: value}, allow_nan=True).encode(),
        st.sampled_from(fields),
        JSON_VALUES,
    )
    nested = st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)
    huge = st.integers(1000, 400_000).map(lambda n: json.dumps({**base, "src_node": "n" * n}).encode())
    lines = st.lists(st.binary(max_size=300) | mutated | nested | huge, max_size=40)
    slices = iter([genuine[i::EXAMPLES] for i in range(EXAMPLES)])
    statuses: list[int] = []

    with collector_in_thread(tmp_path) as url:
        before = rss_bytes()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(lines)
        def hostile_batch(hostile: list[bytes]) -> None:
            share = next(slices, [])
            status, body = post(url, encode_records(share) + b"\n".join(hostile))
            statuses.append(status)
            assert status < 500, body[:300]
            if status != 200 and share:  # a refused batch: send the genuine share again alone
                status, body = post(url, encode_records(share))
                assert status == 200, body[:300]

        hostile_batch()
        for share in slices:  # the slices hypothesis did not use
            assert post(url, encode_records(share))[0] == 200
        assert rss_bytes() - before < 128 * 2**20
        for _ in range(100):
            found = [(f["kind"], f["nodes"]) for f in get_json(f"{url}/api/v1/findings")["findings"]]
            if found == [("node-unreachable", [C5.nodes[2]])]:
                break
            time.sleep(0.1)
        assert found == [("node-unreachable", [C5.nodes[2]])]
    assert set(statuses) <= {200, 400, 413}
