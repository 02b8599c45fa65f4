"""The bootstrap interval covers the mean, narrows with more images, and resamples images jointly over seeds."""

from __future__ import annotations

import math

import numpy as np

from ansm.eval.stats import bootstrap_ci, format_ci


def test_interval_covers_mean_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(0)
    small, big = rng.uniform(0, 1, 20), rng.uniform(0, 1, 2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_b, hi_b = bootstrap_ci(big)
    assert lo_s < small.mean() < hi_s and lo_b < big.mean() < hi_b
    assert hi_b - lo_b < 0.3 * (hi_s - lo_s)
    assert abs((hi_b - lo_b) - 2 * 1.96 * big.std() / math.sqrt(big.size)) < 0.01  # ~ normal for many images


def test_seeded_and_nan_safe() -> None:
    v = [0.0, 1.0, 0.5, math.nan, 0.25]
    assert bootstrap_ci(v) == bootstrap_ci(v)
    assert all(math.isnan(c) for c in bootstrap_ci([math.nan]))
    assert bootstrap_ci([0.4]) == (0.4, 0.4)


def test_joint_resampling_over_seeds() -> None:
    """Two seeds that agree image by image: the interval is that of one seed, not narrower (images resampled jointly)."""
    one = np.random.default_rng(1).uniform(0, 1, 50)
    assert np.allclose(bootstrap_ci(np.stack([one, one])), bootstrap_ci(one))


def test_format() -> None:
    assert format_ci(0.5, (0.41, 0.6)) == "0.500 [0.41, 0.60]"
    assert format_ci(None, None) == "n/a"
