"""The statistics every rule's test is built from: exact binomial and Poisson tails, in logs.

Rules ask one question of their counts: how likely is this pattern if nothing is
wrong, i.e. if every probe fails independently at the background rate? The answer
is a tail probability (a p-value); a rule reports when the p-value, corrected for
how many places it looked (Bonferroni), is below ``1 - min_confidence``.

Tails are computed exactly (regularized incomplete beta by Lentz's continued
fraction) and kept in logarithms: a dead node's column gives p-values like 1e-300,
and "0 of 371 successes served by node-a" needs ``(1 - q) ** n`` without underflow.
Pure Python and the standard library: rules call these on a handful of candidates
after cheap vectorized effect-size filters, never on every cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_FPMIN = 1e-300
_EPS = 1e-14
_MAXIT = 100_000


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    for m in range(1, _MAXIT + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def log_betainc(a: float, b: float, x: float) -> float:
    """log of the regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return -math.inf
    if x >= 1.0:
        return 0.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return log_front + math.log(_betacf(a, b, x)) - math.log(a)
    rest = math.exp(log_front + math.log(_betacf(b, a, 1.0 - x)) - math.log(b))
    return math.log1p(-rest) if rest < 1.0 else -math.inf


def log_binom_sf(k: float, n: float, p: float) -> float:
    """log P(X >= k) for X ~ Binomial(n, p): how surprising k or more failures are."""
    k, n = math.ceil(k), math.floor(n)
    if k <= 0:
        return 0.0
    if k > n or p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    return log_betainc(k, n - k + 1, p)


def log_binom_cdf(k: float, n: float, p: float) -> float:
    """log P(X <= k) for X ~ Binomial(n, p): how surprising k or fewer events are."""
    k, n = math.floor(k), math.floor(n)
    if k < 0:
        return -math.inf
    if k >= n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return -math.inf
    return log_betainc(n - k, k + 1, 1.0 - p)


def _logsumexp(values: Iterable[float]) -> float:
    vs = list(values)
    top = max(vs)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in vs))


def log_poisson_cdf(k: float, mu: float) -> float:
    """log P(X <= k) for X ~ Poisson(mu): "0 of 371 successes on self, expected ~124"."""
    k = math.floor(k)
    if k < 0:
        return -math.inf
    if mu <= 0.0:
        return 0.0
    log_mu = math.log(mu)
    return min(0.0, _logsumexp(-mu + i * log_mu - math.lgamma(i + 1) for i in range(k + 1)))


#: A term this far (in log) below the largest adds nothing a float can hold to a sum.
_NEGLIGIBLE = 40.0


def _log_comb(n: float, k: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def log_excess(f1: float, n1: float, f2: float, n2: float) -> float:
    """One-sided Fisher exact test: log P(group 1 has >= f1 of the f1 + f2 failures).

    The two groups (n1 and n2 probes) fail at one rate under the null; a small value
    says group 1 fails more than group 2 ("DNS times out more than UDP echo").
    """
    a, n1, n2 = math.floor(f1), math.floor(n1), math.floor(n2)
    k_total = a + math.floor(f2)
    total = n1 + n2
    if a <= 0:
        return 0.0
    top = min(k_total, n1)
    if a > top:
        return -math.inf
    denom = _log_comb(total, n1)
    # The hypergeometric's terms are log-concave in x: past the largest, once a term is
    # e^-40 of it they only fall faster, and the rest cannot move the sum's log (a
    # lossy node's thousands of failures are thousands of terms, a few dozen count).
    terms: list[float] = []
    peak = -math.inf
    for x in range(a, top + 1):
        term = _log_comb(k_total, x) + _log_comb(total - k_total, n1 - x) - denom
        terms.append(term)
        if term > peak:
            peak = term
        elif term < peak - _NEGLIGIBLE:
            break
    return min(0.0, _logsumexp(terms))


def log_fisher(log_ps: Iterable[float]) -> float:
    """Fisher's method: combine independent p-values (given as logs) into one.

    -2 * sum(ln p) is chi-square with 2m degrees of freedom; for even degrees the
    survival function has the closed form exp(-x/2) * sum_{i<m} (x/2)^i / i!.
    """
    lps = list(log_ps)
    if not lps:
        return 0.0
    if any(lp == -math.inf for lp in lps):
        return -math.inf
    half = -sum(lps)  # x / 2
    if half <= 0.0:
        return 0.0
    log_half = math.log(half)
    return min(0.0, -half + _logsumexp(i * log_half - math.lgamma(i + 1) for i in range(len(lps))))


def bonferroni(log_p: float, tests: int) -> float:
    """log of the p-value corrected for ``tests`` places looked at (never above 0)."""
    return min(0.0, log_p + math.log(max(1, tests)))


def confidence(log_p: float) -> float:
    """1 - p, computed without cancellation."""
    return -math.expm1(log_p) if log_p < 0.0 else 0.0


def wilson(k: float, n: float, z: float = 2.576) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (default 99%); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    phat = min(1.0, max(0.0, k / n))
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(phat * (1.0 - phat) / n + z * z / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def poisson_upper(mu: float, z: float = 3.0) -> float:
    """A generous upper bound on a Poisson count with mean ``mu`` (0 when mu is 0).

    Used when a rule claims failures it expects but cannot point at one by one (a
    Service probe that timed out has no serving node): claiming up to this bound
    absorbs counting noise, so a fault's own failures do not leak into the residue.
    """
    if mu <= 0.0:
        return 0.0
    return mu + z * z / 2.0 + z * math.sqrt(mu + z * z / 4.0)
