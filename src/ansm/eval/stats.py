"""Spread of a mean over images: a percentile bootstrap interval, resampling images (the unit that varies).

Why a bootstrap over images and not a normal interval: per-image F1 is bounded, often bimodal (0 for an image the
attack broke, ~0.8 for one it did not), and the sets are small (tens to a few hundred images), so a normal
approximation misplaces the interval near 0 and 1. Seeded, so a report is reproducible.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

N_BOOT = 2000


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0,
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped); ``(nan, nan)`` if none are left.

    ``values`` may also be a 2-D array ``(seeds, images)``: images are resampled jointly across seeds (the same
    image drawn for every seed) and the interval is for the mean over seeds and images.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None]
    v = v[:, ~np.isnan(v).any(0)] if v.size else v
    n = v.shape[1] if v.ndim == 2 else 0
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        m = float(v.mean())
        return m, m
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = v[:, idx].mean(axis=(0, 2))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def format_ci(mean: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    """``0.512 [0.43, 0.59]``; ``n/a`` for a missing mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if ci is None or any(math.isnan(c) for c in ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{ci[0]:.2f}, {ci[1]:.2f}]"
