"""Windows that share their tails diagnose the tails once: the collector's default and
long windows end together, with the same recent and latest tails, and the long pass
reads what the default pass found in them (:func:`prober.diagnose.diagnose_recent`)."""

from __future__ import annotations

import functools

from prober.collector.store import Store, StoreSettings
from prober.diagnose import Footprint, RuleFailure, diagnose_recent, diagnose_window
from prober.diagnose.context import Context
from prober.model import Finding, FindingKind
from prober.report import Window, evidence_for
from prober.stats import Evidence
from tests.synth import Cluster, Fault, simulate

C = Cluster(n_nodes=12)
DEAD = C.nodes[5]


@functools.cache
def windows() -> tuple[Evidence, Evidence]:
    """The last 60 s and 300 s of 30 rounds, with the last 20 s and 15 s as tails; a
    node dies two rounds before the end, so the tails name it and the windows alone do
    not (its failures are a few percent of theirs)."""
    gen = simulate(
        C, rounds=30, faults=[Fault(kind="node-unreachable", nodes=(DEAD,))], seed=4, fault_rounds=(28, 30)
    )
    store = Store(StoreSettings(bucket_s=5.0, retention_s=900.0))
    store.set_nodes(gen.nodes)
    now = gen.end_ts - 0.001
    store.ingest(gen.records, now=now)
    recent = store.snapshot(now=now, window_s=20.0).table(histogram=False)
    latest = store.snapshot(now=now, window_s=15.0).table(histogram=False)
    main, long = (
        Window(
            table=store.snapshot(now=now, window_s=w).table(),
            nlb_probes=store.nlb_probes(now=now, window_s=w),
        )
        for w in (60.0, 300.0)
    )
    ev_main, ev_long = evidence_for([main, long], topology=gen.topology, recent=recent, latest=latest)
    return ev_main, ev_long


def test_a_window_reads_the_tails_findings_it_is_given_and_finds_what_it_finds_alone() -> None:
    ev_main, ev_long = windows()
    found = diagnose_recent(ev_main)
    assert found is not None
    assert found_in(found) == [(FindingKind.NODE_UNREACHABLE, [DEAD])]
    for ev in (ev_main, ev_long):
        alone = diagnose_window(ev)
        assert found_in(alone) == [(FindingKind.NODE_UNREACHABLE, [DEAD])]
        assert diagnose_window(ev, recent_found=found) == alone
        # Read, not redone: tails said to be clean leave the window's own reading, the
        # dead node's failures diluted over the window.
        assert found_in(diagnose_window(ev, recent_found=[])) == [(FindingKind.PACKET_LOSS, [DEAD])]


def found_in(found: list[tuple[Finding, Footprint]]) -> list[tuple[FindingKind, list[str]]]:
    return [(f.kind, f.nodes) for f, _ in found]


def test_a_rule_that_fails_on_the_tails_is_counted_once_for_both_windows() -> None:
    ev_main, ev_long = windows()
    calls: list[int] = []

    def broken(ctx: Context) -> list[Finding]:
        calls.append(ctx.table.rows)
        raise RuntimeError("bug")

    rules = [("broken", broken)]
    failures: list[RuleFailure] = []
    found = diagnose_recent(ev_main, rules=rules, failures=failures)
    for ev in (ev_main, ev_long):
        diagnose_window(ev, rules=rules, failures=failures, recent_found=found)
    # The recent and latest tails once, then each window once.
    tails = [ev_main.recent, ev_main.latest]
    assert calls == [t.rows for t in tails if t is not None] + [ev_main.table.rows, ev_long.table.rows]
    assert len(failures) == 4


def test_a_window_without_tails_has_no_tail_findings() -> None:
    ev_main, _ = windows()
    assert diagnose_recent(Evidence(table=ev_main.table, topology=ev_main.topology)) is None
