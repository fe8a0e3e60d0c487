"""Confirmed findings: what is shown, decided over successive diagnosis passes.

One pass's findings (:func:`prober.diagnose.merge_windows_found`) are what one
window says at one moment. Shown as they come, they pass through mislabels: the
first round of a fault is too few probes for its own rule, so its failures are
``unexplained`` or ``packet-loss`` for a pass or two; once it is over, its failures
stay in the window, diluted, and read as a catch-all until they age out; a new
fault within a minute reads the old one's residue anew. :class:`Confirmation`
keeps what the passes said and shows:

* a finding of a **specific** kind (every mode not marked ``provisional``) from the
  first pass that names it: its rule's test is a signature at the policy's corrected
  confidence, and it replaces at once a catch-all shown at the same place;
* a finding of a **catch-all** kind (the modes marked ``provisional``: packet-loss,
  unexplained) once passes have named it at that place without a gap for
  ``hold_s`` (two rounds, the time a specific rule needs on a fresh fault's probes;
  the recent sub-window's length), and while no specific finding names the place.
  A settled one (packet-loss whose node's handshakes succeed after SYN retransmits,
  which the onset of a fault that drops every packet never gives,
  :attr:`~prober.diagnose.context.Footprint.settled`) is not held, but where a
  finding was shown within ``memory_s``: the probes in flight when a fault ends retry
  through it, and a loss that ended stays in the window. For the same reason it is
  shown beside a specific finding at its place: no specific kind's fault lets a
  handshake retry through, so both faults are there (a blocked pair of a lossy node).
  A catch-all whose failures are all on the NLB and DNS paths waits ``slow_hold_s``
  (six rounds): the modes of those paths (nlb-hairpin, nlb-5tuple-collision,
  dns-timeouts) accrue their evidence over several rounds, and until then their
  failures are unexplained.
  What the first pass of a history names is confirmed at once (nothing says it is
  an onset: a one-shot sweep, a restarted collector);
* a ``pair-blocked`` finding with a node in :data:`STAR_PAIRS` or more of its pairs (a
  star), or with a node that a catch-all of the same pass names, held back as a
  catch-all is: in a larger cluster each peer probes a node once in many rounds, so
  for a round or so after a node dies its cells probed since then fail every probe
  while those probed before succeeded, and the pass reads blocked pairs around it (a
  star, or in its first seconds a pair or two beside the node's other probes failing
  too, which a catch-all names) until its node rule has the probes. Where a node's
  cells hold one visit each and it gets fewer than twice :data:`STAR_PAIRS` visits a
  pass (fewer than 12 peers a round: 3 at 5,000 nodes), a single pair is such an
  onset too (the node's next peers have not probed it yet): the rule marks it
  ``unsettled`` and it is held back the same way. One that holds ``hold_s`` is real
  (a pair, or a node cut off from a group of nodes by one rule) and shown; the
  onset's is gone by then, replaced by the node's own finding;
* a catch-all at the place of a finding shown within the last ``memory_s`` (the
  window: that fault's failures are still in it) only while the recent probes of its
  streams **support** it: impaired significantly above the background (binomial upper
  tail at the policy's confidence). The residue of a fault that is over has no
  recent failures; a new fault at the same place has;
* a finding the pass no longer names is dropped at once when the recent probes of
  its streams contradict it (:func:`prober.diagnose.recency.resolved`), else kept
  for ``grace_s`` (a slow kind's sparse evidence, or a rare path's in the recent
  sub-window, may miss a pass), and dropped at once when another specific finding
  names its place; while it is kept, a catch-all at its place is not shown.

A shown finding carries ``since``: when it was first shown in its current run of
passes. A "place" is a common node or zone, or (when one of the two names no node) a
common probe stream; with a finding that names the clients of a shared target (an NLB
hairpin names every node the NLB serves), explaining mostly its probe streams.

Pure: no I/O, no clock (``now`` is an argument). The collector keeps one
:class:`Confirmation` per window and steps it every pass; ``prober diagnose`` and
sweeps replay the passes the collector would have made
(:func:`prober.report.replay_passes`), so both show the same.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import msgspec

from prober.diagnose.catalogue import MODES
from prober.diagnose.context import Footprint
from prober.diagnose.pair_blocked import STAR_PAIRS
from prober.diagnose.policy import DiagnosisPolicy
from prober.diagnose.recency import StreamStats, of_clients, resolved, within_clients
from prober.diagnose.significance import log_binom_sf
from prober.model import PATH_INDEX, Finding, FindingKind, SrcKind, TargetKind, path_of

#: The catch-all kinds: shown only once confirmed (modes marked ``provisional``).
PROVISIONAL: Final[frozenset[FindingKind]] = frozenset(m.kind for m in MODES if m.provisional)
#: The paths whose modes accrue evidence over several rounds (NLB and DNS targets).
SLOW_PATHS: Final[frozenset[int]] = frozenset(
    PATH_INDEX[path_of(s, t)] for s in SrcKind for t in (TargetKind.NLB, TargetKind.DNS)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmPolicy:
    """How long a catch-all is held back, a finding kept, and a shown one remembered.

    The collector derives them from its schedule (:meth:`of`): ``hold_s`` its recent
    sub-window (20 s at the production schedule), ``slow_hold_s``
    six rounds, ``grace_s`` one round, ``memory_s`` the window; a round counts as no
    less than one of the store's buckets (what a pass can tell apart).
    """

    hold_s: float = 20.0
    slow_hold_s: float = 60.0
    grace_s: float = 10.0
    memory_s: float = 60.0

    @classmethod
    def of(cls, *, recent_s: float, round_s: float, bucket_s: float, window_s: float) -> ConfirmPolicy:
        unit = max(round_s, bucket_s)
        return cls(hold_s=recent_s, slow_hold_s=6 * unit, grace_s=unit, memory_s=window_s)

    def hold_for(self, fp: Footprint, *, residue: bool = False) -> float:
        """How long a catch-all with this footprint is held back: ``slow_hold_s`` when
        all its streams are on the slow paths (whose own modes accrue their evidence over
        rounds), else ``hold_s``, or nothing when it is settled
        (:attr:`~prober.diagnose.context.Footprint.settled`) and not ``residue`` (at the
        place of a finding shown lately: the retries of a fault's last seconds, or a loss
        that ended, are still in the window)."""
        slow = bool(fp.streams) and all(stream[0] in SLOW_PATHS for stream in fp.streams)
        if slow:
            return self.slow_hold_s
        return 0.0 if fp.settled and not residue else self.hold_s

    @property
    def history_s(self) -> float:
        """How far back passes decide what is shown now: a replay of this long before a
        moment shows what a history of any length would."""
        return self.memory_s + max(self.hold_s, self.slow_hold_s) + self.grace_s


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tracked:
    finding: Finding
    footprint: Footprint
    first_seen: float  # the first pass of its current run of passes
    last_seen: float  # the last pass that named it
    shown: bool
    since: float | None = None  # when it was first shown in this run


@dataclass(slots=True)
class Confirmation:
    """The state of one window's passes, and what they show (:meth:`step`)."""

    policy: ConfirmPolicy = field(default_factory=ConfirmPolicy)
    #: The first pass with recent probes: what it names has no onset to confirm.
    started: float | None = None
    _tracked: list[_Tracked] = field(default_factory=list)
    #: Findings shown, with when they were last shown (for the residue tests).
    _shown_log: list[tuple[float, Finding, Footprint]] = field(default_factory=list)

    def step(
        self,
        now: float,
        found: Sequence[tuple[Finding, Footprint]],
        recent: StreamStats | None,
        diagnosis: DiagnosisPolicy,
    ) -> list[tuple[Finding, Footprint]]:
        """What is shown after a pass at ``now`` named ``found`` (with its recent probes'
        per-stream counts, ``recent``: None when it has none). Passes are stepped in time
        order."""
        pol = self.policy
        if self.started is None and recent is not None:
            self.started = now
        first = self.started == now
        specific = [x for x in found if x[0].kind not in PROVISIONAL]
        tracked: list[_Tracked] = []
        for f, fp in found:
            before = _predecessor(self._tracked, f, fp)
            since = before.first_seen if before is not None else now
            tracked.append(
                _Tracked(
                    finding=f,
                    footprint=fp,
                    first_seen=since,
                    last_seen=now,
                    shown=before.shown if before is not None else False,
                    since=before.since if before is not None else None,
                )
            )
        # Findings the pass no longer names: kept a while unless contradicted or replaced.
        for t in self._tracked:
            if not t.shown or any(_same_finding(t, x) for x in tracked):
                continue
            if now - t.last_seen > pol.grace_s or resolved(t.footprint, recent, diagnosis):
                continue
            # Replaced by another specific finding at its place; a catch-all the pass
            # names there (a short recent sub-window's shortfall) waits for the grace.
            if any(_same_place((t.finding, t.footprint), x) for x in specific):
                continue
            tracked.append(t)
            if t.finding.kind not in PROVISIONAL:
                specific.append((t.finding, t.footprint))
        state: list[_Tracked] = []
        for t in tracked:
            f, fp = t.finding, t.footprint
            show = True
            if f.kind in PROVISIONAL and t.last_seen == now:
                residue = self._residue(now, (f, fp))
                # A settled catch-all is held as any where a finding was shown lately: the
                # retries of a fault's last seconds, a loss that ended, are still in the window.
                hold = pol.hold_for(fp, residue=self._residue(now, (f, fp), catch_alls=True))
                # A settled one is loss no specific finding's fault gives (its handshakes
                # retry through): shown beside the specific finding at its place.
                show = not (
                    (not fp.settled and any(_same_place((f, fp), s) for s in specific))
                    or (not first and not t.shown and now - t.first_seen < hold)
                    or (residue and not _supported(fp, recent, diagnosis))
                )
            elif t.last_seen == now and (_star(f) or _beside_a_catch_all(f, found) or fp.unsettled):
                show = first or t.shown or now - t.first_seen >= pol.hold_s
            # A catch-all held back again starts its hold again when it is next shown.
            shown_since = (t.since if t.shown and t.since is not None else now) if show else None
            state.append(replace(t, shown=show, since=shown_since))
        self._tracked = state
        shown = [t for t in state if t.shown]
        self._shown_log = [e for e in self._shown_log if now - e[0] <= pol.memory_s]
        self._shown_log += [(now, t.finding, t.footprint) for t in shown]
        return [(msgspec.structs.replace(t.finding, since=t.since), t.footprint) for t in shown]

    def _residue(self, now: float, x: tuple[Finding, Footprint], *, catch_alls: bool = False) -> bool:
        """Is ``x`` at the place of a specific finding (or, with ``catch_alls``, of any
        finding) shown within ``memory_s``?"""
        return any(
            now - at <= self.policy.memory_s
            and (catch_alls or f.kind not in PROVISIONAL)
            and _same_place(x, (f, fp))
            for at, f, fp in self._shown_log
        )


def _star(f: Finding) -> bool:
    """A pair-blocked finding with a node in :data:`STAR_PAIRS` or more of its pairs (blocked
    pairs that share a node are one finding, so the stars of several onsets with a common
    peer are one too)."""
    if f.kind != FindingKind.PAIR_BLOCKED or len(f.pairs) < STAR_PAIRS:
        return False
    return max(Counter(x for pair in f.pairs for x in set(pair)).values()) >= STAR_PAIRS


def _beside_a_catch_all(f: Finding, found: Sequence[tuple[Finding, Footprint]]) -> bool:
    """A pair-blocked finding with a node that a catch-all of the same pass names: that
    node's other probes fail too (its pairs' failures are pair-blocked's, not the
    catch-all's), as they do in the first seconds of a node's fault."""
    if f.kind != FindingKind.PAIR_BLOCKED:
        return False
    failing = {x for g, _ in found if g.kind in PROVISIONAL for x in g.nodes}
    return any(x in failing for pair in f.pairs for x in pair)


def _predecessor(tracked: Sequence[_Tracked], f: Finding, fp: Footprint) -> _Tracked | None:
    """The tracked finding this one continues: the same kind at the same place."""
    for t in tracked:
        if _continues((t.finding, t.footprint), (f, fp)):
            return t
    return None


def _same_finding(a: _Tracked, b: _Tracked) -> bool:
    return _continues((a.finding, a.footprint), (b.finding, b.footprint))


def _continues(a: tuple[Finding, Footprint], b: tuple[Finding, Footprint]) -> bool:
    """One finding from pass to pass: the same kind at the same place, or the same kind
    naming no node and no zone (the whole cluster: an NLB collision, DNS timeouts spread
    over the cluster, one finding a window whose footprint may hold no whole stream)."""
    (fa, _), (fb, _) = a, b
    if fa.kind != fb.kind:
        return False
    return _same_place(a, b) or not (fa.nodes or fa.zones or fb.nodes or fb.zones)


def _same_place(a: tuple[Finding, Footprint], b: tuple[Finding, Footprint]) -> bool:
    (fa, pa), (fb, pb) = a, b
    if of_clients(fa, fb):  # a hairpin NLB's clients are every node: its streams are its place
        return within_clients(a, b)
    if set(fa.nodes) & set(fb.nodes) or set(fa.zones) & set(fb.zones):
        return True
    if fa.nodes and fb.nodes:
        return False
    return bool(set(pa.streams) & set(pb.streams))


def _supported(fp: Footprint, recent: StreamStats | None, diagnosis: DiagnosisPolicy) -> bool:
    """Do the recent probes of the streams fail significantly above the background?"""
    if recent is None:
        return False
    n, impaired = recent.totals(fp.streams)
    if n < diagnosis.min_samples:
        return False
    log_p = log_binom_sf(math.ceil(impaired), n, diagnosis.background_failure_rate)
    return log_p <= math.log(diagnosis.alpha)
