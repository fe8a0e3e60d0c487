"""Every failure mode prober names, in the order its rules run: the one list of them.

A mode is declared beside its rule (``MODE`` at the end of each rule module, see
:class:`~prober.diagnose.mode.FailureMode`); this tuple orders them. The order is
the order rules run and *claim* failures: from the patterns that explain the most
(a dead node explains its whole row and column) to the most specific, ending with
the localizer, which turns a significant residue into one ``unexplained`` finding.

1. zone-partition (between zones), 2. node-isolated, 3. node-unreachable,
4. pod-network-isolated, 5. pair-blocked (matrix structure), 6. nlb-hairpin,
7. nlb-5tuple-collision (NLB), 8. bridge-netfilter, 9. snat-asymmetric (per node
and network), 10. zone-degraded (partial rates over a zone's nodes), 11. packet-loss
(partial rates on what is left), 12. dns-timeouts, 13. unexplained.

Adding a failure mode: its :class:`~prober.model.FindingKind`, its rule module
ending in ``MODE``, one line here, and its tests. ``tests/unit/test_catalogue.py``
holds the catalogue complete (one mode per kind, unique alerts, remediations whose
placeholders fill).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

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
    pod_network_isolated,
    snat_asymmetric,
    zone_degraded,
    zone_partition,
)
from prober.diagnose.mode import FailureMode
from prober.model import FindingKind

MODES: Final[tuple[FailureMode, ...]] = (
    zone_partition.MODE,
    node_isolated.MODE,
    node_unreachable.MODE,
    pod_network_isolated.MODE,
    pair_blocked.MODE,
    nlb_hairpin.MODE,
    nlb_collision.MODE,
    bridge_netfilter.MODE,
    snat_asymmetric.MODE,
    zone_degraded.MODE,  # before packet-loss: the node findings it explains are never made
    packet_loss.MODE,
    dns_timeouts.MODE,
    localize.MODE,  # last: it explains whatever the others left
)

#: Each kind's mode.
BY_KIND: Final[Mapping[FindingKind, FailureMode]] = {m.kind: m for m in MODES}
