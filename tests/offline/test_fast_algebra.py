"""The shared decompositions (Split, PenaltyPath, TargetFactors, fit_shared, nested candidates, permutations)
give the numbers of direct solves and plain refits (small random data; every test well under a second)."""

from __future__ import annotations

import numpy as np
import pytest

from offline.decoding.mapping import (
    EncodingMapping,
    PenaltyPath,
    RidgeMapping,
    Split,
    TargetFactors,
    fit_shared,
    ridge_predictions,
    standardise,
)

RTOL = 1e-8


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(a - b).max() <= rtol * np.abs(b).max(), np.abs(a - b).max() / np.abs(b).max()


def _data(rng, n, v, latent=6, m=9):
    z = rng.normal(size=(n + m, latent))
    x = z @ rng.normal(size=(latent, v)) + rng.normal(size=(n + m, v)) * 2 + rng.uniform(-3, 3, v)
    x *= rng.uniform(0.5, 2.0, v)
    return x[:n], z[:n], x[n:], z[n:]


def _direct_ridge(x, y, xt, alpha):
    """Ridge on standardised patterns, centred targets, by a plain solve of the primal normal equations."""
    mean, scale = standardise(x)
    xs, xts = (x - mean) / scale, (xt - mean) / scale
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(x.shape[1]), xs.T @ (y - y.mean(0)))
    return xts @ w + y.mean(0)


@pytest.mark.parametrize(
    "n, v", [(60, 20), (30, 80), (300, 40), (280, 400)], ids=["primal", "dual", "tri-primal", "tri-dual"]
)
def test_split_ridge_equals_direct_solves_for_every_penalty(rng, n, v):
    x, y, xt, _ = _data(rng, n, v)
    alphas = [0.3, 10.0, 1e3]
    split = Split(x, xt)
    assert split.dual == (v > n)
    assert (split.path()._tri is not None) == (min(n, v) >= PenaltyPath.TRIDIAGONAL_FROM)
    preds = split.ridge_predictions(y - y.mean(0), alphas)
    for a, p in zip(alphas, preds):
        _close(p + y.mean(0), _direct_ridge(x, y, xt, a))
    # the weights and the hat matrix agree with the same solves
    w = split.ridge_weights(y - y.mean(0), 10.0)
    _close(split.xt @ w + y.mean(0), _direct_ridge(x, y, xt, 10.0))
    _close(split.ridge_hat(10.0) @ (y - y.mean(0)) + y.mean(0), _direct_ridge(x, y, xt, 10.0))


@pytest.mark.parametrize("through", ["ctypes", "scipy"])
def test_penalty_path_tridiagonal_equals_solves(rng, monkeypatch, through):
    from offline.linalg import Lapack

    assert Lapack.lib() is not None  # SciPy's OpenBLAS found: the path that lets go of the GIL
    if through == "scipy":
        monkeypatch.setattr(Lapack, "_lib", None)
    n = 300
    a = rng.normal(size=(n, 2 * n))
    g = a @ a.T
    left, right = rng.normal(size=(5, n)), rng.normal(size=(n, 3))
    path = PenaltyPath(g, left)
    assert path._tri is not None
    for alpha, p in zip([0.1, 50.0], path.predictions(right, [0.1, 50.0])):
        _close(p, left @ np.linalg.solve(g + alpha * np.eye(n), right))


def test_ridge_mapping_equals_sklearn_ridge(rng):
    from sklearn.linear_model import Ridge

    x, y, xt, _ = _data(rng, 80, 30)
    ours = RidgeMapping(alphas=(7.0,)).fit(x, y)
    mean, scale = standardise(x)
    ref = Ridge(alpha=7.0, fit_intercept=True, solver="cholesky").fit((x - mean) / scale, y)
    _close(ours.predict(xt), ref.predict((xt - mean) / scale))


def test_ridge_cv_scores_equal_plain_refits_per_fold(rng):
    """The cross-validated choice comes from the same held-out scores as a refit per fold and penalty."""
    from offline.decoding.mapping import centred_correlation, cv_splits

    x, y, _, _ = _data(rng, 90, 25)
    groups = np.repeat(np.arange(9), 10)
    alphas = (1.0, 30.0, 1000.0)
    m = RidgeMapping(alphas=alphas, n_splits=3).fit(x, y, groups=groups)
    folds = cv_splits(len(x), groups, 3)
    for a in alphas:
        score = 0.0
        for train, test in folds:
            pred = _direct_ridge(x[train], y[train], x[test], a)
            score += centred_correlation(pred, y[test], y[train].mean(0)) / len(folds)
        assert abs(m.cv_scores_[a] - score) < 1e-10


def test_encoding_mapping_in_primal_and_dual_form_equals_the_closed_form(rng):
    for n, v in ((60, 20), (30, 80)):
        x, z, xt, _ = _data(rng, n, v, latent=4)
        m = EncodingMapping(alphas=(3.0,)).fit(x, z)
        mean, scale = standardise(x)
        xs = (x - mean) / scale
        b = xs.mean(0)
        zc = z - z.mean(0)
        w = np.linalg.solve(zc.T @ zc + 3.0 * np.eye(4), zc.T @ (xs - b))  # encoding weights [L, V]
        _close(m.encoding_coef_, w)
        decoded = np.linalg.solve(w @ w.T, w @ ((xt - mean) / scale - b).T).T + z.mean(0)
        _close(m.predict(xt), decoded)


def test_target_factors_eigh_path_equals_the_svd(rng):
    zc = rng.normal(size=(50, 8)) @ np.diag([5, 4, 3, 2, 1, 0.5, 0.2, 1e-4])
    zc -= zc.mean(0)
    fast = TargetFactors.of(zc, 1e-2)
    u, s, vt = np.linalg.svd(zc, full_matrices=False)
    keep = s > s[0] * 1e-2
    np.testing.assert_allclose(fast.s, s[keep], rtol=1e-10)
    _close((fast.u * fast.s) @ fast.vt, (u[:, keep] * s[keep]) @ vt[keep])
    np.testing.assert_allclose(fast.u.T @ fast.u, np.eye(keep.sum()), atol=1e-10)


def test_fit_shared_equals_separate_fits_and_reuses_target_factors(rng):
    x, z, xt, _ = _data(rng, 60, 30)
    z2 = z[:, ::-1] * 2.0 + 1.0
    groups = np.repeat(np.arange(6), 10)

    def make():
        return [
            RidgeMapping(alphas=(1.0, 100.0), n_splits=3, rescale=True),
            EncodingMapping(alphas=(1.0, 100.0), n_components=(2, 0), n_splits=3, rescale=True),
        ]

    cache: dict = {}
    together = fit_shared(make() + make(), x, [z, z, z2, z2], groups, target_keys=["a", "a", "b", "b"], cache=cache)
    alone = [m.fit(x, y, groups=groups) for m, y in zip(make() + make(), [z, z, z2, z2])]
    for t, a in zip(together, alone):
        assert t.best_ == a.best_ and abs(t.scale_ - a.scale_) < 1e-10
        _close(t.predict(xt), a.predict(xt))
    assert len(cache) > 0
    # a second design with the same folds reuses the cached factors and still equals a plain fit
    x2 = x + rng.normal(size=x.shape)
    again = fit_shared(make(), x2, [z, z], groups, target_keys=["a", "a"], cache=cache)
    for t, a in zip(again, [m.fit(x2, z, groups=groups) for m in make()]):
        _close(t.predict(xt), a.predict(xt))


def test_nested_candidates_equal_ridge_on_each_prefix(rng):
    from offline.decoding.selection import nested_ridge_predictions

    x, y, xt, _ = _data(rng, 40, 120)
    mean, scale = standardise(x)
    xs, xe = (x - mean) / scale, (xt - mean) / scale
    yc = y - y.mean(0)
    alphas = [1.0, 100.0]
    ks = [10, 40, 70, 120]  # primal up to N, dual beyond (summed block by block)
    out = nested_ridge_predictions(xs, xe, ks, yc, alphas)
    for k in ks:
        for got, ref in zip(out[k], ridge_predictions(xs[:, :k], yc, xe[:, :k], alphas)):
            _close(got, ref)


@pytest.mark.parametrize("n, v", [(60, 15), (40, 90)], ids=["primal", "dual"])
def test_permutation_scores_equal_plain_refits_on_shuffled_targets(rng, monkeypatch, n, v):
    from offline.decoding.evaluate import pairwise_accuracy, permutation_control

    x, z, xt, zt = _data(rng, n, v, latent=5)
    for make in (
        lambda: RidgeMapping(alphas=(4.0,)),
        lambda: EncodingMapping(alphas=(4.0,)),
        lambda: EncodingMapping(alphas=(4.0,), n_components=3),
    ):
        r = np.random.default_rng(3)
        slow = []
        for _ in range(4):
            perm = r.permutation(n)
            slow.append(round(pairwise_accuracy(make().fit(x, z[perm]).predict(xt), zt).accuracy, 4))
        with monkeypatch.context() as mp:
            mp.setattr(type(make()), "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("refit")))
            fast = permutation_control(make, x, z, xt, zt, 4, np.random.default_rng(3), split=Split(x, xt))
        assert fast["accuracies"] == slow


def test_average_by_stimulus_equals_the_plain_sum(rng):
    from offline.decoding.estimates import average_by_stimulus

    ids = ["c", "a", "c", "b", "a", "c", "d"]
    x = rng.normal(size=(7, 5000)).astype(np.float32)
    avg, uids, first, counts = average_by_stimulus(x, ids, [3, 4, 5, 6, 7, 8, 9])
    assert uids == ["c", "a", "b", "d"] and list(counts) == [3, 2, 1, 1] and list(first) == [3, 4, 6, 9]
    idx = np.array([uids.index(s) for s in ids])
    sums = np.zeros((4, 5000))
    np.add.at(sums, idx, x)
    assert np.array_equal(avg, (sums / counts[:, None]).astype(np.float32))


def test_top_eigh_equals_the_full_eigendecomposition(rng):
    from offline.linalg import top_eigh

    a = rng.normal(size=(120, 300))
    g = a @ a.T
    evals, evecs = top_eigh(g, 10)
    full_vals, full_vecs = np.linalg.eigh(g)
    np.testing.assert_allclose(evals, full_vals[::-1][:10], rtol=1e-10)
    np.testing.assert_allclose(np.abs(evecs.T @ full_vecs[:, ::-1][:, :10]), np.eye(10), atol=1e-8)
