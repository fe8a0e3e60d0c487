"""A failure mode, declared once: its kind, its rule, its fix, its alert, and how the lab makes it.

Each rule module ends with one :class:`FailureMode` (``MODE``), and
:mod:`prober.diagnose.catalogue` lists them in the order the rules run. Everything
that used to keep a list of its own reads the catalogue instead: the rule order,
the kinds a longer window may add (``slow``), the partial readings a fresh finding
replaces (``replaceable``), the catch-alls shown only once confirmed
(``provisional``), the Prometheus alert of each kind (:mod:`prober.slo`)
and the lab's ``--fault`` table (:mod:`prober_lab.faults`).

A mode has **one** remediation text, read in two places. A finding fills its
placeholders: ``{node}`` with the finding's one node, every other one with what the
rule passes to :meth:`FailureMode.finding`. The alert, which knows only the
``kind`` and ``node`` labels of ``prober_finding``, renders ``{node}`` as that label
and every other placeholder as the mode's ``alert_fills`` say.

Pure: no I/O. The lab fault is a description (syntax, knob, production
equivalent); the lab builds it.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from prober.arrays import BoolArray
from prober.diagnose.context import Context
from prober.diagnose.significance import confidence
from prober.model import Finding, FindingKind, Suspect

#: A rule reads the context (evidence, policy, residual ledger), claims what it
#: explains, records each finding (:meth:`FailureMode.finding` does) and returns them.
Rule = Callable[[Context], list[Finding]]

#: "critical" for deterministic breakage (an alert of that severity pages), "warning" for rates.
Severity = Literal["critical", "warning"]

#: The placeholder a finding fills with its one node and an alert with its ``node`` label.
NODE: Final[str] = "node"


def placeholders(template: str) -> frozenset[str]:
    """The ``{name}`` fields of a ``str.format`` template."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name is not None)


class Arity(enum.Enum):
    """Which nodes a lab fault takes after ``@``."""

    NONE = "none"  # no @NODE
    ONE_OR_MORE = "one-or-more"  # @NODE[,NODE...]: the fault on each
    PAIR = "pair"  # @A,B
    ZONE_PAIR = "zone-pair"  # @ZONE,ZONE: two availability zones, not nodes
    ONE_ZONE = "one-zone"  # @ZONE: one availability zone
    OPTIONAL_ONE = "optional-one"  # [@NODE]


@dataclass(frozen=True, slots=True, kw_only=True)
class LabFault:
    """How ``prober lab`` reproduces a failure mode: the ``--fault`` syntax and the knob it turns."""

    usage: str  # the --fault syntax, starting with the kind: "bridge-netfilter@NODE"
    arity: Arity
    cni: str | None = None  # the lab's --cni the fault needs ("bridge", "vpc"); None: either
    takes_rate: bool = False  # a :RATE after the nodes
    takes_mtu: bool = False  # an optional :MTU after the nodes
    default_rate: float | None = None  # the rate when :RATE is left out (None: it is required)
    what: str  # the knob, as the lab turns it
    production: str  # what turns the same knob in production


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSpec:
    """The Prometheus alert that fires while a finding of the mode is active."""

    name: str  # e.g. "ProberNlbHairpin"
    severity: Severity  # "critical" pages, "warning" opens a ticket


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureMode:
    """Everything prober says and does about one failure mode, in one value."""

    kind: FindingKind
    detect: Rule
    #: The finding's severity unless the rule says otherwise (a rate past a threshold).
    severity: Severity
    #: What an active finding means, for the alert; ``{node}`` is its node label.
    summary: str
    #: The fix: what to check and change. Placeholders: see the module docstring.
    remediation: str
    alert: AlertSpec
    #: Per placeholder other than ``{node}``: what the alert says in its place.
    alert_fills: Mapping[str, str] = field(default_factory=dict)
    #: Its evidence accrues slowly (rates, rare events), so a longer window than the
    #: shortest may add it (:func:`prober.diagnose.diagnose_windows`).
    slow: bool = False
    #: A partial reading that a fault's onset inside the window can pass for: a fresh
    #: finding of another kind at the same place replaces it (:mod:`prober.diagnose.recency`).
    replaceable: bool = False
    #: A catch-all: what a fault reads as before its own rule has the samples, and after
    #: it is over. Shown only once confirmed over passes (:mod:`prober.diagnose.confirm`).
    provisional: bool = False
    #: Its nodes are the clients of a shared target (every node an NLB serves), not where
    #: the fault is: another kind's finding is at its place only where it explains mostly
    #: the same probe streams (:func:`prober.diagnose.recency.same_place`).
    clients: bool = False
    #: How ``prober lab`` reproduces it, when it can.
    lab_fault: LabFault | None = None

    def fill(self, nodes: Sequence[str], fills: Mapping[str, str]) -> str:
        """The remediation of a finding naming ``nodes``, with the rule's ``fills``.

        Raises ``ValueError`` when the fills are not exactly the mode's placeholders,
        or when ``{node}`` is used and the finding does not name exactly one node.
        """
        if set(fills) != set(self.alert_fills):
            raise ValueError(
                f"{self.kind}: the remediation takes {sorted(self.alert_fills)}, got {sorted(fills)}"
            )
        if NODE not in placeholders(self.remediation):
            return self.remediation.format(**fills)
        if len(nodes) != 1:
            raise ValueError(f"{self.kind}: the remediation names one node, the finding names {len(nodes)}")
        return self.remediation.format(**{NODE: nodes[0]}, **fills)

    def finding(
        self,
        ctx: Context,
        *,
        nodes: Sequence[str] = (),
        pairs: Sequence[tuple[str, str]] = (),
        paths: Sequence[str],
        log_p: float,
        evidence: str,
        severity: Severity | None = None,
        suspects: Sequence[Suspect] = (),
        zones: Sequence[str] = (),
        unsettled: bool = False,
        settled: bool = False,
        share_of: BoolArray | None = None,
        **fills: str,
    ) -> Finding:
        """A finding of this mode, recorded in ``ctx`` with what was claimed since the last one.

        ``log_p`` is the rule's corrected log p-value (the confidence is 1 - p);
        ``severity`` overrides the mode's; ``unsettled`` and ``settled`` mark its footprint
        (:class:`~prober.diagnose.context.Footprint`); ``share_of``: the rows of
        which it explains a share (:meth:`~prober.diagnose.context.Context.found`);
        ``fills`` fill the remediation.
        """
        return ctx.found(
            Finding(
                kind=self.kind,
                severity=severity or self.severity,
                nodes=list(nodes),
                pairs=list(pairs),
                paths=list(paths),
                confidence=round(confidence(log_p), 6),
                evidence=evidence,
                remediation=self.fill(nodes, fills),
                suspects=list(suspects),
                zones=list(zones),
            ),
            unsettled=unsettled,
            settled=settled,
            share_of=share_of,
        )
