"""edge.perception.robust: the robust scale and the Tukey IRLS helper shared by the spotter and the face aligner."""

from __future__ import annotations

import numpy as np
import pytest

from edge.perception.robust import MAD_TO_SIGMA, robust_scale, tukey_irls


def test_robust_scale_is_sigma_for_a_gaussian_and_ignores_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2.0, 20000)
    x[:2000] = 1e6  # 10 % outliers
    assert 2.0 < robust_scale(x - np.median(x)) < 2.5  # 10 % of samples at 1e6 barely move it
    clean = rng.normal(0, 2.0, 20000)
    assert robust_scale(clean) == pytest.approx(2.0, rel=0.03)
    assert robust_scale(np.array([1.0, np.nan, 3.0]), nan=True) == pytest.approx(2 * MAD_TO_SIGMA)


def test_tukey_irls_fits_through_outliers():
    rng = np.random.default_rng(1)
    x = np.linspace(-1, 1, 200)
    y = 0.5 + 2.0 * x + rng.normal(0, 0.01, 200)
    y[::7] += 5.0  # gross outliers
    A = np.stack([np.ones_like(x), x], 1)

    def fit(w: np.ndarray) -> np.ndarray:
        sw = np.sqrt(w)
        return np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)[0]

    coef = tukey_irls(fit(np.ones_like(x)), fit, lambda c: np.abs(A @ c - y), iters=4)
    assert coef == pytest.approx([0.5, 2.0], abs=0.01)
    assert tukey_irls(coef, lambda w: None, lambda c: np.abs(A @ c - y), iters=1) is None
