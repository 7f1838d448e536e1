"""Statistics of A/B results (docs/analytics.md, "Statistics"): pure functions, standard library only.

- **Rate** of ``x`` successes in ``n`` trials: ``x / n``, with its 95 % **Wilson score interval**
  ``(p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n)``, ``z = 1.959964`` (sound for small n and rates near 0).
- **Two-proportion z-test** of a variant against the control (pooled): ``p̄ = (x₁+x₂)/(n₁+n₂)``,
  ``z = (p₁ − p₂) / √(p̄(1−p̄)(1/n₁ + 1/n₂))``, two-sided ``p-value = erfc(|z|/√2)``.
- **Too small to decide** when either group has fewer than ``MIN_SAMPLE`` (100) trials, or fewer than
  ``MIN_EXPECTED`` (5) expected successes or failures (``n·p̄``, ``n·(1−p̄)``): the normal approximation behind the
  test is not trustworthy there.
- **Verdict** at ``ALPHA`` (0.05): better / worse when ``p < α`` (by the sign of the difference), otherwise no
  significant difference.
- **Holdout lift** = ``(rate_treated − rate_holdout) / rate_holdout``; **incremental conversions** =
  ``converted_treated − rate_holdout × n_treated`` (what the message added over what would have happened anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054
ALPHA = 0.05
MIN_SAMPLE = 100
MIN_EXPECTED = 5

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no_difference"
TOO_SMALL = "too_small"
CONTROL = "control"


def rate(successes: int, trials: int) -> float:
    return successes / trials if trials else 0.0


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (``(0, 0)`` without trials)."""
    if trials <= 0:
        return (0.0, 0.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


@dataclass(frozen=True, slots=True)
class Comparison:
    z: float | None
    p_value: float | None
    verdict: str


def too_small(x1: int, n1: int, x2: int, n2: int) -> bool:
    if n1 < MIN_SAMPLE or n2 < MIN_SAMPLE:
        return True
    pooled = (x1 + x2) / (n1 + n2)
    return any(n * pooled < MIN_EXPECTED or n * (1 - pooled) < MIN_EXPECTED for n in (n1, n2))


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, *, alpha: float = ALPHA) -> Comparison:
    """Group 1 (a variant) against group 2 (the control): z, two-sided p-value and the verdict."""
    if n1 <= 0 or n2 <= 0:
        return Comparison(None, None, TOO_SMALL)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        z, p_value = 0.0, 1.0
    else:
        z = (x1 / n1 - x2 / n2) / se
        p_value = math.erfc(abs(z) / math.sqrt(2))
    if too_small(x1, n1, x2, n2):
        return Comparison(z, p_value, TOO_SMALL)
    if p_value < alpha:
        return Comparison(z, p_value, BETTER if z > 0 else WORSE)
    return Comparison(z, p_value, NO_DIFFERENCE)


@dataclass(frozen=True, slots=True)
class Lift:
    lift: float | None  # None when the holdout converted nobody (no base to compare with)
    incremental: float
    comparison: Comparison


def holdout_lift(converted: int, treated: int, holdout_converted: int, holdout: int) -> Lift:
    """The treated group's (all variants') conversion against the holdout's."""
    treated_rate = rate(converted, treated)
    holdout_rate = rate(holdout_converted, holdout)
    lift = (treated_rate - holdout_rate) / holdout_rate if holdout_rate else None
    incremental = converted - holdout_rate * treated
    return Lift(lift, incremental, two_proportion_test(converted, treated, holdout_converted, holdout))
