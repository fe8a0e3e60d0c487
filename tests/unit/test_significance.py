"""The tail probabilities every rule rests on, against brute-force sums."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.diagnose.significance import (
    bonferroni,
    confidence,
    log_binom_cdf,
    log_binom_sf,
    log_excess,
    log_fisher,
    log_poisson_cdf,
    poisson_upper,
    wilson,
)


def binom_pmf(x: int, n: int, p: float) -> float:
    return math.comb(n, x) * p**x * (1 - p) ** (n - x)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 200), k=st.integers(0, 200), p=st.floats(0.0005, 0.9995))
def test_binomial_tails_match_sums(n: int, k: int, p: float) -> None:
    k = min(k, n)
    sf = sum(binom_pmf(x, n, p) for x in range(k, n + 1))
    cdf = sum(binom_pmf(x, n, p) for x in range(k + 1))
    for got, want in ((log_binom_sf(k, n, p), sf), (log_binom_cdf(k, n, p), cdf)):
        if want > 1e-250:  # below it the brute-force sum itself loses precision
            assert math.exp(got) == pytest.approx(want, rel=1e-7)
        else:
            assert got < math.log(1e-240)


def test_binomial_tails_stay_finite_far_out() -> None:
    # A dead column: 5,000 of 5,000 failed at a 0.2% background rate.
    lp = log_binom_sf(5000, 5000, 0.002)
    assert lp == pytest.approx(5000 * math.log(0.002))
    assert confidence(lp) == 1.0
    # "0 of 371 successes on self, share 1/3": (2/3)^371.
    assert log_binom_cdf(0, 371, 1 / 3) == pytest.approx(371 * math.log(2 / 3))


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        pytest.param(0, 10, 0.5, 0.0, id="nothing-to-exceed"),
        pytest.param(11, 10, 0.5, -math.inf, id="more-than-possible"),
        pytest.param(3, 10, 0.0, -math.inf, id="impossible-failures"),
        pytest.param(3, 10, 1.0, 0.0, id="certain-failures"),
    ],
)
def test_binomial_sf_edges(k: int, n: int, p: float, expected: float) -> None:
    assert log_binom_sf(k, n, p) == expected


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 60), mu=st.floats(0.01, 80.0))
def test_poisson_cdf_matches_sum(k: int, mu: float) -> None:
    direct = sum(math.exp(-mu) * mu**i / math.factorial(i) for i in range(k + 1))
    assert math.exp(log_poisson_cdf(k, mu)) == pytest.approx(direct, rel=1e-9)


def test_poisson_cdf_of_zero_is_exp_minus_mu() -> None:
    assert log_poisson_cdf(0, 124.0) == pytest.approx(-124.0)
    assert log_poisson_cdf(5, 0.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(f1=st.integers(0, 15), n1=st.integers(1, 40), f2=st.integers(0, 15), n2=st.integers(1, 40))
def test_excess_is_the_one_sided_fisher_exact_test(f1: int, n1: int, f2: int, n2: int) -> None:
    f1, f2 = min(f1, n1), min(f2, n2)
    k, total = f1 + f2, n1 + n2

    def hyper(x: int) -> float:
        return math.comb(k, x) * math.comb(total - k, n1 - x) / math.comb(total, n1)

    direct = sum(hyper(x) for x in range(f1, min(k, n1) + 1))
    assert math.exp(log_excess(f1, n1, f2, n2)) == pytest.approx(direct, rel=1e-9)


def test_fisher_combination() -> None:
    # One p-value: unchanged. Two at 0.05: chi2(4) survival of -2 ln(0.0025) = 0.0175.
    assert log_fisher([math.log(0.3)]) == pytest.approx(math.log(0.3))
    assert math.exp(log_fisher([math.log(0.05)] * 2)) == pytest.approx(0.017479, rel=1e-4)
    assert log_fisher([]) == 0.0
    assert log_fisher([0.0, -math.inf]) == -math.inf


def test_bonferroni_and_confidence() -> None:
    assert bonferroni(math.log(0.001), 10) == pytest.approx(math.log(0.01))
    assert bonferroni(math.log(0.5), 10) == 0.0  # never above 1
    assert confidence(math.log(0.01)) == pytest.approx(0.99)
    assert confidence(0.0) == 0.0


def test_wilson_interval() -> None:
    lo, hi = wilson(0, 100)
    assert lo == 0.0
    assert 0.0 < hi < 0.07
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi
    assert wilson(0, 0) == (0.0, 1.0)


def test_poisson_upper_bounds_the_count() -> None:
    assert poisson_upper(0.0) == 0.0
    for mu in (0.1, 1.0, 10.0, 1000.0):
        bound = poisson_upper(mu)
        # P(X > bound) is tiny: the claim covers the counting noise of an expected count.
        assert math.exp(log_poisson_cdf(bound, mu)) > 0.998
