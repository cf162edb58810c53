import math

import numpy as np
import pytest

from privacy.stats import bootstrap_interval, chance_levels, matched_privacy, with_interval


def test_bootstrap_interval_covers_a_known_mean_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):  # Bernoulli(0.3) samples of 100 hits: the true mean is 0.3
        lo, hi = bootstrap_interval(rng.random(100) < 0.3, resamples=500, seed=trial)
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / 200 <= 0.99
    narrow, wide = bootstrap_interval(np.r_[np.ones(300), np.zeros(700)]), bootstrap_interval(np.r_[1, 1, 1, 0, 0, 0, 0])
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 3  # more items, a narrower interval
    assert bootstrap_interval([0.5] * 4) == (0.5, 0.5)
    assert bootstrap_interval([1, 0, 1], seed=3) == bootstrap_interval([1, 0, 1], seed=3)
    assert with_interval([1, 0, 0, 0])["mean"] == 0.25


def test_bootstrap_interval_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="all finite"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="0 < level < 1"):
        bootstrap_interval([1.0], level=1.0)


def test_chance_levels_uniform_and_majority():
    assert chance_levels([3, 3, 1, 0, 3], 10) == {"uniform": 0.1, "majority": 0.6}
    with pytest.raises(ValueError, match="0..1"):
        chance_levels([0, 2], 2)
    with pytest.raises(ValueError, match="at least one label"):
        chance_levels([], 2)


def test_matched_privacy_interpolates_the_frontier_and_ignores_dominated_points():
    acc, priv = [0.2, 0.5, 0.8, 0.5], [0.9, 0.6, 0.3, 0.1]  # (0.5, 0.1) is dominated by (0.5, 0.6)
    assert matched_privacy(acc, priv, 0.35) == pytest.approx(0.75)
    assert matched_privacy(acc, priv, 0.5) == pytest.approx(0.6)
    assert matched_privacy(acc, priv, 0.8) == pytest.approx(0.3)
    assert math.isnan(matched_privacy(acc, priv, 0.9)) and math.isnan(matched_privacy(acc, priv, 0.1))
    assert matched_privacy([0.4], [0.7], 0.4) == 0.7
    # a defence that is more private only because it learned less: at matched accuracy it is not better
    weak = matched_privacy([0.3, 0.4], [0.8, 0.6], 0.4)
    strong = matched_privacy([0.4, 0.6], [0.7, 0.5], 0.4)
    assert strong > weak
    with pytest.raises(ValueError, match="equal numbers"):
        matched_privacy([0.1, 0.2], [0.5], 0.1)
