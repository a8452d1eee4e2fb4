"""Tests of the two-sided t-tests behind every "larger than seed noise" in the book."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from skdlib.analysis.significance import (
    LARGER,
    WITHIN,
    contrast_test,
    format_p,
    p_value,
    welch_test,
)


def test_welch_by_hand() -> None:
    # a = (1, 2, 3): mean 2, s^2 = 1; b = (4, 6, 8): mean 6, s^2 = 4.
    # v_a = 1/3, v_b = 4/3, se = sqrt(5/3); t = 4 / sqrt(5/3) = 3.0984;
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17 = 2.9412.
    r = welch_test([1, 2, 3], [4, 6, 8])
    assert r.value == pytest.approx(4.0)
    assert r.se == pytest.approx(math.sqrt(5 / 3))
    assert r.t == pytest.approx(4 / math.sqrt(5 / 3))
    assert r.df == pytest.approx(50 / 17)
    assert r.n == (3, 3) and r.kind == "welch"


@pytest.mark.parametrize("seed", range(5))
def test_welch_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(60, 1, size=5), rng.normal(61, 2, size=3)
    ours = welch_test(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)


def test_p_value_reference_points() -> None:
    # two-sided 5 % critical values of Student's t
    assert p_value(4.302652729911275, 2) == pytest.approx(0.05, rel=1e-9)
    assert p_value(2.7764451051977987, 4) == pytest.approx(0.05, rel=1e-9)
    assert p_value(-1.959963984540054, 1e9) == pytest.approx(0.05, rel=1e-6)
    assert p_value(math.inf, 3) == 0.0 and math.isnan(p_value(math.nan, 3))
    with pytest.raises(ValueError, match="df"):
        p_value(1.0, 0)


def test_t_of_two_is_not_enough_with_three_seeds() -> None:
    # |t| = 2.5 with df about 4: larger than 2, yet p > 0.05
    a, b = [60.0, 61.0, 62.0], [62.0, 63.0, 64.0]
    r = welch_test(a, b)
    assert 2 < r.t < 2.8 and r.p > 0.05 and r.verdict == WITHIN
    assert welch_test(a, [65.0, 66.0, 67.0]).verdict == LARGER


def test_contrast_by_hand_and_equals_welch() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
    w, c = welch_test(a, b), contrast_test([a, b], [-1, 1])
    assert (c.value, c.se, c.t, c.df, c.p) == pytest.approx((w.value, w.se, w.t, w.df, w.p))
    # interaction (b1 - a1) - (b2 - a2) of four samples, each s^2 = 1, n = 3:
    # se^2 = 4 / 3; df = (4/3)^2 / (4 * (1/3)^2 / 2) = 8
    s = [[0, 1, 2], [3, 4, 5], [1, 2, 3], [1, 2, 3]]
    r = contrast_test(s, [-1, 1, 1, -1])
    assert r.value == pytest.approx(3.0) and r.se == pytest.approx(math.sqrt(4 / 3))
    assert r.df == pytest.approx(8.0)
    assert r.p == pytest.approx(2 * stats.t.sf(3 / math.sqrt(4 / 3), 8))


def test_untestable_and_degenerate() -> None:
    r = welch_test([60.0], [61.0, 62.0])
    assert r.untestable and math.isnan(r.p) and not r.significant()
    assert r.verdict.startswith("not testable: 1 value")
    assert welch_test([1.0, math.nan, 2.0], [3.0, 4.0]).n == (2, 2)
    same = welch_test([5.0, 5.0], [6.0, 6.0])
    assert same.t == math.inf and same.p == 0.0 and same.verdict == LARGER
    equal = welch_test([5.0, 5.0], [5.0, 5.0])
    assert math.isnan(equal.t) and equal.verdict == WITHIN
    with pytest.raises(ValueError, match="equally many"):
        contrast_test([[1.0, 2.0]], [1.0, -1.0])


def test_words() -> None:
    r = welch_test([1, 2, 3], [4, 6, 8])
    assert r.describe().startswith("+4.00 points, p = 0.05")
    assert "Welch's t = 3.10, df = 2.9" in r.describe()
    assert format_p(0.0004) == "p < 0.001" and format_p(math.nan) == "p = n/a"
