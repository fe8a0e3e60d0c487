"""Merging a window's findings with its recent intervals': what replaces what.

The merge rule on its own, over findings and footprints (the probe streams they
explain) written out here, with recent statistics from generated records that hold
none of those streams (so nothing is resolved, only replaced): a recent finding
replaces a window finding of a partial kind at the same place, and two findings that
name different nodes are two places even when they share a probe stream. Then the
test that resolves a finding, on its counts.
"""

from __future__ import annotations

from typing import cast

import pytest

from prober.diagnose import DiagnosisPolicy, merge_windows_found, recency
from prober.diagnose.context import Footprint, StreamKey
from prober.diagnose.recency import StreamStats, resolved
from prober.model import PATH_INDEX, Finding, FindingKind
from prober.report import window_from_records
from tests.synth import Cluster, generate

C3 = Cluster(n_nodes=3)
A, B, C = C3.nodes
#: A stream between A and B that both findings may explain (pod on A probing B's pod).
SHARED: StreamKey = (0, 0, A, f"pod/{B}", "")
ONLY_A: StreamKey = (0, 0, C, f"pod/{A}", "")
ONLY_B: StreamKey = (0, 0, C, f"pod/{B}", "")
#: Pod agents' probes of an NLB zone address.
NLB_A: StreamKey = (PATH_INDEX["pod-to-nlb"], 0, A, "nlb/prober-echo", "10.1.0.200")
NLB_B: StreamKey = (PATH_INDEX["pod-to-nlb"], 0, B, "nlb/prober-echo", "10.1.0.200")


def finding(kind: FindingKind, nodes: list[str]) -> Finding:
    return Finding(
        kind=kind, severity="critical", nodes=nodes, pairs=[], paths=["pod-to-pod"], confidence=0.999,
        evidence="", remediation="", suspects=[],
    )  # fmt: skip


def at(kind: FindingKind, nodes: list[str], *streams: StreamKey) -> tuple[Finding, Footprint]:
    return finding(kind, nodes), Footprint(streams=list(streams), impaired=90.0, probes=100.0)


@pytest.mark.parametrize(
    ("window", "recent", "kept"),
    [
        # Different nodes, one shared stream: two places, both kept.
        pytest.param(
            at(FindingKind.NODE_UNREACHABLE, [A], SHARED, ONLY_A),
            at(FindingKind.BRIDGE_NETFILTER, [B], SHARED, ONLY_B),
            [(FindingKind.NODE_UNREACHABLE, [A]), (FindingKind.BRIDGE_NETFILTER, [B])],
            id="different-nodes-sharing-a-stream",
        ),
        # The same node: the recent kind is what the node does now.
        pytest.param(
            at(FindingKind.PACKET_LOSS, [A], ONLY_A),
            at(FindingKind.NODE_UNREACHABLE, [A], ONLY_A),
            [(FindingKind.NODE_UNREACHABLE, [A])],
            id="same-node-replaced",
        ),
        # One names no node: a common stream is the common place.
        pytest.param(
            at(FindingKind.UNEXPLAINED, [], SHARED),
            at(FindingKind.NODE_UNREACHABLE, [B], SHARED, ONLY_B),
            [(FindingKind.NODE_UNREACHABLE, [B])],
            id="nodeless-sharing-a-stream-replaced",
        ),
        # A window finding of a kind that is not partial stays beside the recent one.
        pytest.param(
            at(FindingKind.BRIDGE_NETFILTER, [A], SHARED),
            at(FindingKind.NODE_UNREACHABLE, [A], SHARED),
            [(FindingKind.BRIDGE_NETFILTER, [A]), (FindingKind.NODE_UNREACHABLE, [A])],
            id="not-partial-kept",
        ),
        # A hairpin NLB names its clients, every node: a lossy one among them is another
        # place (its own NLB probes are in both) unless it explains mostly the hairpin's.
        pytest.param(
            at(FindingKind.PACKET_LOSS, [A], ONLY_A, SHARED, NLB_A),
            at(FindingKind.NLB_HAIRPIN, [A, B, C], NLB_A, NLB_B),
            [(FindingKind.PACKET_LOSS, [A]), (FindingKind.NLB_HAIRPIN, [A, B, C])],
            id="lossy-node-among-hairpin-clients-kept",
        ),
        pytest.param(
            at(FindingKind.PACKET_LOSS, [A], NLB_A),
            at(FindingKind.NLB_HAIRPIN, [A, B, C], NLB_A, NLB_B),
            [(FindingKind.NLB_HAIRPIN, [A, B, C])],
            id="hairpin-streams-replaced",
        ),
    ],
)
def test_merge_keeps_each_place_once(
    window: tuple[Finding, Footprint], recent: tuple[Finding, Footprint], kept: list[tuple[str, list[str]]]
) -> None:
    # Recent statistics without these streams: nothing is resolved, only replaced.
    _, table = window_from_records(generate(C3, rounds=2, seed=1), nodes=C3.nodes, recent_s=10.0)
    assert table is not None
    merged = recency.merge([window], [recent], table, DiagnosisPolicy())
    assert [(f.kind, f.nodes) for f, _ in merged] == kept


@pytest.mark.parametrize(
    ("streams", "kept"),
    [
        pytest.param(
            (ONLY_A, SHARED, NLB_A),
            [FindingKind.NLB_HAIRPIN, FindingKind.PACKET_LOSS],
            id="mostly-others-kept",
        ),
        pytest.param((NLB_A, NLB_B, ONLY_A), [FindingKind.NLB_HAIRPIN], id="mostly-its-streams-replaced"),
    ],
)
def test_a_longer_windows_lossy_node_among_a_hairpins_clients_is_another_place(
    streams: tuple[StreamKey, ...], kept: list[FindingKind]
) -> None:
    """The shorter window names the hairpin at every client; the longer one's packet-loss
    at one of them stays unless it explains the hairpin's own probe streams."""
    shorter = [at(FindingKind.NLB_HAIRPIN, [A, B, C], NLB_A, NLB_B)]
    longer = [at(FindingKind.PACKET_LOSS, [A], *streams)]
    merged = merge_windows_found([shorter, longer], shortest=None)
    assert sorted(f.kind for f, _ in merged) == sorted(kept)


class _Totals:
    """Recent per-stream sums with fixed totals: what :func:`resolved` reads."""

    def __init__(self, probes: float, impaired: float) -> None:
        self._totals = (probes, impaired)

    def totals(self, keys: object) -> tuple[float, float]:
        return self._totals


@pytest.mark.parametrize(
    ("explained", "recent", "contradicted"),
    [
        # Named from five probes that all failed (a rare path in the recent sub-window):
        # four of seven failing now is the same fault seen through a few more probes.
        ((5, 5), (7, 4), False),
        # ... while seven successes of seven end it (Fisher p = 1/792).
        ((5, 5), (7, 0), True),
        # Two failures of seven against five of five: not significantly less.
        ((5, 5), (7, 2), False),
        # Named from sixty failed probes (a dead node): seven successes end it.
        ((60, 60), (7, 0), True),
        # A lossy node, 20% of 500: no failure in 50 recent probes ends it; 9 of 50 does not.
        ((500, 100), (50, 0), True),
        ((500, 100), (50, 9), False),
        # Fewer recent probes than min_samples decide nothing.
        ((60, 60), (5, 0), False),
    ],
)
def test_a_finding_is_contradicted_only_by_recent_probes_that_fail_significantly_less(
    explained: tuple[float, float], recent: tuple[float, float], contradicted: bool
) -> None:
    fp = Footprint(streams=[], probes=explained[0], impaired=explained[1])
    stats = cast(StreamStats, _Totals(*recent))
    assert resolved(fp, stats, DiagnosisPolicy()) is contradicted
