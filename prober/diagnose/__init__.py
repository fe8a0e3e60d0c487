"""Diagnosis: from pair statistics to named failure modes. Pure: no sockets, no clock.

``diagnose`` is the one entry point. The collector calls it on every window, and
``prober sweep``, ``prober diagnose`` and ``prober lab run`` call it on theirs.
Each failure mode is one rule: a function from :class:`~prober.stats.Evidence` to
findings, with a statistical test and a minimum sample size below which it stays
silent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prober.model import Finding
from prober.stats import Evidence


@dataclass(frozen=True, slots=True, kw_only=True)
class DiagnosisPolicy:
    """Thresholds shared by every rule."""

    #: The least confidence at which a finding is reported.
    min_confidence: float = 0.99
    #: The fewest probes on a path/pair below which a rule says nothing.
    min_samples: int = 20


Rule = Callable[[Evidence, DiagnosisPolicy], list[Finding]]

#: The rules, in the order their findings are listed.
RULES: Sequence[Rule] = ()


def diagnose(evidence: Evidence, *, policy: DiagnosisPolicy | None = None) -> list[Finding]:
    """Every finding the evidence supports; an empty list for a clean cluster."""
    pol = policy or DiagnosisPolicy()
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(evidence, pol))
    return findings
