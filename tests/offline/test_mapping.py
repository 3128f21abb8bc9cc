"""Brain-to-latent mappings: the estimator contract and recovery of known linear maps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

from offline.decoding.mapping import EncodingMapping, RidgeMapping, centred_correlation, make_mapping


@pytest.mark.parametrize(
    "est",
    [
        RidgeMapping(alphas=(0.1, 1.0, 10.0)),
        EncodingMapping(alphas=(0.1, 1.0, 10.0)),
        RidgeMapping(alphas=(0.1, 1.0, 10.0), rescale=True),
        EncodingMapping(alphas=(0.1, 1.0, 10.0), n_components=(1, 2, 0), rescale=True),
    ],
    ids=["ridge", "encoding", "ridge-rescaled", "encoding-components-rescaled"],
)
def test_sklearn_estimator_checks(est):
    # One deliberate departure from scikit-learn's checks: predict accepts one pattern [V] (docs/architecture.md:
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


@pytest.mark.parametrize("cls", [RidgeMapping, EncodingMapping], ids=["ridge", "encoding"])
def test_rescale_restores_the_spread_without_turning_any_prediction(rng, cls):
    # noisy brain: the plain fits shrink their predictions toward the mean latent
    z, x, _, _ = _brain_from_latents(rng, 360, 6, 120, noise=6.0)
    z = z + 5.0  # a large mean latent, as a briefly trained VAE-GAN has
    groups = np.repeat(np.arange(6), 60)
    plain = cls(alphas=(1e2, 1e3, 1e4)).fit(x[:300], z[:300], groups=groups[:300])
    scaled = cls(alphas=(1e2, 1e3, 1e4), rescale=True).fit(x[:300], z[:300], groups=groups[:300])
    assert plain.scale_ == 1.0 and scaled.alpha_ == plain.alpha_
    p0, p1 = plain.predict(x[300:]), scaled.predict(x[300:])
    mean = z[:300].mean(0)
    # one positive factor on every deviation from the training mean latent
    ratio = (p1 - mean) / (p0 - mean)
    np.testing.assert_allclose(ratio, scaled.scale_, rtol=1e-6)
    if cls is RidgeMapping:
        assert scaled.scale_ > 1.5  # ridge shrinks; the factor undoes it
    # the held-out spread now matches the latents' spread (within sampling error)
    spread_pred = np.sqrt(np.mean(np.sum((p1 - mean) ** 2, axis=1)))
    spread_true = np.sqrt(np.mean(np.sum((z[300:] - mean) ** 2, axis=1)))
    assert 0.6 < spread_pred / spread_true < 1.6
    # centred correlations are untouched; the bundle's formula reproduces the rescaled prediction
    assert centred_correlation(p1, z[300:], mean) == pytest.approx(centred_correlation(p0, z[300:], mean))
    weights, bias = scaled.linear_map_()
    manual = ((x[300:] - scaled.x_mean_) / scaled.x_scale_) @ weights + bias
    np.testing.assert_allclose(manual, p1, rtol=1e-3, atol=1e-3)
    # fixed_params refits the chosen setting without any search and without the factor
    refit = cls(**scaled.fixed_params()).fit(x[:300], z[:300])
    assert refit.cv_scores_ == {}
    np.testing.assert_allclose(refit.predict(x[300:]), p0, rtol=1e-6, atol=1e-8)


def test_encoding_components_chosen_by_cross_validation(rng):
    # 4 latent directions drive the voxels; 26 more vary as much but never reach the brain (like a face space's
    # background and lighting directions next to a face area): inverting all 30 amplifies noise
    n, v = 400, 100
    drive = rng.normal(size=(n, 4)) * 2.0
    rest = rng.normal(size=(n, 26)) * 1.5
    basis, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    z = np.concatenate([drive, rest], axis=1) @ basis.T
    x = drive @ rng.normal(size=(4, v)) + 3.0 * rng.normal(size=(n, v))
    groups = np.repeat(np.arange(8), 50)
    m = EncodingMapping(alphas=(1.0,), n_components=(2, 4, 8, 0)).fit(x[:320], z[:320], groups=groups[:320])
    assert m.n_components_ == 4
    assert set(m.cv_scores_) == {(k, 1.0) for k in (0, 2, 4, 8)}
    full = EncodingMapping(alphas=(1.0,)).fit(x[:320], z[:320])
    mean = z[:320].mean(0)
    assert (
        centred_correlation(m.predict(x[320:]), z[320:], mean)
        > centred_correlation(full.predict(x[320:]), z[320:], mean) + 0.1
    )
    with pytest.raises(ValueError, match="n_components"):
        EncodingMapping(n_components=(-1,)).fit(x, z)
