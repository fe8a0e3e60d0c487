"""Build, change and tear down a lab's network: namespaces, links, routes, rules, faults.

The topology comes from :mod:`prober_lab.plan` and :mod:`prober_lab.topology`, the
rules from :mod:`prober_lab.iptables`, the fault state from :mod:`prober_lab.faults`;
this module applies them in the order the kernel needs and times each step.
Teardown deletes every namespace with the lab's prefix (whatever state file there
is or is not), so it is idempotent and safe after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prober_lab import netns
from prober_lab.faults import Fault, fault_effects
from prober_lab.iptables import fault_chain_restore, nlb_rules, node_rules, router_rules
from prober_lab.plan import Plan
from prober_lab.topology import create_batch, namespace_setups


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    namespaces: int
    setup_s: float


def build_network(plan: Plan) -> Timing:
    """Create the lab's namespaces and everything in them; the caller tears down on error."""
    start = time.perf_counter()
    existing = netns.namespaces_with_prefix(plan.prefix)
    if existing:
        raise netns.LabError(
            f"a lab with prefix {plan.prefix!r} already exists ({len(existing)} namespaces, "
            f"e.g. {existing[0]}); run `prober lab down` first"
        )
    netns.ip_batch(create_batch(plan))
    setups = namespace_setups(plan)
    for s in setups:
        netns.write_sysctls(s.ns, s.sysctls)
    # Namespaces are independent from here on: one process each, all at once.
    netns.run_all([netns.ip_batch_job(s.ip_batch, ns=s.ns) for s in setups])
    netns.run_all(
        [
            netns.iptables_restore_job(plan.router_ns, router_rules(plan)),
            *(netns.iptables_restore_job(n.ns, node_rules(plan, n)) for n in plan.nodes),
        ]
    )
    apply_faults(plan, (), flush=False)  # a new lab has no flows to forget
    return Timing(namespaces=len(plan.namespaces), setup_s=time.perf_counter() - start)


def apply_faults(plan: Plan, faults: Sequence[Fault], *, flush: bool = True) -> None:
    """Make the lab's fault-relevant state exactly that of ``faults`` (empty: clean)."""
    effects = fault_effects(plan, faults)
    for n in plan.nodes:
        netns.write_sysctls(n.ns, effects.node_sysctls[n.name])
        netns.ip_batch((f"link set {link}" for link in effects.node_links[n.name]), ns=n.ns)
    for nlb in plan.nlbs:
        netns.iptables_restore(nlb.ns, nlb_rules(plan, nlb, effects.nlb[nlb.zone]))
    netns.iptables_restore(plan.router_ns, fault_chain_restore(effects.router_rules), noflush=True)
    netns.ip_batch((f"route {r}" for r in effects.router_routes), ns=plan.router_ns)
    netns.ip_batch((f"link set {link}" for link in effects.router_links), ns=plan.router_ns)
    # Conntrack keeps flows established under the old state (an NLB's SNAT, a marked
    # flow): forget them so the new state holds for the next probe.
    if not flush:
        return
    for ns in (plan.router_ns, *(nlb.ns for nlb in plan.nlbs), *(n.ns for n in plan.nodes)):
        flush_conntrack(ns)


def flush_conntrack(ns: str) -> None:
    # `conntrack -F` is optional: without it, stale flows age out on their own.
    with contextlib.suppress(netns.LabError):
        netns.exec_in(ns, ["conntrack", "-F"], check=False)


def kill_pids(pids: Sequence[int], *, grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``grace_s``."""
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _exists(p)]
        if alive:
            time.sleep(0.02)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    """Alive and not a zombie (an exited process whose parent has not reaped it yet)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def teardown(prefix: str, *, extra_pids: Sequence[int] = ()) -> tuple[int, float]:
    """Stop every process inside the lab's namespaces, then delete the namespaces.

    Returns (namespaces deleted, seconds). Touches only namespaces named ``prefix-*``
    and processes that live in them (or that the lab recorded starting).
    """
    start = time.perf_counter()
    names = netns.namespaces_with_prefix(prefix)
    pids = set(extra_pids)
    for ns in names:
        pids.update(netns.pids_in(ns))
    pids.discard(os.getpid())
    kill_pids(sorted(pids))
    if names:
        try:
            netns.ip_batch([f"netns del {ns}" for ns in names], force=True)
        except netns.LabError:
            # A namespace whose file went away between the listing and the delete (ip
            # reports it and fails the batch) is gone, which is what was asked; any
            # that is still there is a real failure.
            if set(names) & set(netns.namespaces_with_prefix(prefix)):
                raise
    return len(names), time.perf_counter() - start
