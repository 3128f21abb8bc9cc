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
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binomtest

from offline.decoding.facespaces import FaceSpaces
from offline.decoding.patterns import EstimatePatterns, TrialPatterns

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
        """The JSON record of the score (accuracy, each item's, the item count)."""
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


@dataclass
class _Results:
    """What the evaluation collects, mapping by mapping (filled by :func:`evaluate_decoders`' steps)."""

    details: dict = field(default_factory=dict)  # estimate -> mapping -> space -> scores on the test faces
    fitted: dict = field(default_factory=dict)  # (estimate, mapping, space) -> fitted mapping
    recon: dict = field(default_factory=dict)  # "<space> <mapping>" -> reconstructed test faces (bundle's estimate)
    gender: dict = field(default_factory=dict)  # space -> mapping | true_latents -> projection, classifier
    imagery: dict = field(default_factory=dict)  # estimate -> mapping -> space -> imagery scores
    gender_models: dict = field(default_factory=dict)  # space -> (Male direction, midpoint, classifier)


@dataclass(frozen=True)
class _Truth:
    """What every prediction is scored against beyond the latents: the centres of the centred scores and the
    perceptual features of the test and imagined faces (computed once)."""

    centres: dict[str, dict[str, np.ndarray]]
    test_features: np.ndarray | None
    imagery_features: np.ndarray | None

    @classmethod
    def of(cls, faces: FaceSpaces, imagery: bool) -> _Truth:
        shared = {"pixel": faces.images["train"].mean(axis=0)}
        if faces.perceptual is not None:
            shared["perceptual"] = faces.features("train").mean(axis=0)
        centres = {s: {**shared, "latent": faces.latents[s]["train"].mean(axis=0)} for s in faces.names}
        return cls(centres, faces.features("test"), faces.features("imagery") if imagery else None)


def evaluate_decoders(
    estimates: dict[str, EstimatePatterns],
    faces: FaceSpaces,
    *,
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
    estimates : estimate type -> its patterns over the selected voxels: ``train`` (with runs), ``test``, and,
        when there are imagery runs, ``imagery`` (averaged per imagined face, in the order of
        ``faces.latents[...]["imagery"]``) and ``imagery_trials`` (single trials with their face ids)
    faces : the face spaces, their latents and images, the perceptual features and the mapping factory
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
    est_main, map_main = main
    has_imagery = any(p.imagery is not None for p in estimates.values())
    truth = _Truth.of(faces, has_imagery)
    res = _Results()
    factors_cache: dict = {}  # the face spaces' latent factors per fold, shared by the estimate types
    for est, patterns in estimates.items():
        models = _fit_every_mapping(est, patterns.train, faces, factors_cache, log)
        for (mname, sname), mapping in models.items():
            res.fitted[(est, mname, sname)] = mapping
            pred, rec = _score_test(res, (est, mname, sname), mapping.predict(patterns.test.x), faces, truth, log)
            if patterns.imagery is not None and len(faces.latents[sname]["imagery"]) >= 2:
                _score_imagery(res, (est, mname, sname), mapping, patterns, faces, truth)
            if est != est_main:
                continue
            res.recon[f"{sname} {mname}"] = rec
            if male is not None:
                _score_gender(res, (mname, sname), pred, faces, male)
    map_main, choice = _bundle_mapping(res.fitted, est_main, map_main, log)
    permutation: dict = {}
    if n_permutations:
        step("permutation control")
        permutation = _permutation(
            res.fitted, estimates[est_main], faces, (est_main, map_main), n_permutations, rng, log
        )
    evaluation = _evaluation(res, faces.names, (est_main, map_main), choice, permutation, male is not None)
    return evaluation, {**res.fitted, "recon": res.recon}


def _fit_every_mapping(
    est: str, train: TrialPatterns, faces: FaceSpaces, cache: dict, log: Callable[[str], None]
) -> dict[tuple[str, str], object]:
    """Every mapping and face space on one estimate type's patterns, one decomposition per fold."""
    from offline.decoding.mapping import fit_shared

    combos = [(mname, sname) for mname in ("ridge", "encoding") for sname in faces.names]
    log(f"{est}: fitting {len(combos)} mappings (ridge, encoding x {', '.join(faces.names)}) together")
    t_est = time.perf_counter()
    models = fit_shared(
        [faces.make(mname) for mname, _ in combos],
        train.x,
        [faces.latents[sname]["train"] for _, sname in combos],
        train.runs,
        target_keys=[sname for _, sname in combos],
        cache=cache,
        on_fold=lambda i, n: log(f"{est}: cross-validation fold {i}/{n} done ({time.perf_counter() - t_est:.0f} s)"),
    )
    return dict(zip(combos, models))


def _score_test(res: _Results, key: tuple[str, str, str], pred, faces: FaceSpaces, truth: _Truth, log):
    """Score one fitted mapping's predictions of the test faces; returns them and their reconstructions."""
    est, mname, sname = key
    mapping = res.fitted[key]
    scores, rec = score_spaces(
        pred,
        faces.latents[sname]["test"],
        faces.images["test"],
        faces.spaces[sname].decode,
        faces.perceptual,
        truth.test_features,
        truth.centres[sname],
    )
    entry = {k: v.as_dict() for k, v in scores.items()}
    entry["alpha"] = float(mapping.alpha_)
    entry["cv_score"] = float(mapping.cv_score_)
    entry["scale"] = float(mapping.scale_)
    if mname == "encoding":
        entry["n_components"] = int(mapping.n_components_)
    res.details.setdefault(est, {}).setdefault(mname, {})[sname] = entry
    shown = ", ".join(f"{k} {v.accuracy:.3f}" for k, v in scores.items())
    log(f"{est:>6} {mname:>8} {sname:>6}: {shown}")
    return pred, rec


def _score_imagery(res: _Results, key, mapping, patterns: EstimatePatterns, faces: FaceSpaces, truth: _Truth) -> None:
    """The imagined faces decoded from their averaged patterns, and each single trial's identification."""
    est, mname, sname = key
    z = faces.latents[sname]["imagery"]
    scores, _ = score_spaces(
        mapping.predict(patterns.imagery.x),
        z,
        faces.images["imagery"],
        faces.spaces[sname].decode,
        faces.perceptual,
        truth.imagery_features,
        truth.centres[sname],
    )
    entry = {k: v.as_dict() for k, v in scores.items()}
    trials = patterns.imagery_trials
    entry["trials"] = trialwise_identification(mapping.predict(trials.x), trials.ids, list(patterns.imagery.ids), z)
    res.imagery.setdefault(est, {}).setdefault(mname, {})[sname] = entry


def _score_gender(res: _Results, key: tuple[str, str], pred, faces: FaceSpaces, male: dict[str, np.ndarray]) -> None:
    """Gender read from the decoded and from the true test latents, by the Male direction and by a classifier."""
    mname, sname = key
    z = faces.latents[sname]
    if sname not in res.gender_models:  # one Male direction and one classifier per face space
        men, women = z["train"][male["train"] > 0].mean(0), z["train"][male["train"] < 0].mean(0)
        clf = gender_classifier(z["train"], male["train"])
        res.gender_models[sname] = (men - women, (men + women) / 2, clf)
    direction, midpoint, clf = res.gender_models[sname]
    for name, latents in ((mname, pred), ("true_latents", z["test"])):
        res.gender.setdefault(sname, {})[name] = {
            "projection": gender_by_projection(latents, male["test"], direction, midpoint),
            "classifier": _accuracy_dict(clf.predict(latents), male["test"]),
        }


def _bundle_mapping(fitted: dict, est_main: str, map_main: str, log) -> tuple[str, dict | None]:
    """The bundle's mapping; ``auto``: the better held-out score on the training runs (never the test)."""
    if map_main != "auto":
        return map_main, None
    cv = {m: float(fitted[(est_main, m, "vaegan")].cv_score_) for m in ("ridge", "encoding")}
    chosen = max(cv, key=lambda m: (cv[m], m == "ridge"))
    choice = {
        "by": "held-out centred latent correlation in the grouped cross-validation on the training runs (VAE-GAN)",
        "cv_score": cv,
        "chosen": chosen,
    }
    log(f"the bundle's mapping: {chosen} (cross-validated {cv['ridge']:.4f} ridge, {cv['encoding']:.4f} encoding)")
    return chosen, choice


def _permutation(
    fitted: dict, patterns: EstimatePatterns, faces: FaceSpaces, main: tuple[str, str], n: int, rng, log
) -> dict:
    """The permutation control of both mappings (VAE-GAN space) on the bundle's estimate type."""
    from offline.decoding.mapping import Split

    est_main, map_main = main
    permutation: dict = {}
    split = Split(patterns.train.x, patterns.test.x)  # one design for every shuffle of both mappings
    for mname in ("ridge", "encoding"):
        fixed = fitted[(est_main, mname, "vaegan")].fixed_params()
        log(f"permutation control: {mname}, {n} shuffles")
        permutation[mname] = permutation_control(
            lambda m=mname, kw=fixed: faces.make(m, **kw),
            patterns.train.x,
            faces.latents["vaegan"]["train"],
            patterns.test.x,
            faces.latents["vaegan"]["test"],
            n,
            rng,
            split=split,
            on_step=_shuffle_progress(mname, log),
        )
    del split
    permutation["mean"] = permutation[map_main]["mean"]
    return permutation


def _shuffle_progress(mname: str, log) -> Callable[[int, int], None]:
    """``on_step`` of the permutation control: a line every 5 s and at the last shuffle."""
    t_perm = time.perf_counter()
    last = t_perm

    def progress(i: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= 5.0 or i == total:
            last = now
            log(f"permutation control: {mname}, {i}/{total} shuffles ({now - t_perm:.0f} s)")

    return progress


def _evaluation(res: _Results, spaces: list[str], main, choice, permutation: dict, has_male: bool) -> dict:
    """evaluation.json from the collected results."""
    est_main, map_main = main
    main_scores = res.details[est_main][map_main]
    kinds = ("latent", "pixel", "perceptual")
    return {
        "pairwise": {s: {k: main_scores[s][k]["accuracy"] for k in kinds if k in main_scores[s]} for s in spaces},
        "pairwise_centred": {
            s: {k: main_scores[s][f"{k}_centred"]["accuracy"] for k in kinds if f"{k}_centred" in main_scores[s]}
            for s in spaces
        },
        "estimate": est_main,
        "mapping": map_main,
        **({"mapping_choice": choice} if choice else {}),
        "chance": 0.5,
        "details": res.details,
        "permutation": permutation,
        "gender": res.gender if has_male else {"skipped": "the data set carries no Male attribute"},
        "imagery": (
            {**res.imagery.get(est_main, {}).get(map_main, {}), "details": res.imagery}
            if res.imagery
            else {"skipped": "fewer than two imagined faces"}
        ),
    }
