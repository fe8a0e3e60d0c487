"""Pair tables: aggregation of records into columns, the input of matrix and diagnosis."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np

from prober.model import LATENCY_BUCKETS_S, OUTCOME_INDEX, Outcome, ProbeResult, Proto, SrcKind
from prober.stats import UNKNOWN, NlbProbes, PairTable, latency_bin, probes_per_row


def rec(
    src: str,
    dst: str | None,
    outcome: str = "ok",
    *,
    path: str = "pod-to-pod",
    target: str = "",
    ts: float = 0.0,
    latency: float | None = 0.001,
    src_port: int | None = None,
    target_ip: str | None = None,
) -> ProbeResult:
    kind = SrcKind(path.split("-to-", maxsplit=1)[0])
    return ProbeResult(
        ts=ts, path=path, src_node=src, src_kind=kind, target=target or f"pod/{dst}", proto=Proto.HTTP,
        outcome=Outcome(outcome), latency_s=latency if outcome == "ok" else None, dst_node=dst,
        src_port=src_port, target_ip=target_ip,
    )  # fmt: skip


def test_counts_group_by_key() -> None:
    records = [rec("a", "b"), rec("a", "b"), rec("a", "b", "timeout"), rec("b", "a")]
    t = PairTable.from_records(records, nodes=["a", "b"])
    assert t.nodes == ("a", "b")
    assert t.rows == 2
    ab = int(np.flatnonzero((t.src == 0) & (t.dst == 1))[0])
    assert t.counts[ab, OUTCOME_INDEX[Outcome.OK]] == 2
    assert t.counts[ab, OUTCOME_INDEX[Outcome.TIMEOUT]] == 1
    assert t.sent[ab] == 3


def test_unanswered_balanced_probe_has_unknown_dst() -> None:
    t = PairTable.from_records([rec("a", None, "timeout", path="pod-to-service", target="service/echo")])
    assert t.dst.tolist() == [UNKNOWN]


def test_outside_targets_are_columns_after_nodes() -> None:
    t = PairTable.from_records(
        [
            rec("a", None, "timeout", path="host-to-external", target="external/web"),
            rec("a", "b"),
        ],
        nodes=["a"],
    )
    assert t.dsts[: len(t.nodes)] == t.nodes
    assert "external/web" in t.dsts[len(t.nodes) :]


def test_latency_histogram_separates_syn_retransmits() -> None:
    assert latency_bin(0.002) < latency_bin(1.0) < latency_bin(3.0)
    assert LATENCY_BUCKETS_S[latency_bin(1.0)] == 1.1
    assert LATENCY_BUCKETS_S[latency_bin(3.0)] == 3.1
    t = PairTable.from_records([rec("a", "b", latency=0.002), rec("a", "b", latency=1.02)])
    assert t.hist.sum() == 2
    assert t.hist[0, latency_bin(1.02)] == 1
    assert abs(t.latency_sum_s[0] - 1.022) < 1e-9


def test_window_spans_the_records() -> None:
    t = PairTable.from_records([rec("a", "b", ts=10.0), rec("a", "b", ts=70.0)])
    assert t.window_s == 60.0
    assert t.end_ts == 70.0


def test_select_keeps_labels() -> None:
    t = PairTable.from_records([rec("a", "b"), rec("b", "a", path="host-to-host")])
    sub = t.select(t.path_mask("host-to-host"))
    assert sub.rows == 1
    assert sub.nodes == t.nodes


def test_nlb_probes_keep_only_nlb_paths() -> None:
    rs = [
        rec("a", "b", path="pod-to-nlb", target="nlb/x", src_port=40000, target_ip="172.31.200.10"),
        rec("a", "b"),
    ]
    n = NlbProbes.from_records(rs)
    assert n.size == 1
    assert n.src_port.tolist() == [40000]


def test_nlb_probes_mark_successes_as_late_as_a_syn_retransmit_or_later() -> None:
    def nlb(outcome: str = "ok", latency: float | None = 0.002, proto: Proto = Proto.HTTP) -> ProbeResult:
        r = rec("a", "b" if outcome == "ok" else None, outcome, path="pod-to-nlb", latency=latency)
        return msgspec.structs.replace(r, proto=proto)

    rs = [
        nlb(latency=0.002),
        nlb(latency=1.012),  # the first SYN retransmit
        nlb(latency=3.05),  # the second
        nlb(latency=2.05),  # a retransmit that met the other connection's remains
        nlb(latency=0.85),  # slow, not that slow
        nlb("timeout"),
        nlb(latency=1.0, proto=Proto.UDP),  # UDP has no SYN
        nlb(latency=1.0, proto=Proto.TCP),
    ]
    assert NlbProbes.from_records(rs).late.tolist() == [False, True, True, True, False, False, False, True]


def test_empty_table() -> None:
    t = PairTable.empty(["a"])
    assert t.rows == 0
    assert t.sent.shape == (0,)


def test_probes_per_row_sums_the_outcome_counts_as_floats() -> None:
    rows = [[1, 0, 2, 0, 0, 0, 0, 3], [0, 0, 0, 0, 0, 0, 0, 0], [7, 1, 0, 0, 0, 0, 2**20, 0]]
    counts = np.array(rows, dtype=np.int32)
    got = probes_per_row(counts)
    assert got.dtype == np.float64
    assert got.tolist() == [6.0, 0.0, 8.0 + 2**20]


def test_sent_is_made_once_per_table_read_only_and_not_carried_by_a_derived_table() -> None:
    records = [rec("a", "b"), rec("a", "b", "timeout"), rec("b", "a"), rec("b", "a", "refused")]
    records.append(rec("b", "a"))
    t = PairTable.from_records(records, nodes=["a", "b"])
    sent = t.sent
    assert sent.dtype == np.int64
    assert sent.tolist() == t.counts.sum(axis=1).tolist()
    assert t.sent is sent  # not summed again
    assert not sent.flags.writeable  # a reader cannot change what the next one reads
    sub = t.select(t.src == 1)
    assert sub.sent.tolist() == [3]
    assert dataclasses.replace(t, counts=t.counts * 2).sent.tolist() == (2 * sent).tolist()
