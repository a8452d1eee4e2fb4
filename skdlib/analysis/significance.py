"""Two-sided t-tests of seed means: the book's one rule for "larger than seed noise".

Every comparison in the book is between settings run with several seeds. A difference of seed
means is called *larger than seed noise* only when a two-sided test gives ``p < ALPHA`` (0.05);
otherwise it is *within seed noise*. Two tests, and the chapters say which one they use:

* **Welch's t** (:func:`welch_test`) for independent samples with unequal variances:
  ``t = (mean_b - mean_a) / sqrt(s_a^2 / n_a + s_b^2 / n_b)``, degrees of freedom by
  Welch-Satterthwaite, ``df = (v_a + v_b)^2 / (v_a^2 / (n_a - 1) + v_b^2 / (n_b - 1))`` with
  ``v = s^2 / n``. With three seeds on each side ``df`` lies between 2 and 4, where the two-sided
  5 % critical value of ``|t|`` is 4.3 to 2.8, not 2.
* **A linear contrast** (:func:`contrast_test`): ``sum_k c_k mean_k`` over several independent
  settings, ``se = sqrt(sum_k c_k^2 s_k^2 / n_k)``, with the same Satterthwaite ``df``; Welch's
  test is the contrast ``(-1, +1)``.

"±" in the book is always one sample standard deviation across seeds (``ddof = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "ALPHA",
    "LARGER",
    "WITHIN",
    "TTest",
    "contrast_from_summaries",
    "contrast_test",
    "format_p",
    "p_cell",
    "p_value",
    "welch_test",
]

#: Significance level of every two-sided test in the book.
ALPHA = 0.05
#: The two verdicts.
LARGER = "larger than seed noise"
WITHIN = "within seed noise"


@dataclass(frozen=True)
class TTest:
    """A two-sided t-test of a difference (or contrast) of seed means.

    Attributes:
        value: the difference ``mean_b - mean_a`` (or the contrast), in the samples' unit.
        se: its standard error.
        t: ``value / se`` (``±inf`` when ``se`` is 0 and ``value`` is not; NaN when both are).
        df: Welch-Satterthwaite degrees of freedom (NaN when untestable or ``se`` is 0).
        p: two-sided p-value (NaN when untestable; 0 for an infinite ``t``).
        n: the sample sizes, in the order given.
        kind: ``"welch"`` or ``"contrast"``.
        untestable: why no test was possible (fewer than 2 values on a side), or ``""``.
    """

    value: float
    se: float
    t: float
    df: float
    p: float
    n: tuple[int, ...]
    kind: str
    untestable: str = ""

    def significant(self, alpha: float = ALPHA) -> bool:
        """``p < alpha`` (False when untestable)."""
        return not self.untestable and not math.isnan(self.p) and self.p < alpha

    @property
    def verdict(self) -> str:
        """:data:`LARGER`, :data:`WITHIN`, or ``"not testable: ..."``."""
        if self.untestable:
            return f"not testable: {self.untestable}"
        return LARGER if self.significant() else WITHIN

    def describe(self, *, digits: int = 2) -> str:
        """``"+1.23 points, p = 0.012 (Welch's t = 3.4, df = 5.1)"``."""
        if self.untestable:
            return f"{self.value:+.{digits}f} points ({self.verdict})"
        name = "Welch's t" if self.kind == "welch" else "t"
        df = "" if math.isnan(self.df) else f", df = {self.df:.1f}"
        return f"{self.value:+.{digits}f} points, {format_p(self.p)} ({name} = {self.t:.2f}{df})"


def format_p(p: float) -> str:
    """``"p = 0.012"``, ``"p < 0.001"``, or ``"p = n/a"``."""
    if math.isnan(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def p_cell(p: float) -> str:
    """A table cell for a two-sided p-value: ``"0.012"``, ``"< 0.001"``, ``"n/a"``."""
    return format_p(p).removeprefix("p = ").replace("p < ", "< ")


def p_value(t: float, df: float) -> float:
    """Two-sided p-value of Student's t with ``df`` degrees of freedom: ``2 * P(T > |t|)``.

    ``t = ±inf`` gives 0; a NaN ``t`` or ``df`` gives NaN.

    Raises:
        ValueError: ``df <= 0``.
    """
    if math.isnan(t) or math.isnan(df):
        return math.nan
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return float(2.0 * stats.t.sf(abs(t), df))


def _summary(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; NaN below 2 values) and count, NaNs dropped."""
    x = np.asarray([v for v in values if not math.isnan(float(v))], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size)


def contrast_test(
    samples: Sequence[Sequence[float]], coefficients: Sequence[float], *, kind: str = "contrast"
) -> TTest:
    """Two-sided test of ``sum_k c_k * mean(samples[k])`` = 0 for independent samples.

    ``se = sqrt(sum_k c_k^2 s_k^2 / n_k)`` and the Welch-Satterthwaite
    ``df = se^4 / sum_k (c_k^2 s_k^2 / n_k)^2 / (n_k - 1)``. For "does a term add more with B
    than with A": ``samples = [A_without, A_with, B_without, B_with]`` and
    ``coefficients = [1, -1, -1, 1]``.
    NaN values are dropped; a sample with fewer than two values makes the test untestable.

    Raises:
        ValueError: different numbers of samples and coefficients, or none.
    """
    if len(samples) != len(coefficients) or not samples:
        raise ValueError(
            f"samples and coefficients must be equally many and not empty, got {len(samples)} "
            f"and {len(coefficients)}"
        )
    summaries = [_summary(s) for s in samples]
    return contrast_from_summaries(
        [m for m, _, _ in summaries],
        [sd for _, sd, _ in summaries],
        [n for _, _, n in summaries],
        coefficients,
        kind=kind,
    )


def contrast_from_summaries(
    means: Sequence[float],
    stds: Sequence[float],
    counts: Sequence[int],
    coefficients: Sequence[float],
    *,
    kind: str = "contrast",
) -> TTest:
    """:func:`contrast_test` from each sample's mean, sample standard deviation and size (what a
    table of seed means holds). A sample of fewer than two values makes the test untestable.

    Raises:
        ValueError: the four sequences differ in length, or are empty.
    """
    sizes = {len(means), len(stds), len(counts), len(coefficients)}
    if len(sizes) != 1 or not means:
        raise ValueError(
            "means, stds, counts and coefficients must be equally many and not empty, got "
            f"{len(means)}, {len(stds)}, {len(counts)} and {len(coefficients)}"
        )
    counts = tuple(int(n) for n in counts)
    value = sum(c * m for c, m in zip(coefficients, means, strict=True))
    if min(counts) < 2:
        why = f"{min(counts)} value(s) on one side (needs 2)"
        return TTest(value, math.nan, math.nan, math.nan, math.nan, counts, kind, why)
    parts = [c * c * s * s / n for c, s, n in zip(coefficients, stds, counts, strict=True)]
    se = math.sqrt(sum(parts))
    if se == 0:
        t = math.copysign(math.inf, value) if value else math.nan
        p = 0.0 if value else math.nan
        return TTest(value, se, t, math.nan, p, counts, kind)
    df = se**4 / sum(v * v / (n - 1) for v, n in zip(parts, counts, strict=True) if v > 0)
    t = value / se
    return TTest(value, se, t, df, p_value(t, df), counts, kind)


def welch_test(a: Sequence[float], b: Sequence[float]) -> TTest:
    """Welch's two-sided t-test of ``mean(b) - mean(a)`` (NaNs dropped; see the module)."""
    return contrast_test([a, b], [-1.0, 1.0], kind="welch")
