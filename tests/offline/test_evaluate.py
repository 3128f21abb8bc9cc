"""Pairwise decoding, gender and permutation scoring on hand-made and synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest

from offline.decoding.evaluate import (
    binomial_p,
    correlation_matrix,
    gender_by_classifier,
    gender_by_projection,
    pairwise_accuracy,
    permutation_control,
    score_spaces,
)
from offline.decoding.mapping import RidgeMapping


def test_pairwise_perfect_and_reversed():
    true = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    res = pairwise_accuracy(true * 3 + 1, true)  # correlation ignores scale and offset
    assert res.accuracy == 1.0 and res.n_comparisons == 6
    assert res.p_value == pytest.approx(0.5**6)
    # each prediction is another item's true vector: it loses against that item (r = 1) and ties with the third
    # (both r = -1/3), so each item scores (0 + 1/2) / 2
    res = pairwise_accuracy(true[[1, 2, 0]], true)
    assert res.accuracy == pytest.approx(0.25)


def test_pairwise_hand_computed_partial_case():
    true = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [2.0, 3.0, 1.0]])
    # item 0 predicted perfectly; item 1 predicted as item 2's vector; item 2 predicted as item 0's vector
    pred = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 1.0], [1.0, 2.0, 3.0]])
    c = correlation_matrix(pred, true)
    np.testing.assert_allclose(np.diag(c), [1.0, -0.5, -0.5])
    res = pairwise_accuracy(pred, true)
    # item 0: wins both; item 1: r(own)=-0.5 vs r(true0)=-0.5 tie (1/2), r(true2)=1 loss; item 2: r(own)=-0.5 vs
    # r(true0)=1 loss, r(true1)=-0.5 tie (1/2)
    np.testing.assert_allclose(res.per_item, [1.0, 0.25, 0.25])
    assert res.accuracy == pytest.approx(0.5)


def test_pairwise_chance_and_noise_ordering(rng):
    true = rng.normal(size=(20, 50))
    chance = [pairwise_accuracy(rng.normal(size=(20, 50)), true).accuracy for _ in range(30)]
    assert abs(np.mean(chance) - 0.5) < 0.05
    good = pairwise_accuracy(true + 0.5 * rng.normal(size=true.shape), true).accuracy
    poor = pairwise_accuracy(true + 3.0 * rng.normal(size=true.shape), true).accuracy
    assert good > poor > 0.5


def test_pairwise_input_errors():
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_accuracy(np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="features"):
        pairwise_accuracy(np.zeros((3, 3)), np.zeros((3, 4)))


def test_binomial_p():
    assert binomial_p(10, 10) == pytest.approx(0.5**10)
    assert binomial_p(5, 10) > 0.5
    assert np.isnan(binomial_p(0, 0))


def test_gender_by_projection_and_classifier(rng):
    direction = np.zeros(6)
    direction[0] = 1.0
    labels = np.array([1, -1] * 10)
    latents = rng.normal(size=(20, 6)) * 0.3
    latents[:, 0] += labels * 1.0
    res = gender_by_projection(latents, labels, direction, midpoint=np.zeros(6))
    assert res["accuracy"] == 1.0 and res["n"] == 20 and res["p_value"] < 1e-5
    flipped = gender_by_projection(latents, -labels, direction, midpoint=np.zeros(6))
    assert flipped["accuracy"] == 0.0
    train_labels = np.array([1, -1] * 50)
    train = rng.normal(size=(100, 6)) * 0.3
    train[:, 0] += train_labels
    res = gender_by_classifier(train, train_labels, latents, labels)
    assert res["accuracy"] >= 0.95


def test_score_spaces_with_an_exact_decoder(rng):
    basis = rng.normal(size=(4, 8 * 6 * 3))

    def decode(z):
        return (1 / (1 + np.exp(-(z @ basis)))).reshape(len(z), 8, 6, 3)

    true = rng.normal(size=(10, 4))
    images = decode(true)
    out, recon = score_spaces(true, true, images, decode, perceptual=lambda im: im.reshape(len(im), -1)[:, ::3])
    assert recon.shape == images.shape
    assert {k: v.accuracy for k, v in out.items()} == {"latent": 1.0, "pixel": 1.0, "perceptual": 1.0}
    out, _ = score_spaces(true, true, images, decode, perceptual=None)
    assert "perceptual" not in out


def test_permutation_control_lands_near_chance(rng):
    w = rng.normal(size=(40, 10))
    x = rng.normal(size=(260, 40))
    y = x @ w + 0.5 * rng.normal(size=(260, 10))
    real = RidgeMapping(alphas=(10.0,)).fit(x[:200], y[:200])
    assert pairwise_accuracy(real.predict(x[200:]), y[200:]).accuracy > 0.95
    res = permutation_control(
        lambda: RidgeMapping(alphas=(10.0,)), x[:200], y[:200], x[200:], y[200:], n_permutations=8, rng=rng
    )
    assert res["n_permutations"] == 8 and len(res["accuracies"]) == 8
    assert abs(res["mean"] - 0.5) < 0.1


def test_permutation_fast_ridge_path_equals_refits(rng):
    from offline.decoding.evaluate import _ridge_hat

    x = rng.normal(size=(50, 12)) * rng.uniform(0.5, 2, 12) + 3
    y = rng.normal(size=(50, 4))
    xt = rng.normal(size=(7, 12))
    hat = _ridge_hat(x, xt, 5.0)
    perm = rng.permutation(50)
    refit = RidgeMapping(alphas=(5.0,)).fit(x, y[perm]).predict(xt)
    np.testing.assert_allclose(hat @ (y[perm] - y[perm].mean(0)) + y[perm].mean(0), refit, rtol=1e-8, atol=1e-10)


def test_permutation_fast_encoding_path_equals_refits(rng, monkeypatch):
    from offline.decoding.mapping import EncodingMapping

    z = rng.normal(size=(40, 3))
    x = z @ rng.normal(size=(3, 15)) + rng.normal(size=(40, 15))
    xt = rng.normal(size=(6, 15))
    slow = []
    r = np.random.default_rng(5)
    for _ in range(3):
        perm = r.permutation(40)
        pred = EncodingMapping(alphas=(2.0,)).fit(x, z[perm]).predict(xt)
        slow.append(round(pairwise_accuracy(pred, z[:6]).accuracy, 4))

    def no_refit(self, *a, **k):
        raise AssertionError("the fast path must not refit")

    monkeypatch.setattr(EncodingMapping, "fit", no_refit)
    fast = permutation_control(lambda: EncodingMapping(alphas=(2.0,)), x, z, xt, z[:6], 3, np.random.default_rng(5))
    assert fast["accuracies"] == slow


def test_permutation_fast_encoding_path_with_fewer_components_equals_refits(rng, monkeypatch):
    from offline.decoding.mapping import EncodingMapping

    z = rng.normal(size=(40, 6))
    x = z @ rng.normal(size=(6, 15)) + rng.normal(size=(40, 15))
    xt = rng.normal(size=(6, 15))
    make = lambda: EncodingMapping(alphas=(2.0,), n_components=3)  # noqa: E731
    slow = []
    r = np.random.default_rng(5)
    for _ in range(3):
        perm = r.permutation(40)
        slow.append(round(pairwise_accuracy(make().fit(x, z[perm]).predict(xt), z[:6]).accuracy, 4))
    monkeypatch.setattr(EncodingMapping, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("refit")))
    fast = permutation_control(make, x, z, xt, z[:6], 3, np.random.default_rng(5))
    assert fast["accuracies"] == slow
