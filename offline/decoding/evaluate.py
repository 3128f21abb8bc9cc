"""Scoring decoded faces as the paper does: pairwise identification, gender, imagery, a permutation control.

Pairwise decoding (docs/paper.md): the Pearson correlation between every predicted and every true feature vector;
for each prediction, the fraction of the other items whose correlation with it is lower than that of its own
true item (ties count one half); averaged; chance 50 %. The binomial p-value treats the ``N (N - 1)``
comparisons as independent trials of a fair coin (one-sided); they are not fully independent, so it is a
descriptive figure, as in the paper.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "PairwiseResult",
    "pairwise_accuracy",
    "correlation_matrix",
    "binomial_p",
    "gender_by_projection",
    "gender_by_classifier",
    "gender_classifier",
    "permutation_control",
    "score_spaces",
    "trialwise_identification",
    "evaluate_decoders",
]


def correlation_matrix(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``C[i, j]`` = Pearson correlation of ``pred[i]`` with ``true[j]`` (rows flattened to vectors)."""
    a = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    b = np.asarray(true, dtype=np.float64).reshape(len(true), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"predicted vectors have {a.shape[1]} features, true ones {b.shape[1]}")
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    na[na == 0] = 1.0
    nb[nb == 0] = 1.0
    return (a / na) @ (b / nb).T


def binomial_p(successes: float, trials: int, chance: float = 0.5) -> float:
    """One-sided binomial p-value of at least ``successes`` out of ``trials`` at ``chance``."""
    if trials <= 0:
        return float("nan")
    k = int(round(successes))
    return float(binomtest(k, trials, chance, alternative="greater").pvalue)


@dataclass(frozen=True)
class PairwiseResult:
    """Pairwise identification: overall accuracy, per-item accuracy, comparisons and the binomial p-value."""

    accuracy: float
    per_item: np.ndarray
    n_items: int
    n_comparisons: int
    p_value: float

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "per_item": [round(float(v), 4) for v in self.per_item],
            "n_items": self.n_items,
            "n_comparisons": self.n_comparisons,
            "p_value": self.p_value,
        }


def pairwise_accuracy(pred: np.ndarray, true: np.ndarray) -> PairwiseResult:
    """Pairwise identification accuracy of ``pred [N, ...]`` against ``true [N, ...]`` (N >= 2)."""
    n = len(pred)
    if n < 2 or len(true) != n:
        raise ValueError(f"pairwise decoding needs at least 2 matched items, got {n} predicted and {len(true)} true")
    c = correlation_matrix(pred, true)
    own = np.diag(c)[:, None]
    wins = (c < own).astype(np.float64) + 0.5 * (c == own)
    np.fill_diagonal(wins, 0.0)
    per_item = wins.sum(axis=1) / (n - 1)
    total = n * (n - 1)
    return PairwiseResult(
        accuracy=float(per_item.mean()),
        per_item=per_item,
        n_items=n,
        n_comparisons=total,
        p_value=binomial_p(per_item.mean() * total, total),
    )


def _accuracy_dict(pred_labels: np.ndarray, labels: np.ndarray) -> dict:
    correct = int((np.sign(pred_labels) == np.sign(labels)).sum())
    n = len(labels)
    return {"accuracy": correct / n if n else float("nan"), "n": n, "p_value": binomial_p(correct, n)}


def gender_by_projection(decoded: np.ndarray, labels: np.ndarray, direction: np.ndarray, midpoint: np.ndarray) -> dict:
    """Classify by the sign of ``(z - midpoint) . direction`` (direction: male minus female mean latent).

    ``labels`` are 1 (male) / -1; returns accuracy, n and the binomial p-value.
    """
    scores = (np.asarray(decoded) - midpoint) @ np.asarray(direction)
    return {**_accuracy_dict(np.where(scores > 0, 1, -1), np.asarray(labels)), "scores": scores.tolist()}


def gender_by_classifier(
    train_latents: np.ndarray, train_labels: np.ndarray, decoded: np.ndarray, labels: np.ndarray, C: float = 1.0
) -> dict:
    """A logistic-regression classifier trained on true face-space latents, applied to decoded latents."""
    clf = gender_classifier(train_latents, train_labels, C)
    return _accuracy_dict(clf.predict(np.asarray(decoded)), np.asarray(labels))


def gender_classifier(train_latents: np.ndarray, train_labels: np.ndarray, C: float = 1.0):
    """The fitted classifier of :func:`gender_by_classifier` (standardised latents, logistic regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(
        np.asarray(train_latents), np.asarray(train_labels)
    )


def score_spaces(
    pred_latents: np.ndarray,
    true_latents: np.ndarray,
    true_images: np.ndarray,
    decode: Callable[[np.ndarray], np.ndarray],
    perceptual: Callable[[np.ndarray], np.ndarray] | None,
    true_perceptual: np.ndarray | None = None,
    centres: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, PairwiseResult], np.ndarray]:
    """Pairwise decoding in latent, pixel and perceptual space for one face space.

    Parameters
    ----------
    pred_latents, true_latents : [N, L]
        Decoded and true latents of the same N faces.
    true_images : [N, H, W, 3]
        The faces shown, float in [0, 1] at the face space's image size.
    decode : callable
        Latents -> images [N, H, W, 3] in [0, 1] (the face space's decoder).
    perceptual : callable or None
        Images -> feature vectors (a hidden discriminator layer); None skips the perceptual space.
    true_perceptual : array, optional
        Features of ``true_images`` if already computed.
    centres : dict, optional
        ``latent``/``pixel``/``perceptual`` -> the mean training vector of that space; when given, the same
        scores are added with both sides centred on it (``latent_centred``, ...): the paper's raw correlations
        are dominated by the mean face / mean latent whenever that is large next to the faces' differences.

    Returns
    -------
    (results by space, reconstructed images [N, H, W, 3])
    """
    recon = decode(np.asarray(pred_latents, dtype=np.float32))
    vectors = {"latent": (np.asarray(pred_latents), np.asarray(true_latents)), "pixel": (recon, true_images)}
    if perceptual is not None:
        feats_true = perceptual(true_images) if true_perceptual is None else true_perceptual
        vectors["perceptual"] = (perceptual(recon), feats_true)
    out = {k: pairwise_accuracy(p, t) for k, (p, t) in vectors.items()}
    for k, (p, t) in vectors.items():
        if centres is not None and k in centres:
            c = np.asarray(centres[k]).reshape(1, *np.shape(p)[1:])
            out[f"{k}_centred"] = pairwise_accuracy(p - c, t - c)
    return out, recon


def permutation_control(
    make_mapping: Callable[[], object],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_permutations: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    split=None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Refit the mapping with the training pairs shuffled and score pairwise latent decoding; near 50 %.

    ``make_mapping()`` returns a fresh, unfitted mapping (with fixed hyperparameters, so each refit is cheap).
    Shuffling the targets leaves the design unchanged, so one :class:`offline.decoding.mapping.Split` of
    ``(x_train, x_test)`` (``split``: one already made, e.g. shared by the ridge and the encoding control) serves
    every shuffle: a ridge mapping with one penalty is linear in the latents it is fitted to, so its test
    predictions are ``H (y - mean) + mean`` with one hat matrix ``H``; the encoding model's shuffles permute the
    rows of ``U`` in ``zc = U S Vt`` and reuse the Gram matrix (or ``xc^T`` in the primal form). Both give the
    same numbers as refits (tested), much faster. ``on_step(i, n)`` is called after each shuffle (progress).

    The shuffled decoders are not rescaled (``fixed_params`` turns ``rescale`` off): a decoder fitted to shuffled
    pairs knows nothing of the test faces, so its own face and every other face are exchangeable and one positive
    factor on its predictions cannot move its expected accuracy off 50 %.
    """
    from offline.decoding.mapping import EncodingMapping, RidgeMapping, Split, TargetFactors, encoding_predictions

    probe = make_mapping()
    single = np.size(getattr(probe, "alphas", ())) == 1 and not getattr(probe, "rescale", False)
    y_train = np.asarray(y_train, np.float64)
    fast_ridge = isinstance(probe, RidgeMapping) and single
    fast_encoding = isinstance(probe, EncodingMapping) and single and np.size(probe.component_candidates()) == 1
    if (fast_ridge or fast_encoding) and split is None:
        split = Split(x_train, x_test)
    hat = fac = None
    if fast_ridge:
        hat = split.ridge_hat(float(np.ravel(probe.alphas)[0]))
        y_mean = y_train.mean(0)
        y_centred = y_train - y_mean
    elif fast_encoding:
        y_mean = y_train.mean(0)
        fac = TargetFactors.of(y_train - y_mean, probe.rank_tol).truncated(probe.component_candidates()[0])
    accs = []
    for i in range(n_permutations):
        perm = rng.permutation(len(y_train))
        if hat is not None:
            # H (y[perm] - mean) + mean with the columns of H moved instead of the rows of y (the mean of the
            # shuffled latents is theirs)
            shuffled_hat = np.empty_like(hat)
            shuffled_hat[:, perm] = hat
            pred = shuffled_hat @ y_centred + y_mean
        elif fac is not None:
            shuffled = fac.permuted(perm)
            a, kmat = split.encoding_terms(shuffled.u)
            alpha = float(np.ravel(probe.alphas)[0])
            pred = encoding_predictions(a, kmat, shuffled, [alpha], probe.decode_alpha)[0] + y_mean
        else:
            pred = make_mapping().fit(x_train, y_train[perm], groups=groups).predict(x_test)
        accs.append(pairwise_accuracy(pred, y_test).accuracy)
        if on_step is not None:
            on_step(i + 1, n_permutations)
    arr = np.asarray(accs)
    return {
        "n_permutations": int(n_permutations),
        "mean": float(arr.mean()) if arr.size else float("nan"),
        "std": float(arr.std()) if arr.size else float("nan"),
        "accuracies": [round(float(a), 4) for a in arr],
    }


def trialwise_identification(pred: np.ndarray, trial_ids: list[str], face_ids: list[str], true: np.ndarray) -> dict:
    """Which imagined face each single trial decodes to: for each trial, the fraction of the other imagined faces
    whose latent correlates less with the decoded one than the face imagined (chance 50 %), with a binomial
    p-value over the ``trials x (faces - 1)`` comparisons."""
    c = correlation_matrix(pred, true)  # [T, F]
    own = np.array([face_ids.index(t) for t in trial_ids])
    own_c = c[np.arange(len(own)), own][:, None]
    wins = (c < own_c) + 0.5 * (c == own_c)
    wins[np.arange(len(own)), own] = 0.0
    n_other = c.shape[1] - 1
    per_trial = wins.sum(axis=1) / max(n_other, 1)
    total = len(own) * n_other
    return {
        "accuracy": float(per_trial.mean()) if len(own) else float("nan"),
        "n_trials": len(own),
        "n_comparisons": total,
        "p_value": binomial_p(per_trial.sum() * n_other, total),
    }


def _ridge_hat(x_train: np.ndarray, x_test: np.ndarray, alpha: float) -> np.ndarray:
    """``H [n_test, n_train]``: ridge predictions on ``x_test`` are ``H @ (y - mean(y)) + mean(y)``."""
    from offline.decoding.mapping import Split

    return Split(x_train, x_test).ridge_hat(alpha)


def evaluate_decoders(
    *,
    train: dict[str, tuple[np.ndarray, np.ndarray]],
    test: dict[str, np.ndarray],
    imagery: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] | None,
    imagery_ids: list[str] | None,
    latents: dict[str, dict[str, np.ndarray]],
    images: dict[str, np.ndarray],
    spaces: dict[str, object],
    perceptual: Callable[[np.ndarray], np.ndarray] | None,
    make: Callable[[str], object],
    main: tuple[str, str],
    male: dict[str, np.ndarray] | None,
    n_permutations: int,
    rng: np.random.Generator,
    log: Callable[[str], None] = print,
    step: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """Fit and score every (estimate, mapping, face space) combination on the test faces.

    Parameters
    ----------
    train : estimate -> (X [S, V] selected voxels, run groups [S]); test : estimate -> X
    imagery : estimate -> (X averaged per imagined face [F, V], X per trial [T, V], face id of each trial [T]);
    imagery_ids : the F imagined faces, in the order of ``latents[...]["imagery"]``
    latents : space -> {"train", "test", "imagery"} -> [N, L]; images : split -> float [N, H, W, 3]
    spaces : space name -> FaceSpace (``decode``); make : mapping name -> unfitted mapping
    main : (estimate, mapping) of the bundle, whose numbers fill the top-level ``pairwise``; mapping ``auto``:
    ridge or encoding, whichever has the higher cross-validated score on the training runs (``mapping_choice``)
    male : {"train", "test"} -> labels 1 / -1, or None (no attributes: gender skipped)
    log : a line per fit, fold and batch of shuffles; step : called with the name of each stage ("mappings",
    "permutation control") as it starts (the caller times them)

    Returns
    -------
    (evaluation dict for evaluation.json, {(estimate, mapping, space): fitted mapping, "recon": {"<space>
    <mapping>": reconstructions of the test faces from the bundle's estimate type}})
    """
    step = step or (lambda _name: None)
    step("mappings")
    face_ids = list(imagery_ids or [])
    # mean training vector of each space, for the centred variant of the pairwise scores
    shared = {"pixel": images["train"].mean(axis=0)}
    if perceptual is not None:
        shared["perceptual"] = perceptual(images["train"]).mean(axis=0)
    centres = {sname: {**shared, "latent": latents[sname]["train"].mean(axis=0)} for sname in spaces}
    true_feats = perceptual(images["test"]) if perceptual is not None else None
    img_feats = perceptual(images["imagery"]) if perceptual is not None and imagery else None
    details: dict = {}
    fitted: dict = {}
    recon: dict = {}
    gender: dict = {}
    gender_models: dict = {}
    imag: dict = {}
    from offline.decoding.mapping import Split, fit_shared

    factors_cache: dict = {}  # the face spaces' latent factors per fold, shared by the estimate types
    combos = [(mname, sname) for mname in ("ridge", "encoding") for sname in spaces]
    for est, (x_train, groups) in train.items():
        # every mapping and face space on this estimate's patterns: one decomposition per fold
        log(f"{est}: fitting {len(combos)} mappings (ridge, encoding x {', '.join(spaces)}) together")
        t_est = time.perf_counter()
        models = fit_shared(
            [make(mname) for mname, _ in combos],
            x_train,
            [latents[sname]["train"] for _, sname in combos],
            groups,
            target_keys=[sname for _, sname in combos],
            cache=factors_cache,
            on_fold=lambda i, n, e=est, t=t_est: log(
                f"{e}: cross-validation fold {i}/{n} done ({time.perf_counter() - t:.0f} s)"
            ),
        )
        for (mname, sname), mapping in zip(combos, models):
            space = spaces[sname]
            z = latents[sname]
            fitted[(est, mname, sname)] = mapping
            pred = mapping.predict(test[est])
            scores, rec = score_spaces(
                pred, z["test"], images["test"], space.decode, perceptual, true_feats, centres[sname]
            )
            entry = {k: v.as_dict() for k, v in scores.items()}
            entry["alpha"] = float(mapping.alpha_)
            entry["cv_score"] = float(mapping.cv_score_)
            entry["scale"] = float(mapping.scale_)
            if mname == "encoding":
                entry["n_components"] = int(mapping.n_components_)
            details.setdefault(est, {}).setdefault(mname, {})[sname] = entry
            shown = ", ".join(f"{k} {v.accuracy:.3f}" for k, v in scores.items())
            log(f"{est:>6} {mname:>8} {sname:>6}: {shown}")
            if imagery and est in imagery and len(z["imagery"]) >= 2:
                x_avg, x_trials, trial_ids = imagery[est]
                iscores, _ = score_spaces(
                    mapping.predict(x_avg),
                    z["imagery"],
                    images["imagery"],
                    space.decode,
                    perceptual,
                    img_feats,
                    centres[sname],
                )
                entry = {k: v.as_dict() for k, v in iscores.items()}
                entry["trials"] = trialwise_identification(mapping.predict(x_trials), trial_ids, face_ids, z["imagery"])
                imag.setdefault(est, {}).setdefault(mname, {})[sname] = entry
            if est != main[0]:
                continue
            recon[f"{sname} {mname}"] = rec
            if male is not None:
                if sname not in gender_models:  # one Male direction and one classifier per face space
                    men, women = z["train"][male["train"] > 0].mean(0), z["train"][male["train"] < 0].mean(0)
                    clf = gender_classifier(z["train"], male["train"])
                    gender_models[sname] = (men - women, (men + women) / 2, clf)
                direction, midpoint, clf = gender_models[sname]
                for key, latents_ in ((mname, pred), ("true_latents", z["test"])):
                    gender.setdefault(sname, {})[key] = {
                        "projection": gender_by_projection(latents_, male["test"], direction, midpoint),
                        "classifier": _accuracy_dict(clf.predict(latents_), male["test"]),
                    }
    est_main, map_main = main
    choice = None
    if map_main == "auto":  # the bundle's mapping: the better held-out score on the training runs (never the test)
        cv = {m: float(fitted[(est_main, m, "vaegan")].cv_score_) for m in ("ridge", "encoding")}
        map_main = max(cv, key=lambda m: (cv[m], m == "ridge"))
        choice = {
            "by": "held-out centred latent correlation in the grouped cross-validation on the training runs (VAE-GAN)",
            "cv_score": cv,
            "chosen": map_main,
        }
        log(
            f"the bundle's mapping: {map_main} (cross-validated {cv['ridge']:.4f} ridge, {cv['encoding']:.4f} encoding)"
        )
    permutation: dict = {}
    if n_permutations:
        step("permutation control")
        x_train, groups = train[est_main]
        split = Split(x_train, test[est_main])  # one design for every shuffle of both mappings
        for mname in ("ridge", "encoding"):
            fixed = fitted[(est_main, mname, "vaegan")].fixed_params()
            log(f"permutation control: {mname}, {n_permutations} shuffles")
            t_perm = time.perf_counter()
            last = [t_perm]

            def step(i, n, m=mname, t=t_perm, last=last):
                now = time.perf_counter()
                if now - last[0] >= 5.0 or i == n:
                    last[0] = now
                    log(f"permutation control: {m}, {i}/{n} shuffles ({now - t:.0f} s)")

            permutation[mname] = permutation_control(
                lambda m=mname, kw=fixed: make(m, **kw),
                x_train,
                latents["vaegan"]["train"],
                test[est_main],
                latents["vaegan"]["test"],
                n_permutations,
                rng,
                split=split,
                on_step=step,
            )
        del split
        permutation["mean"] = permutation[map_main]["mean"]
    main_scores = details[est_main][map_main]
    kinds = ("latent", "pixel", "perceptual")
    evaluation = {
        "pairwise": {s: {k: main_scores[s][k]["accuracy"] for k in kinds if k in main_scores[s]} for s in spaces},
        "pairwise_centred": {
            s: {k: main_scores[s][f"{k}_centred"]["accuracy"] for k in kinds if f"{k}_centred" in main_scores[s]}
            for s in spaces
        },
        "estimate": est_main,
        "mapping": map_main,
        **({"mapping_choice": choice} if choice else {}),
        "chance": 0.5,
        "details": details,
        "permutation": permutation,
        "gender": gender if male is not None else {"skipped": "the data set carries no Male attribute"},
        "imagery": (
            {**imag.get(est_main, {}).get(map_main, {}), "details": imag}
            if imag
            else {"skipped": "fewer than two imagined faces"}
        ),
    }
    fitted["recon"] = recon
    return evaluation, fitted
