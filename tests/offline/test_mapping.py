"""Brain-to-latent mappings: the estimator contract and recovery of known linear maps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

from offline.mapping import EncodingMapping, RidgeMapping, centred_correlation, make_mapping


@pytest.mark.parametrize(
    "est",
    [RidgeMapping(alphas=(0.1, 1.0, 10.0)), EncodingMapping(alphas=(0.1, 1.0, 10.0))],
    ids=["ridge", "encoding"],
)
def test_sklearn_estimator_checks(est):
    # One deliberate departure from scikit-learn's checks: predict accepts one pattern [V] (CONVENTIONS.md:
    # "one volume or a batch"), so a 1-D input is not refused.
    expected = {"check_fit2d_predict1d": "predict takes one pattern [V] by design"}
    # on_skip=None: the array-API check skips itself without SCIPY_ARRAY_API; that is not a failure.
    check_estimator(est, on_skip=None, expected_failed_checks=expected)


def _brain_from_latents(rng, n, latent, voxels, noise):
    w = rng.normal(size=(latent, voxels))
    b = rng.normal(size=voxels) * 3 + 10
    z = rng.uniform(-1, 1, size=(n, latent))
    x = z @ w + b + noise * rng.normal(size=(n, voxels))
    return z, x, w, b


def test_ridge_recovers_a_known_linear_map(rng):
    n, v, lat = 400, 60, 9
    x = rng.normal(size=(n, v)) * rng.uniform(0.5, 3, size=v) + rng.normal(size=v)
    b_true = rng.normal(size=(v, lat))
    c_true = rng.normal(size=lat)
    y = x @ b_true + c_true + 0.01 * rng.normal(size=(n, lat))
    groups = np.repeat(np.arange(8), n // 8)
    m = RidgeMapping().fit(x[:300], y[:300], groups=groups[:300])
    assert m.alpha_ <= 1.0  # almost no noise: the smallest penalties win
    weights, bias = m.linear_map_()
    assert weights.shape == (v, lat) and bias.shape == (lat,)
    # the map on raw input: weights / x_scale; it must equal the generating map
    np.testing.assert_allclose(weights / m.x_scale_[:, None], b_true, atol=0.02)
    pred = m.predict(x[300:])
    assert np.corrcoef(pred.ravel(), y[300:].ravel())[0, 1] > 0.999
    # one pattern in, one latent out; same numbers as the batch
    np.testing.assert_allclose(m.predict(x[300]), pred[0])
    # the bundle's formula reproduces predict
    manual = ((x[300:] - m.x_mean_) / m.x_scale_) @ weights + bias
    np.testing.assert_allclose(manual, pred, rtol=1e-4, atol=1e-4)


def test_encoding_inversion_recovers_latents(rng):
    z, x, w, b = _brain_from_latents(rng, 500, 6, 80, noise=0.5)
    groups = np.repeat(np.arange(5), 100)
    # the encoding model itself (tiny penalty): weights on standardised voxels times the voxel scale = true weights
    small = EncodingMapping(alphas=(1e-3,)).fit(x[:400], z[:400])
    np.testing.assert_allclose(small.encoding_coef_ * small.x_scale_, w, atol=0.2)  # noise SE ~0.04
    m = EncodingMapping().fit(x[:400], z[:400], groups=groups[:400])
    pred = m.predict(x[400:])
    assert pred.shape == (100, 6)
    for j in range(6):
        assert np.corrcoef(pred[:, j], z[400:, j])[0, 1] > 0.95
    weights, bias = m.linear_map_()
    manual = ((x[400:] - m.x_mean_) / m.x_scale_) @ weights + bias
    np.testing.assert_allclose(manual, pred, rtol=1e-3, atol=1e-3)


def test_encoding_inversion_matches_the_closed_form(rng):
    # single penalty, no Tikhonov: z = (W W^T)^-1 W (xs - b), with W the ridge encoding weights
    z, x, _, _ = _brain_from_latents(rng, 200, 5, 40, noise=1.0)
    m = EncodingMapping(alphas=(3.0,)).fit(x, z)
    w, b = m.encoding_coef_, m.encoding_intercept_
    xs = (x - m.x_mean_) / m.x_scale_
    zc = z - z.mean(0)
    w_direct = np.linalg.solve(zc.T @ zc + 3.0 * np.eye(5), zc.T @ (xs - xs.mean(0)))
    np.testing.assert_allclose(w, w_direct, atol=1e-8)
    expected = np.linalg.solve(w @ w.T, w @ (xs - b).T).T + z.mean(0)
    np.testing.assert_allclose(m.predict(x), expected, rtol=1e-6, atol=1e-8)
    # a Tikhonov term shrinks the decoded latents toward the training mean
    shrunk = EncodingMapping(alphas=(3.0,), decode_alpha=50.0).fit(x, z).predict(x)
    expected = np.linalg.solve(w @ w.T + 50.0 * np.eye(5), w @ (xs - b).T).T + z.mean(0)
    np.testing.assert_allclose(shrunk, expected, rtol=1e-6, atol=1e-8)


def test_cross_validation_prefers_more_penalty_with_more_noise(rng):
    z, x_clean, _, _ = _brain_from_latents(rng, 300, 8, 150, noise=0.1)
    x_noisy = x_clean + 8.0 * rng.normal(size=x_clean.shape)
    groups = np.repeat(np.arange(6), 50)
    clean = RidgeMapping().fit(x_clean, z, groups=groups)
    noisy = RidgeMapping().fit(x_noisy, z, groups=groups)
    assert noisy.alpha_ > clean.alpha_
    assert clean.cv_scores_[clean.alpha_] > noisy.cv_scores_[noisy.alpha_]


def test_unfitted_and_factory():
    with pytest.raises(NotFittedError):
        RidgeMapping().predict(np.zeros((2, 3)))
    assert isinstance(make_mapping("encoding", decode_alpha=1.0), EncodingMapping)
    assert clone(make_mapping("ridge", alphas=(1.0,))).alphas == (1.0,)
    with pytest.raises(ValueError, match="unknown mapping"):
        make_mapping("lasso")


def test_centred_correlation_hand_made():
    centre = np.zeros(3)
    assert centred_correlation(np.array([[1.0, 2.0, 3.0]]), np.array([[2.0, 4.0, 6.0]]), centre) == pytest.approx(1.0)
    assert centred_correlation(np.array([[1.0, 2.0, 3.0]]), np.array([[3.0, 2.0, 1.0]]), centre) == pytest.approx(-1.0)
