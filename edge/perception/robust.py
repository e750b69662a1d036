"""Robust statistics shared by the spotter, the face aligner and the benchmarks.

MAD_TO_SIGMA: the median absolute deviation of a Gaussian is 0.6745 sigma, so MAD * 1.4826 estimates
sigma while ignoring up to half the samples as outliers. TUKEY_C: Tukey's biweight with c = 4.685 scale
units keeps 95 % of least squares' efficiency on Gaussian residuals and gives weight 0 beyond c.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

MAD_TO_SIGMA = 1.4826
TUKEY_C = 4.685

M = TypeVar("M")


def robust_scale(deviations: np.ndarray, axis: int | None = None, nan: bool = False) -> np.ndarray | float:
    """Gaussian sigma estimated from deviations (samples less their centre, or already |x| about 0):
    MAD_TO_SIGMA * median |deviation| along `axis`, in the samples' dtype; with axis None, a float (the
    median in the samples' dtype, the scale in float64). nan=True skips nan samples (slower)."""
    a = np.abs(deviations)
    median = np.nanmedian(a, axis=axis) if nan else np.median(a, axis=axis)
    return MAD_TO_SIGMA * (float(median) if axis is None else median)


def tukey_weights(residuals: np.ndarray, c: float) -> np.ndarray:
    """Tukey's biweight (1 - (r / c)^2)^2 of residual magnitudes, 0 at and beyond c."""
    return np.clip(1 - (residuals / c) ** 2, 0, None) ** 2


def tukey_irls(model: M, fit: Callable[[np.ndarray], M | None], residuals: Callable[[M], np.ndarray],
               iters: int, min_scale: float = 0.0, eps: float = 0.0) -> M | None:
    """Iteratively reweighted least squares with Tukey's biweight, from `model`.

    Each iteration takes the residual magnitudes of the current model, their robust scale s
    (robust_scale + eps, at least min_scale, in the residuals' unit) and refits with weights
    tukey_weights(r, TUKEY_C * s): points beyond TUKEY_C scales (an expression's pixels, an anchor point
    that slid) get weight 0. `fit(weights)` returns the weighted fit, or None when there is none (then so
    does this)."""
    for _ in range(iters):
        r = residuals(model)
        c = TUKEY_C * max(robust_scale(r) + eps, min_scale)
        refit = fit(tukey_weights(r, c))
        if refit is None:
            return None
        model = refit
    return model
