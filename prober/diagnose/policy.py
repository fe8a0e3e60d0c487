"""The thresholds of diagnosis, in one documented value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class DiagnosisPolicy:
    """Thresholds shared by every rule.

    Every rule tests its pattern against one null hypothesis: "each probe fails
    independently at ``background_failure_rate``". A finding needs the
    Bonferroni-corrected confidence of that test to reach ``min_confidence`` *and*
    the pattern to be large enough to matter (the ratios below): significance says a
    pattern is real, the ratios say it is the named failure mode.
    """

    #: The least confidence (1 - corrected p-value) at which a finding is reported.
    min_confidence: float = 0.99
    #: The fewest probes a rule's test may rest on; below it the rule stays silent.
    #: Small on purpose: the binomial test already needs several failures to reach
    #: ``min_confidence``; this floor guards against one burst (an agent restart)
    #: passing for a pattern. Raise it to trade detection time for caution.
    min_samples: int = 6
    #: The failure rate of a healthy path (the null hypothesis). Four times the
    #: 0.05% seen on healthy clusters, so ordinary noise never reaches significance.
    background_failure_rate: float = 0.002
    #: Share of failed probes from which a column, row or cell counts as dead
    #: (node-unreachable, node-isolated, pair-blocked, one side of snat-asymmetric,
    #: service-local under bridge-netfilter). Below it, failures are partial: loss.
    dead_ratio: float = 0.9
    #: Largest failure share of the side of a comparison that must be healthy (the
    #: host side of snat-asymmetric, the guards of bridge-netfilter).
    healthy_ratio: float = 0.2
    #: The fewest distinct peers a node-level pattern must be seen from (capped at
    #: the number of peers), so a node fault is never one blocked pair.
    min_sources: int = 2
    #: The least share of impaired probes (failed, or needing a TCP SYN retransmit)
    #: touching a node for a suspect of an unexplained finding.
    min_loss_rate: float = 0.02
    #: packet-loss's threshold follows the sample size: a node is named once its
    #: impaired share is significantly above the background *estimated per path from
    #: the window* (the rest of the cluster's rate on each path it probes, pulled
    #: toward ``background_failure_rate`` by ``background_prior_probes`` pseudo-probes)
    #: and at least ``loss_ratio`` times it and ``min_loss_floor``. With few samples only
    #: heavy loss is significant; with many, 1% loss on one node is.
    min_loss_floor: float = 0.005
    loss_ratio: float = 3.0
    background_prior_probes: float = 1000.0
    #: zone-degraded: a zone of fewer nodes is its nodes' (packet-loss names them), and
    #: the zone must still lose without this share of its lossiest nodes (at least one):
    #: most of its nodes lose, or it is their loss, not the zone's.
    zone_min_nodes: int = 3
    zone_spread_drop: float = 0.5
    #: The DNS timeout share band that dns-timeouts names: above the lower bound it
    #: matters, above the upper bound DNS is down (an unexplained outage, not races).
    min_dns_timeout_rate: float = 0.005
    max_dns_timeout_rate: float = 0.5
    #: Two NLB probes from one source port at most this far apart form a collision pair.
    pair_window_s: float = 1.0
    #: Most suspects listed on an unexplained finding.
    max_suspects: int = 3

    @property
    def alpha(self) -> float:
        """The corrected p-value a test must reach."""
        return 1.0 - self.min_confidence
