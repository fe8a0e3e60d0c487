"""Per-stream sums of the recency test: the NumPy grouping against a row-by-row reference."""

from __future__ import annotations

import pytest

from prober.diagnose.context import StreamKey
from prober.diagnose.recency import stream_stats
from prober.model import Proto
from prober.stats import OK, PROTO_INDEX, RETRANSMIT_BINS, PairTable
from tests.synth import Cluster, Fault, evidence

C = Cluster(n_nodes=12)


def reference(table: PairTable) -> dict[StreamKey, tuple[float, float]]:
    """Row by row: probes and impaired probes (failed, or TCP successes after a retransmit)."""
    tcp = {PROTO_INDEX[Proto.HTTP], PROTO_INDEX[Proto.TCP], PROTO_INDEX[Proto.HTTP_LARGE]}
    out: dict[StreamKey, tuple[float, float]] = {}
    for row in range(table.rows):
        tip = int(table.target_ip[row])
        key = (
            int(table.path[row]),
            int(table.proto[row]),
            table.nodes[int(table.src[row])],
            table.targets[int(table.target[row])],
            table.target_ips[tip] if tip >= 0 else "",
        )
        sent = float(table.counts[row].sum())
        slow = float(table.hist[row, RETRANSMIT_BINS[0]] + table.hist[row, RETRANSMIT_BINS[1]])
        imp = sent - float(table.counts[row, OK]) + (slow if int(table.proto[row]) in tcp else 0.0)
        n0, i0 = out.get(key, (0.0, 0.0))
        out[key] = (n0 + sent, i0 + imp)
    return out


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([], id="clean"),
        pytest.param([Fault(kind="packet-loss", nodes=(C.nodes[3],), rate=0.2)], id="loss-with-retransmits"),
        pytest.param([Fault(kind="nlb-hairpin")], id="hairpin-balanced-rows"),
    ],
)
def test_stream_sums_match_the_rows(faults: list[Fault]) -> None:
    table = evidence(C, rounds=3, faults=faults, seed=5).table
    want = reference(table)
    got = stream_stats(table)
    assert len(got) == len(want)
    for key, (n, i) in want.items():
        assert got.totals([key]) == (n, i)
    keys = list(want)
    assert got.totals(keys) == pytest.approx(
        (sum(v[0] for v in want.values()), sum(v[1] for v in want.values()))
    )
    if faults:
        assert any(v[1] > 0 for v in want.values())


def test_streams_the_table_does_not_have_add_nothing() -> None:
    table = evidence(C, rounds=2, seed=1).table
    stats = stream_stats(table)
    [known, *_] = reference(table)
    path, proto, src, target, ip = known
    assert stats.totals([(path, proto, "no-such-node", target, ip)]) == (0.0, 0.0)
    assert stats.totals([(path, proto, src, "no-such-target", ip)]) == (0.0, 0.0)
    assert stats.totals([(path, proto, src, target, "192.0.2.77")]) == (0.0, 0.0)
    assert stats.totals([]) == (0.0, 0.0)
    assert stats.totals([known, (path, proto, src, "no-such-target", ip)]) == stats.totals([known])
