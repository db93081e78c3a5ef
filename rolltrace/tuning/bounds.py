"""The exact one-sided 95 % (Clopper–Pearson) upper bound of a failure rate.

With 0 failures in n trials the bound is 1 − 0.05^(1/n), about 3/n (the "rule of three"); with
x failures it is the p at which seeing at most x failures has probability 5 %. Failures within
one rollout are not independent, so tune quotes the bound both per request and per rollout.
"""

from __future__ import annotations

import math

CONFIDENCE = 0.95
_ALPHA = 1 - CONFIDENCE
_RESOLUTION = 1e-12  # far below any rate a tune can quote


def binomial_cdf(x: int, n: int, p: float) -> float:
    """P(X ≤ x) for X ~ Binomial(n, p), summed in log space so that n in the millions works."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if x >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * log_p
        + (n - k) * log_q
        for k in range(x + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def upper_95(failures: int, trials: int) -> float:
    """The smallest failure rate that 95 % of experiments like this one would have shown more
    failures than observed: with 0 of n, 1 − 0.05^(1/n). No trials bound nothing (1.0)."""
    if trials <= 0 or failures >= trials:
        return 1.0
    if failures == 0:
        return 1 - math.pow(_ALPHA, 1 / trials)
    low, high = failures / trials, 1.0
    while high - low > _RESOLUTION:
        mid = (low + high) / 2
        if binomial_cdf(failures, trials, mid) > _ALPHA:
            low = mid
        else:
            high = mid
    return high
