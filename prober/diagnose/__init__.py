"""Diagnosis: from pair statistics to named failure modes. Pure: no sockets, no clock.

``diagnose`` is the one entry point. The collector calls it on every window, and
``prober sweep``, ``prober diagnose`` and ``prober lab run`` call it on theirs.
Each failure mode is one rule (one module) declared with its fix and its alert in
a :class:`~prober.diagnose.mode.FailureMode`: a statistical test with a confidence
and a minimum sample size below which it stays silent (see
:class:`DiagnosisPolicy`).

Rules run in the order of :data:`~prober.diagnose.catalogue.MODES` over one
:class:`~prober.diagnose.context.Context` and *claim* the failures they explain;
later rules see only the residue, so one root cause gives one finding. The order
goes from patterns that explain the most (a dead node explains its whole row and
column) to the most specific, and ends with the localizer, which turns a
significant residue into one ``unexplained`` finding with ranked suspects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from prober.diagnose import recency
from prober.diagnose.catalogue import MODES
from prober.diagnose.context import Context, Footprint
from prober.diagnose.mode import Rule
from prober.diagnose.policy import DiagnosisPolicy
from prober.model import Finding, FindingKind
from prober.stats import Evidence, PairTable

__all__ = [
    "NAMED_RULES",
    "RULES",
    "SLOW_KINDS",
    "DiagnosisPolicy",
    "Footprint",
    "Rule",
    "RuleFailure",
    "diagnose",
    "diagnose_recent",
    "diagnose_window",
    "diagnose_windows",
    "longer_window_rules",
    "merge_windows",
    "merge_windows_found",
]

#: The rules, in the order they run (and claim failures).
RULES: Final[Sequence[Rule]] = tuple(m.detect for m in MODES)
#: Each rule with its name (its failure mode's kind), for counting its failures.
NAMED_RULES: Final[Sequence[tuple[str, Rule]]] = tuple((m.kind.value, m.detect) for m in MODES)


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """A rule that raised instead of answering: its name and the error, in words."""

    rule: str
    error: str


#: The kinds a longer window than the first may add: their evidence accrues slowly
#: (rare DNS timeouts, collision pairs every few rounds, a hairpin's self-served share
#: of 1/N, loss of a few percent), so a short window may lack the samples.
SLOW_KINDS: Final[frozenset[FindingKind]] = frozenset(m.kind for m in MODES if m.slow)


def longer_window_rules(rules: Sequence[tuple[str, Rule]]) -> Sequence[tuple[str, Rule]]:
    """``rules`` up to the last of a slow kind (:data:`SLOW_KINDS`): what a longer window
    than the first needs. The merge keeps only its slow kinds' findings
    (:func:`merge_windows_found`), and a rule after the last of them (the localizer's
    ``unexplained``) claims nothing they read; at 1,000 nodes it spent ~0.08 CPU-s on the
    long window every long pass for a finding the merge drops."""
    slow = {k.value for k in SLOW_KINDS}
    last = max((i for i, (name, _) in enumerate(rules) if name in slow), default=-1)
    return tuple(rules[: last + 1])


#: Findings are listed in the order of the kinds, then by where they are.
_LISTING: Final[dict[FindingKind, int]] = {k: i for i, k in enumerate(FindingKind)}


def _order(f: Finding) -> tuple[int, list[str], list[tuple[str, str]], list[str], str]:
    return (_LISTING[f.kind], f.nodes, f.pairs, f.paths, f.evidence)


@dataclass(frozen=True, slots=True)
class _Rules:
    """The rules of one diagnosis, and where their failures go (``None``: they raise)."""

    rules: Sequence[tuple[str, Rule]]
    failures: list[RuleFailure] | None

    def run(self, evidence: Evidence, policy: DiagnosisPolicy) -> list[tuple[Finding, Footprint]]:
        """The rules' findings on the evidence; the context is emptied after them
        (:meth:`Context.close`)."""
        ctx = Context(evidence, policy)
        try:
            for name, rule in self.rules:
                if self.failures is None:
                    rule(ctx)
                    continue
                try:
                    rule(ctx)
                except Exception as exc:  # noqa: BLE001 - one rule's bug must not blind the others
                    self.failures.append(RuleFailure(name, f"{type(exc).__name__}: {exc}"))
            return ctx.found_list
        finally:
            ctx.close()


def diagnose(
    evidence: Evidence,
    *,
    policy: DiagnosisPolicy | None = None,
    rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    failures: list[RuleFailure] | None = None,
) -> list[Finding]:
    """Every finding the evidence supports, in a deterministic order; empty for a clean cluster.

    With ``evidence.recent``, findings the recent probes contradict are dropped and
    faults that began inside the window are named by what they are now (see
    :mod:`prober.diagnose.recency`). ``failures``: see :func:`diagnose_windows`.
    """
    found = _diagnose(evidence, policy or DiagnosisPolicy(), _Rules(rules, failures))
    return sorted((f for f, _ in found), key=_order)


def _diagnose(
    evidence: Evidence,
    pol: DiagnosisPolicy,
    rules: _Rules,
    recent_found: Sequence[tuple[Finding, Footprint]] | None = None,
) -> list[tuple[Finding, Footprint]]:
    if evidence.table.rows == 0:
        return []
    window = rules.run(evidence, pol)
    recent_evidence = _recent_evidence(evidence)
    if recent_evidence is None:
        return window
    recent = list(recent_found) if recent_found is not None else _diagnose(recent_evidence, pol, rules)
    return recency.merge(window, recent, recent_evidence.table, pol)


def _recent_evidence(evidence: Evidence) -> Evidence | None:
    """The recent tail as a window of its own, the latest tail as its recent; None
    without a recent tail."""
    recent_table = evidence.recent
    if recent_table is None or recent_table.rows == 0:
        return None
    # The recent run gets the NLB probes of its own span: under externalTrafficPolicy:
    # Cluster they say which node the NLB entered (the hairpin's test), and a window that
    # began before a hairpin always holds entries through a client's own node from then.
    nlb, span = evidence.nlb_probes, recent_table.window_s
    recent_nlb = nlb.since(recent_table.end_ts - span) if nlb is not None and span > 0 else None
    # The recent run has the latest tail as its own recent: the same merge, one level down.
    return replace(evidence, table=recent_table, recent=evidence.latest, latest=None, nlb_probes=recent_nlb)


def diagnose_windows(
    evidences: Sequence[Evidence],
    *,
    policy: DiagnosisPolicy | None = None,
    rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    failures: list[RuleFailure] | None = None,
) -> list[Finding]:
    """Diagnose several windows ending now, shortest first, and merge what they say.

    A short window names a fresh fault quickly but has too few samples for the
    rate-limited modes (DNS timeouts, collisions, a hairpin in a large cluster); a
    long one has the samples but still remembers the time before a fault began,
    which a "never" signature (never served by itself) cannot tolerate, and the time
    after one ended. Diagnosing e.g. the last minute and the last ten minutes (each
    with the same ``recent``) gets both:

    * a longer window only adds the kinds whose evidence accrues slowly
      (:data:`SLOW_KINDS`); a dead node, a blocked pair, a node's bridge or SNAT fault
      fail every probe of theirs, so the shortest window has their samples while they
      last, and once they are over a longer window would only remember them (diluted,
      as packet-loss or unexplained) for its whole length;
    * and it drops those when the shortest window's probes of the streams they
      explain contradict them (the test of :func:`recency.resolved`): the fault is
      over. A rate-limited fault still on is not contradicted by a short window's few
      clean probes;
    * a shorter window's finding wins over a longer window's of the same kind and
      nodes, and over a longer window's partial reading (a mode marked ``replaceable``,
      :data:`recency.REPLACEABLE`) of the same nodes (or paths, when one names no
      node); a shorter window's ``unexplained`` gives way to a longer window's named
      finding there (the short window lacked data).

    ``rules`` run in order (default: every failure mode's). With ``failures`` (a list),
    a rule that raises is isolated: the error is appended there and the other rules
    still run (the collector counts them); without, the error propagates (offline
    diagnosis stops rather than report less than it was asked).
    """
    pol = policy or DiagnosisPolicy()
    per_window = [
        diagnose_window(ev, policy=pol, rules=longer_window_rules(rules) if i else rules, failures=failures)
        for i, ev in enumerate(evidences)
    ]
    return merge_windows(per_window, shortest=evidences[0].table if len(evidences) > 1 else None, policy=pol)


def diagnose_window(
    evidence: Evidence,
    *,
    policy: DiagnosisPolicy | None = None,
    rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    failures: list[RuleFailure] | None = None,
    recent_found: Sequence[tuple[Finding, Footprint]] | None = None,
) -> list[tuple[Finding, Footprint]]:
    """One window's findings, each with the probe streams it explains, before any merge.

    :func:`merge_windows` merges several; a caller may keep a long window's answer
    and merge it again with fresher shorter windows (the collector diagnoses its
    long window less often than its default one). ``rules``, ``failures``: see
    :func:`diagnose_windows`. ``recent_found``: what :func:`diagnose_recent` said of
    the same tails, policy and rules, so windows that share their tails (the
    collector's default and long windows) diagnose them once.
    """
    return _diagnose(evidence, policy or DiagnosisPolicy(), _Rules(rules, failures), recent_found)


def diagnose_recent(
    evidence: Evidence,
    *,
    policy: DiagnosisPolicy | None = None,
    rules: Sequence[tuple[str, Rule]] = NAMED_RULES,
    failures: list[RuleFailure] | None = None,
) -> list[tuple[Finding, Footprint]] | None:
    """The findings of the window's recent tail (with its latest tail as the tail's
    own recent), as :func:`diagnose_window` reads them; None without a recent tail or
    for an empty window (which reads no tail)."""
    recent_evidence = _recent_evidence(evidence)
    if recent_evidence is None or evidence.table.rows == 0:
        return None
    return _diagnose(recent_evidence, policy or DiagnosisPolicy(), _Rules(rules, failures))


def merge_windows(
    per_window: Sequence[Sequence[tuple[Finding, Footprint]]],
    *,
    shortest: PairTable | None,
    policy: DiagnosisPolicy | None = None,
) -> list[Finding]:
    """Merge the findings of windows ending now, shortest first (see :func:`diagnose_windows`);
    ``shortest`` is the shortest window's table (None for one window)."""
    return [f for f, _ in merge_windows_found(per_window, shortest=shortest, policy=policy)]


def merge_windows_found(
    per_window: Sequence[Sequence[tuple[Finding, Footprint]]],
    *,
    shortest: PairTable | None,
    policy: DiagnosisPolicy | None = None,
) -> list[tuple[Finding, Footprint]]:
    """:func:`merge_windows`, each finding with its footprint (what
    :mod:`prober.diagnose.confirm` steps on), in the same order."""
    pol = policy or DiagnosisPolicy()
    stats: list[recency.StreamStats] = []  # the shortest window's, once a longer finding asks

    def over(fp: Footprint) -> bool:
        if shortest is None or len(per_window) < 2:
            return False
        if not stats:  # a million rows at 1,000 nodes: only when a longer window found something
            stats.append(recency.stream_stats(shortest))
        return recency.resolved(fp, stats[0], pol)

    found = [
        [(f, fp) for f, fp in raw if i == 0 or (f.kind in SLOW_KINDS and not over(fp))]
        for i, raw in enumerate(per_window)
    ]
    kept: list[tuple[Finding, Footprint]] = []
    for i, findings in enumerate(found):
        shorter = [x for fs in found[:i] for x in fs]
        longer = [x for fs in found[i + 1 :] for x in fs]
        for f, fp in findings:
            if any(g.kind == f.kind and _same_nodes(f, g) for g, _ in shorter):
                continue
            if f.kind in recency.REPLACEABLE and any(
                x[0].kind not in (f.kind, FindingKind.UNEXPLAINED) and _overlap((f, fp), x) for x in shorter
            ):
                continue
            if f.kind == FindingKind.UNEXPLAINED and any(
                x[0].kind != FindingKind.UNEXPLAINED and _overlap((f, fp), x) for x in longer
            ):
                continue
            kept.append((f, fp))
    return sorted(kept, key=lambda x: _order(x[0]))


def _same_nodes(a: Finding, b: Finding) -> bool:
    return bool(set(a.nodes) & set(b.nodes)) or (not a.nodes and not b.nodes)


def _overlap(a: tuple[Finding, Footprint], b: tuple[Finding, Footprint]) -> bool:
    """Common nodes, or (when one names none) common paths; with a finding that names the
    clients of a shared target, mostly its probe streams (:func:`recency.within_clients`)."""
    (fa, _), (fb, _) = a, b
    if recency.of_clients(fa, fb):
        return recency.within_clients(a, b)
    if set(fa.nodes) & set(fb.nodes):
        return True
    return (not fa.nodes or not fb.nodes) and bool(set(fa.paths) & set(fb.paths))
