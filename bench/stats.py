"""Percentiles with their sample size, confidence intervals and the spread over runs.

Percentiles are nearest-rank (the smallest sample with at least q% of the samples at
or below it), so a p99 is a value that was measured. Its 95% confidence interval
comes from the order statistics (a distribution-free interval: the ranks between
which the true quantile lies with 95% probability, by the binomial distribution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n up to a few thousand)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    total = 0.0
    for i in range(k + 1):
        log_term = (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )
        total += math.exp(log_term)
    return min(1.0, total)


def quantile_interval(
    values: Sequence[float], q: float, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """A distribution-free `confidence` interval for the q-th percentile. An end is None
    where n is too small for a sample to bound it: a p99's upper end needs n >= 368
    (below that, the true p99 may lie above the largest sample)."""
    ordered = sorted(values)
    n, p = len(ordered), q / 100
    tail = (1 - confidence) / 2
    lower = upper = None
    for rank in range(n, 0, -1):  # largest rank l with P(X < l) <= tail, X ~ Bin(n, p)
        if _binomial_cdf(rank - 1, n, p) <= tail:
            lower = rank
            break
    for rank in range(1, n + 1):  # smallest rank u with P(X >= u) <= tail
        if 1 - _binomial_cdf(rank - 1, n, p) <= tail:
            upper = rank
            break
    return (
        None if lower is None else ordered[lower - 1],
        None if upper is None else ordered[upper - 1],
    )


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """n, p50, p95, p99 (with the p99's 95% interval where n allows one), max and mean."""
    if not values:
        return {"n": 0}
    interval = quantile_interval(values, 99)
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "p99": round(percentile(values, 99), digits),
        "p99_ci95": [None if v is None else round(v, digits) for v in interval],
        "max": round(max(values), digits),
        "mean": round(sum(values) / len(values), digits),
    }


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """The same figure over several runs: each run's value, and min and max."""
    measured = [v for v in values if v is not None]
    return {
        "runs": list(values),
        "min": min(measured) if measured else None,
        "max": max(measured) if measured else None,
    }
