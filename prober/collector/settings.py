"""The collector's settings: one typed value, built and checked by a pure function.

``prober collector`` maps its flags (and their ``PROBER_*`` environment variables)
onto :func:`collector_settings`; tests and the lab build settings the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from prober.errors import UsageError

MIB = 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings:
    #: The static inventory file; ``None`` with ``kubernetes``.
    inventory: str | None = None
    #: Discover the inventory from the Kubernetes API instead of a file.
    kubernetes: bool = False
    listen: str = "0.0.0.0"
    port: int = 9090
    # The schedule every agent's pinglist follows (see docs/architecture.md § Schedule).
    interval_s: float = 10.0
    timeout_s: float = 5.0
    budget_per_s: float = 20.0
    shared_budget_per_s: float = 20.0
    #: Probes/s of the whole mesh (what this collector ingests); 0: no limit.
    cluster_budget_per_s: float = 25_000.0
    #: The window of the matrix, findings and metrics unless a request asks for another.
    window_s: float = 60.0
    #: How long results are kept: the longest window a request may ask for.
    retention_s: float = 900.0
    #: The store's time resolution.
    bucket_s: float = 10.0
    #: Findings also come from a window this many times longer (within retention), for
    #: the modes whose evidence accrues slowly (DNS timeouts, collisions, hairpin at scale).
    long_window_factor: float = 5.0
    #: A window's findings are recomputed at most this often (the refresh period too).
    refresh_s: float = 5.0
    #: The largest results batch accepted (413 beyond).
    max_body_bytes: int = 16 * MIB
    #: How long a sweep waits for one agent's answer.
    sweep_deadline_s: float = 60.0
    #: How many agents a sweep asks at once.
    sweep_concurrency: int = 64
    #: Finished sweeps kept for ``GET /api/v1/sweeps/{id}``.
    sweeps_kept: int = 20


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"{name} must be greater than 0, got {value:g}")


def collector_settings(
    *,
    inventory: str | None,
    kubernetes: bool = False,
    listen: str = "0.0.0.0",
    port: int = 9090,
    interval_s: float = 10.0,
    timeout_s: float = 5.0,
    budget_per_s: float = 20.0,
    shared_budget_per_s: float = 20.0,
    cluster_budget_per_s: float = 25_000.0,
    window_s: float = 60.0,
    retention_s: float = 900.0,
    bucket_s: float = 10.0,
) -> CollectorSettings:
    """Check flag values together and return the settings; a :class:`UsageError` names the flag."""
    if kubernetes and inventory:
        raise UsageError("use either --inventory FILE or --kubernetes, not both")
    if not inventory and not kubernetes:
        raise UsageError(
            "no inventory: pass --inventory FILE (or set PROBER_INVENTORY), or --kubernetes in a cluster"
        )
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {port}")
    if not listen:
        raise UsageError("--listen must be an address, e.g. 0.0.0.0 or 127.0.0.1")
    for name, value in (
        ("--interval", interval_s),
        ("--timeout", timeout_s),
        ("--budget", budget_per_s),
        ("--shared-budget", shared_budget_per_s),
        ("--window", window_s),
        ("--retention", retention_s),
    ):
        _positive(name, value)
    if not cluster_budget_per_s >= 0:
        raise UsageError(f"--cluster-budget must be 0 (no limit) or more, got {cluster_budget_per_s:g}")
    if timeout_s >= interval_s:
        raise UsageError(f"--timeout ({timeout_s:g} s) must be shorter than --interval ({interval_s:g} s)")
    if retention_s < bucket_s:
        raise UsageError(f"--retention must be at least {bucket_s:g} s (one bucket), got {retention_s:g}")
    if window_s > retention_s:
        raise UsageError(f"--window ({window_s:g} s) cannot be longer than --retention ({retention_s:g} s)")
    return CollectorSettings(
        inventory=inventory,
        kubernetes=kubernetes,
        listen=listen,
        port=port,
        interval_s=interval_s,
        timeout_s=timeout_s,
        budget_per_s=budget_per_s,
        shared_budget_per_s=shared_budget_per_s,
        cluster_budget_per_s=cluster_budget_per_s,
        window_s=window_s,
        retention_s=retention_s,
        bucket_s=bucket_s,
    )
