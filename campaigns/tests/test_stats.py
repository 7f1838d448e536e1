"""A/B statistics against numbers computed by hand (the arithmetic is written next to each expectation)."""

from __future__ import annotations

import pytest

from campaigns.stats import (
    BETTER,
    NO_DIFFERENCE,
    TOO_SMALL,
    WORSE,
    holdout_lift,
    rate,
    too_small,
    two_proportion_test,
    wilson_interval,
)


def test_wilson_interval_of_10_in_100():
    # p = 0.1, z = 1.959964, z² = 3.841459, z²/n = 0.0384146, denominator = 1.0384146
    # center = (0.1 + z²/2n = 0.0192073) / 1.0384146 = 0.1192073 / 1.0384146 = 0.1147974
    # half = z·√(p(1−p)/n + z²/4n² = 0.0009 + 0.0000960 = 0.0009960) / 1.0384146 = 1.959964 · 0.0315600 / 1.0384146
    #      = 0.0618564 / 1.0384146 = 0.0595681
    # → (0.1147974 − 0.0595681, 0.1147974 + 0.0595681) = (0.0552293, 0.1743655)
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.0552293, abs=1e-6)
    assert high == pytest.approx(0.1743655, abs=1e-6)


def test_wilson_interval_edges():
    # 0 of 50: center = (0 + 3.841459/100) / (1 + 3.841459/50) = 0.0384146 / 1.0768292 = 0.0356739,
    # half = z·√(0 + 3.841459/10000) / 1.0768292 = 1.959964 · 0.0195996 / 1.0768292 = 0.0356739 → low is 0.
    low, high = wilson_interval(0, 50)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.0713478, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    assert rate(3, 0) == 0.0


def test_two_proportion_test_significant():
    # Variant 60/1000 = 0.06 against control 40/1000 = 0.04.
    # pooled = 100/2000 = 0.05; se = √(0.05 · 0.95 · (1/1000 + 1/1000)) = √0.000095 = 0.0097468
    # z = (0.06 − 0.04) / 0.0097468 = 2.051957; p = erfc(2.051957/√2) = 2·(1 − Φ(2.051957)) = 0.040174 < 0.05
    result = two_proportion_test(60, 1000, 40, 1000)
    assert result.z == pytest.approx(2.051957, abs=1e-6)
    assert result.p_value == pytest.approx(0.040174, abs=1e-6)
    assert result.verdict == BETTER
    assert two_proportion_test(40, 1000, 60, 1000).verdict == WORSE  # the same difference the other way


def test_two_proportion_test_not_significant():
    # 30/100 = 0.30 against 20/100 = 0.20: pooled = 50/200 = 0.25; se = √(0.25 · 0.75 · 0.02) = √0.00375 = 0.0612372
    # z = 0.10 / 0.0612372 = 1.632993; p = erfc(1.632993/√2) = 0.102470 ≥ 0.05
    result = two_proportion_test(30, 100, 20, 100)
    assert result.z == pytest.approx(1.632993, abs=1e-6)
    assert result.p_value == pytest.approx(0.102470, abs=1e-6)
    assert result.verdict == NO_DIFFERENCE


def test_too_small_to_decide():
    # n < 100 in a group: 3/50 vs 1/50 (p would be 0.307 anyway).
    assert two_proportion_test(3, 50, 1, 50).verdict == TOO_SMALL
    # n ≥ 100 but expected successes n·p̄ = 500 · 3/1000 = 1.5 < 5.
    assert too_small(2, 500, 1, 500)
    # Huge difference but tiny sample: still too small (80 and 80 < 100), though p is tiny.
    result = two_proportion_test(40, 80, 5, 80)
    assert result.p_value < 0.001
    assert result.verdict == TOO_SMALL
    # Exactly at the rules: n = 100 each, n·p̄ = 100 · 10/200 = 5 → decidable.
    assert not too_small(5, 100, 5, 100)
    assert two_proportion_test(0, 0, 1, 100).verdict == TOO_SMALL


def test_holdout_lift_and_incremental_conversions():
    # Treated 120/2000 = 0.06, holdout 10/250 = 0.04.
    # lift = (0.06 − 0.04) / 0.04 = 0.5 (+50 %); incremental = 120 − 0.04 · 2000 = 120 − 80 = 40 conversions.
    # z: pooled = 130/2250 = 0.0577778; se = √(0.0577778 · 0.9422222 · (1/2000 + 1/250 = 0.0045)) = 0.0156520
    #    z = 0.02 / 0.0156520 = 1.277811; p = 0.201316 → not significant.
    result = holdout_lift(120, 2000, 10, 250)
    assert result.lift == pytest.approx(0.5)
    assert result.incremental == pytest.approx(40.0)
    assert result.comparison.z == pytest.approx(1.277811, abs=1e-6)
    assert result.comparison.p_value == pytest.approx(0.201316, abs=1e-6)
    assert result.comparison.verdict == NO_DIFFERENCE


def test_holdout_lift_without_holdout_conversions_has_no_ratio():
    # The holdout converted nobody: no base for a ratio; every treated conversion is incremental (15 − 0 · 300).
    result = holdout_lift(15, 300, 0, 100)
    assert result.lift is None
    assert result.incremental == 15
