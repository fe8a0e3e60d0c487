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

__all__ = ["RULES", "DiagnosisPolicy", "Rule", "diagnose"]

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
