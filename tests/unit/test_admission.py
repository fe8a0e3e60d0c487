"""The collector's edge without sockets: which lines of a batch may enter the store, and why not."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.aggregation import Keys, reduce_entries
from prober.collector.admission import EdgeRules, SourceQuotas, admit_batch
from prober.inventory import Agent, External, Inventory, Nlb, Node, Service, ZoneAddress
from prober.model import Outcome, ProbeResult, Proto, SrcKind

NOW = 1_763_856_000.0
INV = Inventory(
    nodes=[Node(name=n, address="10.0.0.1") for n in ("node-a", "node-b")],
    agents=[Agent(name="agent-a", node="node-a", kind=SrcKind.POD, address="10.0.1.1")],
    services=[Service(name="echo", address="10.96.0.10")],
    nlbs=[Nlb(name="echo", addresses=[ZoneAddress(zone="z1", address="172.31.0.5")])],
    externals=[External(name="api", address="api.example.com", port=443)],
)
RULES = EdgeRules.of(INV, retention_s=900.0, skew_s=30.0, max_rejected=5)
GOOD: dict[str, Any] = {
    "ts": NOW - 1, "path": "pod-to-pod", "src_node": "node-a", "src_kind": "pod", "target": "pod/node-b",
    "outcome": "ok", "proto": "http", "dst_node": "node-b", "latency_s": 0.001, "target_port": 8080,
}  # fmt: skip


def line(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        pytest.param(line(ts=NOW + 31), "in the future", id="ts-beyond-the-skew"),
        pytest.param(line(ts=NOW - 901), "older than the retention", id="ts-beyond-retention"),
        pytest.param(line(src_node="node-z"), "src_node 'node-z' is not a node", id="unknown-source"),
        pytest.param(line(dst_node="node-z"), "dst_node 'node-z' is not a node", id="unknown-served-by"),
        pytest.param(
            line(target="pod/node-z"), "not one of the inventory's pod targets", id="unknown-target"
        ),
        pytest.param(line(target="service/echo"), "inventory's pod targets", id="target-of-another-kind"),
        pytest.param(
            line(path="pod-to-external", target="node-a", dst_node=None),
            "inventory's external targets",
            id="outside-target-named-as-a-node",
        ),
        pytest.param(line(src_port=2**64), "`$.src_port`", id="port-beyond-uint64"),
        pytest.param(b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply", id="deep"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
    ],
)
def test_a_bad_line_costs_only_itself(bad: bytes, fragment: str) -> None:
    adm = admit_batch(line() + b"\n" + bad + b"\n" + line(), RULES, now=NOW)
    assert (len(adm.records), adm.rejected, adm.refused) == (2, 1, False)
    [error] = adm.errors
    assert error.line == 2
    assert fragment in error.error
    assert [adm.line_of(i) for i in range(2)] == [1, 3]


def test_good_outside_and_balanced_targets_are_admitted() -> None:
    body = b"\n".join(
        [
            line(path="pod-to-external", target="external/api", dst_node=None),
            line(path="host-to-nlb", src_kind="host", target="nlb/echo", dst_node="node-a"),
            line(path="pod-to-service-local", target="service-local/echo"),
            b"",
            line(
                outcome="timeout", latency_s=None, dst_node=None, path="pod-to-service", target="service/echo"
            ),
        ]
    )
    adm = admit_batch(body, RULES, now=NOW)
    assert (len(adm.records), adm.rejected) == (4, 0)
    assert [adm.line_of(i) for i in range(4)] == [1, 2, 3, 5]


def test_a_caller_bound_to_a_node_reports_only_from_it() -> None:
    body = line() + b"\n" + line(src_node="node-b", dst_node="node-a", target="pod/node-a")
    adm = admit_batch(body, RULES, now=NOW, caller_node="node-a")
    assert [r.src_node for r in adm.records] == ["node-a"]
    assert "may only report probes from node 'node-a'" in adm.errors[0].error


def test_a_batch_of_garbage_is_refused_after_max_rejected_lines() -> None:
    adm = admit_batch(line() + b"\n" + b"{}\n" * 10_000, RULES, now=NOW)
    assert (adm.records, adm.rejected, adm.refused) == ([], 6, True)


def test_quotas_are_per_source_and_refill() -> None:
    quotas = SourceQuotas(rate_per_s=1.0, burst=2.0)
    a = msgspec.json.decode(line(), type=ProbeResult)
    b = msgspec.structs.replace(a, src_node="node-b")
    kept, over = quotas.take([a, a, a, b], now=NOW)
    assert (len(kept), over) == (3, [2])
    kept, over = quotas.take([a, a], now=NOW + 1.0)
    assert (len(kept), over) == (1, [1])
    quotas.keep_only(["node-b"])
    assert quotas.take([a, a], now=NOW + 1.0) == ([a, a], [])  # a departed node's bucket is gone


def probe(src: str, target: str, ip: str) -> ProbeResult:
    return ProbeResult(
        ts=NOW, path="pod-to-pod", src_node=src, src_kind=SrcKind.POD, target=target, outcome=Outcome.OK,
        proto=Proto.HTTP, dst_node=target.removeprefix("pod/"), latency_s=0.001, target_ip=ip,
    )  # fmt: skip


def test_a_full_key_table_rejects_only_the_records_with_new_labels() -> None:
    keys = Keys(max_tcombos=3)
    known = [probe("node-a", "pod/node-b", f"10.0.0.{i}") for i in range(3)]
    keys.encode(known)
    new = probe("node-a", "pod/node-b", "10.0.0.99")
    kept, refused = keys.admit([known[0], new, known[2], new])
    assert (kept, refused) == ([known[0], known[2]], [1, 3])
    keys.encode(kept)  # what was admitted fits


def test_nodes_and_outside_targets_never_share_a_label() -> None:
    keys = Keys()
    outside = ProbeResult(
        ts=NOW, path="pod-to-external", src_node="node-a", src_kind=SrcKind.POD, target="x",
        outcome=Outcome.TIMEOUT, proto=Proto.TCP,
    )  # fmt: skip
    keys.encode([outside, probe("x", "pod/node-a", "10.0.0.1")])
    assert keys.name_index["x"] != keys.outside_index["x"]
    # the table the earlier collector could not build (IndexError) is built
    sk, lat, _ = keys.encode([outside, probe("x", "pod/node-a", "10.0.0.1")])
    sk, n, lat = reduce_entries(sk, np.ones(sk.size, dtype=np.uint32), lat)
    table = keys.table(sk, n, lat, nodes=["node-a", "x"], window_s=60.0, end_ts=NOW)
    assert table.nodes == ("node-a", "x")
    assert table.dsts == ("node-a", "x", "x")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.sampled_from([line(), b"{}", b"[" * 3000]), max_size=30))
def test_any_bytes_are_admitted_or_rejected_line_by_line(lines: list[bytes]) -> None:
    body = b"\n".join(lines)
    adm = admit_batch(body, RULES, now=NOW)
    assert len(adm.records) + adm.rejected <= body.count(b"\n") + 1
    assert all(r.src_node in RULES.nodes for r in adm.records)
