"""Diagnosis: from pair statistics to named failure modes. Pure: no sockets, no clock.

``diagnose`` is the one entry point. The collector calls it on every window, and
``prober sweep``, ``prober diagnose`` and ``prober lab run`` call it on theirs.
Each failure mode is one rule (one module): a statistical test with a confidence
and a minimum sample size below which it stays silent (see
:class:`DiagnosisPolicy`).

Rules run in a fixed order over one :class:`~prober.diagnose.context.Context` and
*claim* the failures they explain; later rules see only the residue, so one root
cause gives one finding. The order goes from patterns that explain the most (a
dead node explains its whole row and column) to the most specific, and ends with
the localizer, which turns a significant residue into one ``unexplained`` finding
with ranked suspects:

1. node-isolated, 2. node-unreachable, 3. pair-blocked (matrix structure),
4. nlb-hairpin, 5. nlb-5tuple-collision (NLB), 6. bridge-netfilter,
7. snat-asymmetric (per node and network), 8. packet-loss (partial rates on what
is left), 9. dns-timeouts, 10. unexplained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from prober.diagnose import (
    bridge_netfilter,
    dns_timeouts,
    localize,
    nlb_collision,
    nlb_hairpin,
    node_isolated,
    node_unreachable,
    packet_loss,
    pair_blocked,
    recency,
    snat_asymmetric,
)
from prober.diagnose.context import Context
from prober.diagnose.policy import DiagnosisPolicy
from prober.model import FINDING_KINDS, Finding
from prober.stats import Evidence

__all__ = ["RULES", "DiagnosisPolicy", "Rule", "diagnose", "diagnose_windows"]

#: A rule reads the context (evidence, policy, residual ledger), claims what it
#: explains, records each finding with ``ctx.found`` (which notes what it claimed)
#: and returns its findings.
Rule = Callable[[Context], list[Finding]]

#: The rules, in the order they run (and claim failures).
RULES: Sequence[Rule] = (
    node_isolated.detect,
    node_unreachable.detect,
    pair_blocked.detect,
    nlb_hairpin.detect,
    nlb_collision.detect,
    bridge_netfilter.detect,
    snat_asymmetric.detect,
    packet_loss.detect,
    dns_timeouts.detect,
    localize.detect,
)


def _order(f: Finding) -> tuple[int, list[str], list[tuple[str, str]], list[str], str]:
    return (FINDING_KINDS.index(f.kind), f.nodes, f.pairs, f.paths, f.evidence)


def _run(evidence: Evidence, policy: DiagnosisPolicy) -> Context:
    ctx = Context(evidence, policy)
    for rule in RULES:
        rule(ctx)
    return ctx


def diagnose(evidence: Evidence, *, policy: DiagnosisPolicy | None = None) -> list[Finding]:
    """Every finding the evidence supports, in a deterministic order; empty for a clean cluster.

    With ``evidence.recent``, findings the recent probes contradict are dropped and
    faults that began inside the window are named by what they are now (see
    :mod:`prober.diagnose.recency`).
    """
    pol = policy or DiagnosisPolicy()
    if evidence.table.rows == 0:
        return []
    window = _run(evidence, pol).found_list
    recent_table = evidence.recent
    if recent_table is None or recent_table.rows == 0:
        findings = [f for f, _ in window]
    else:
        # The NLB pairs are a window's worth of evidence: the recent run goes without.
        recent = _run(replace(evidence, table=recent_table, recent=None, nlb_probes=None), pol).found_list
        findings = recency.merge(window, recent, recent_table, pol)
    return sorted(findings, key=_order)


def diagnose_windows(
    evidences: Sequence[Evidence], *, policy: DiagnosisPolicy | None = None
) -> list[Finding]:
    """Diagnose several windows ending now, shortest first, and merge what they say.

    A short window names a fresh fault quickly but has too few samples for the
    rate-limited modes (DNS timeouts, collisions, a hairpin in a large cluster); a
    long one has the samples but still remembers the time before a fault began,
    which a "never" signature (never served by itself) cannot tolerate. Diagnosing
    e.g. the last minute and the last ten minutes (each with the same ``recent``)
    gets both. A shorter window's finding wins over a longer window's of the same
    kind and nodes, and over a longer window's partial reading (packet-loss,
    pair-blocked, node-unreachable, node-isolated, unexplained) of the same nodes
    (or paths, when one names no node); a shorter window's ``unexplained`` gives
    way to a longer window's named finding there (the short window lacked data).
    """
    per_window = [diagnose(ev, policy=policy) for ev in evidences]
    kept: list[Finding] = []
    for i, findings in enumerate(per_window):
        shorter = [f for fs in per_window[:i] for f in fs]
        longer = [f for fs in per_window[i + 1 :] for f in fs]
        for f in findings:
            if any(g.kind == f.kind and _same_nodes(f, g) for g in shorter):
                continue
            if f.kind in recency.REPLACEABLE and any(
                g.kind not in (f.kind, "unexplained") and _overlap(f, g) for g in shorter
            ):
                continue
            if f.kind == "unexplained" and any(g.kind != "unexplained" and _overlap(f, g) for g in longer):
                continue
            kept.append(f)
    return sorted(kept, key=_order)


def _same_nodes(a: Finding, b: Finding) -> bool:
    return bool(set(a.nodes) & set(b.nodes)) or (not a.nodes and not b.nodes)


def _overlap(a: Finding, b: Finding) -> bool:
    """Common nodes, or (when one names none) common paths."""
    if set(a.nodes) & set(b.nodes):
        return True
    return (not a.nodes or not b.nodes) and bool(set(a.paths) & set(b.paths))
