"""Intervals: known values, edge cases, and the verdict rule flipping with the data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmgan_lib.analysis import stats


def test_wilson_matches_the_textbook_values():
    r = stats.wilson(5, 20)
    assert r.p == 0.25
    assert r.low == pytest.approx(0.1119, abs=1e-4) and r.high == pytest.approx(0.4687, abs=1e-4)


def test_zero_events_give_a_positive_upper_bound():
    r = stats.wilson(0, 50)
    assert r.low == 0.0 and r.high == pytest.approx(0.0713, abs=1e-4)
    assert stats.format_rate(r) == "0 of 50 (95% upper bound 7.1%)"
    assert "upper bound 0.76%" in stats.format_rate(stats.wilson(0, 500))


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        stats.wilson(3, 2)


def test_batch_rate_interval_maps_the_endpoints():
    r = stats.wilson(10, 100)
    est, lo, hi = stats.batch_rate_interval(r, 4)
    assert est == pytest.approx(1 - 0.9**4)
    assert lo == pytest.approx(1 - (1 - r.low) ** 4) and hi == pytest.approx(1 - (1 - r.high) ** 4)
    assert lo < est < hi


def test_per_sample_rate_for_the_claimed_56_percent():
    p = stats.per_sample_rate_for(0.56, 4)
    assert p == pytest.approx(0.186, abs=1e-3)
    assert stats.batch_rate(p, 4) == pytest.approx(0.56)


def test_mean_and_difference_intervals():
    m = stats.mean_interval([1.0, 2.0, 3.0])
    assert m.mean == 2.0 and m.half == pytest.approx(4.303 * 1 / math.sqrt(3), rel=1e-3)
    assert math.isnan(stats.mean_interval([1.0]).low)
    d = stats.difference_interval([3.0, 3.1, 2.9], [1.0, 1.1, 0.9])
    assert d.mean == pytest.approx(2.0) and d.excludes_zero
    assert not stats.difference_interval([1.0, 2.0, 3.0], [1.5, 2.5, 1.0]).excludes_zero


def test_effect_verdict_follows_the_numbers():
    rng = np.random.default_rng(0)
    same = stats.difference_interval(rng.normal(2, 0.1, 3), rng.normal(2, 0.1, 3))
    lower = stats.difference_interval([1.0, 1.05, 0.95], [2.0, 2.05, 1.95])
    assert "no detectable effect" in stats.effect_verdict(same, "best val PESQ")
    wide = stats.Interval(-0.05, -0.319, 0.293, 3)  # not 'no effect': the largest effect the interval allows
    assert stats.effect_verdict(wide, "test PESQ").endswith("effects up to 0.319 not excluded)")
    assert "not excluded" not in stats.effect_verdict(lower, "best val PESQ")
    assert "lower by 1.000" in stats.effect_verdict(lower, "best val PESQ")
    assert "no verdict" in stats.effect_verdict(stats.difference_interval([1.0], [2.0]), "x")
