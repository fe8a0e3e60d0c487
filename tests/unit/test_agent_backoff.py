"""Reporter backoff and the probe budget: pure rules, checked as invariants."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from prober.agent.budget import Budget
from prober.agent.reporter import ReporterPolicy, backoff_delay


@given(attempt=st.integers(min_value=0, max_value=200), seed=st.integers(min_value=0, max_value=2**32))
def test_backoff_is_jittered_within_an_exponential_cap(attempt: int, seed: int) -> None:
    policy = ReporterPolicy(backoff_initial_s=0.5, backoff_max_s=30.0)
    delay = backoff_delay(attempt, policy, random.Random(seed))
    assert 0.0 <= delay <= min(30.0, 0.5 * 2**attempt)


def test_backoff_grows_then_stays_capped() -> None:
    policy = ReporterPolicy(backoff_initial_s=0.5, backoff_max_s=30.0)
    rng = random.Random(7)

    def mean(attempt: int) -> float:
        return sum(backoff_delay(attempt, policy, rng) for _ in range(2000)) / 2000

    assert mean(0) < 0.3 < mean(3) < 2.5 < mean(10)
    assert 13 < mean(20) < 17  # full jitter under a 30 s cap averages 15 s


@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 20.0, 500.0]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=300),
    sizes=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=300),
)
def test_budget_is_never_exceeded_in_any_window(rate: float, gaps: list[float], sizes: list[int]) -> None:
    """Launch greedily whenever the budget allows; no window ever holds more than its cap."""
    budget = Budget(rate)
    now, launches = 0.0, []
    for gap, size in zip(gaps, sizes, strict=False):
        now += gap
        n = min(size, budget.cap)
        now += budget.delay(now, n)
        assert budget.delay(now, n) == 0.0
        budget.take(now, n)
        launches.extend([now] * n)
    for t in launches:
        in_window = sum(1 for u in launches if t <= u < t + budget.window_s)
        assert in_window <= budget.cap


def test_budget_window_and_cap() -> None:
    assert (Budget(20).window_s, Budget(20).cap) == (1.0, 20)
    assert (Budget(0.5).window_s, Budget(0.5).cap) == (2.0, 1)
    b = Budget(2)
    b.take(10.0, 2)
    assert b.delay(10.5) == 0.5  # the third launch waits until the first leaves the window
    assert b.delay(11.0) == 0.0
