"""Intervals for every rate and difference the study reports, and the one rule that turns them into words.

Why a module: a verdict is only as good as its interval. Proportions get Wilson intervals (good coverage at
0 or n successes, where the normal approximation collapses to a zero-width interval); batch-skip rates
derived from a per-sample rate carry the per-sample interval through 1 - (1 - p)^B (monotone in p, so the
endpoints map onto endpoints); means and differences over seeds get Student-t intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Rate:
    """k events in n trials with a confidence interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else math.nan

    def __str__(self) -> str:
        return format_rate(self)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Rate:
    """Wilson score interval of k successes in n trials (n = 0: the uninformative [0, 1])."""
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(k, n, 0.0, 1.0)
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if k == 0:
        low = 0.0
    if k == n:
        high = 1.0
    return Rate(k, n, low, high)


def batch_rate(p: float, batch_size: int) -> float:
    """Share of batches with at least one failure when each of B samples fails independently with p."""
    return 1.0 - (1.0 - p) ** batch_size


def batch_rate_interval(per_sample: Rate, batch_size: int) -> tuple[float, float, float]:
    """(estimate, low, high) of the batch-skip rate implied by a per-sample rate and its interval."""
    return (
        batch_rate(per_sample.p, batch_size) if per_sample.n else math.nan,
        batch_rate(per_sample.low, batch_size),
        batch_rate(per_sample.high, batch_size),
    )


def per_sample_rate_for(batch_skip: float, batch_size: int) -> float:
    """The per-sample failure probability p with 1 - (1 - p)^B = batch_skip (e.g. 56% at B=4 -> 0.186)."""
    return 1.0 - (1.0 - batch_skip) ** (1.0 / batch_size)


def pct(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


def _digits(x: float) -> int:
    """Enough decimals of a percentage to show a small upper bound (0.7%, 0.07%)."""
    return 0 if x >= 0.1 or x == 0 else (1 if x >= 0.01 else 2)


def format_rate(rate: Rate) -> str:
    """'k of n = x% (95% CI a-b%)', or for zero events '0 of n (95% upper bound y%)'."""
    if rate.n == 0:
        return "0 of 0 (not measured)"
    if rate.k == 0:
        return f"0 of {rate.n} (95% upper bound {pct(rate.high, _digits(rate.high))})"
    d = max(_digits(rate.low), _digits(rate.p))
    return f"{rate.k} of {rate.n} = {pct(rate.p, d)} (95% CI {pct(rate.low, d)}-{pct(rate.high, d)})"


def plus_minus(mean: float, half: float, digits: int = 2) -> str:
    """'mean ± half-width' for a table cell; the mean alone when there is no interval (one seed, one file)."""
    return f"{mean:.{digits}f}" if not np.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def format_interval(est: float, low: float, high: float) -> str:
    d = max(_digits(low) if low > 0 else 0, _digits(est) if est > 0 else 0, _digits(high))
    return f"{pct(est, d)} (95% CI {pct(low, d)}-{pct(high, d)})"


@dataclass(frozen=True)
class Interval:
    """A mean (or a difference of means) with its t interval over n values (seeds, files)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half(self) -> float:
        return (self.high - self.low) / 2

    @property
    def excludes_zero(self) -> bool:
        return np.isfinite(self.low) and np.isfinite(self.high) and (self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        if not np.isfinite(self.half):
            return f"{self.mean:+.3f} (n={self.n}, no interval)"
        return f"{self.mean:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f}, n={self.n})"


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval of a mean; fewer than 2 finite values give NaN bounds."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(v.mean())
    if v.size < 2:
        return Interval(m, math.nan, math.nan, int(v.size))
    half = t_half_width(v, confidence)
    return Interval(m, m - half, m + half, int(v.size))


def t_half_width(values: np.ndarray, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of the mean of `values` (finite, as given); NaN under 2 values."""
    n = values.size
    if n < 2:
        return math.nan
    return float(_st.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


def difference_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """mean(a) - mean(b) with a Welch t interval (independent groups, e.g. seeds of two variants).

    With one value in a group its variance is unknown: the interval is NaN (never a made-up zero width).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = float(a.mean() - b.mean())
    n = int(min(a.size, b.size))
    if a.size < 2 or b.size < 2:
        return Interval(diff, math.nan, math.nan, n)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, n)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, dof) * se)
    return Interval(diff, diff - half, diff + half, n)


def paired_difference_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """mean(a - b) over matched pairs (e.g. enhanced minus noisy on the same files) with a t interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    return mean_interval(a - b, confidence)


def effect_verdict(diff: Interval, what: str, unit: str = "") -> str:
    """The study's one rule for a difference: a direction only when the 95% interval excludes zero. Otherwise the
    words say how large an effect the interval still allows, since "no detectable effect" is not "no effect"."""
    if diff.n == 0 or not np.isfinite(diff.mean):
        return f"{what}: not measured"
    if not np.isfinite(diff.low):
        return f"{what}: {diff.mean:+.3f}{unit} from too few values for an interval (no verdict)"
    if not diff.excludes_zero:
        allowed = max(abs(diff.low), abs(diff.high))
        return (f"{what}: no detectable effect at this budget ({diff}{unit}; effects up to {allowed:.3f}{unit} "
                "not excluded)")  # fmt: skip
    direction = "higher" if diff.mean > 0 else "lower"
    return f"{what}: {direction} by {abs(diff.mean):.3f}{unit} ({diff}{unit})"
