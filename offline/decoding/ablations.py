"""Where the accuracy goes: decoding against the number of test repeats averaged, and with the twin's ground truth,
an ablation ladder from the pipeline to the ceiling of a linear map into the face space.

- :func:`repeats_curve` scores the fitted mappings on test patterns averaged over ``n`` of each face's repeats
  (random draws of ``n`` repeats per face; all of them at the largest ``n``).
- :func:`ablations` refits the ridge mapping (both face spaces, penalty by the same grouped cross-validation) on
  what the twin knows and a scanner does not: its truly responsive voxels instead of the selected ones, the BOLD
  signal of those voxels with no scanner noise and no head motion, and the hidden code that drives them (the
  ceiling: no linear map from this brain can do better than a linear map from its code, up to the code's own
  nonlinearity). The pipeline's own rows (selected voxels; window estimates or GLM betas) come from the fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from offline.decoding.facespaces import FaceSpaces
from offline.decoding.patterns import EstimatePatterns, TrialPatterns
from service.window import WindowSpec

__all__ = ["repeats_curve", "ablations", "responsive_on_grid", "KINDS"]

KINDS = ("latent", "pixel", "perceptual")


def _score(pred, sname: str, faces: FaceSpaces, true_feats) -> dict[str, float]:
    """Pairwise accuracies of ``pred`` against the test faces in face space ``sname``."""
    from offline.decoding.evaluate import score_spaces

    scores, _ = score_spaces(
        pred,
        faces.latents[sname]["test"],
        faces.images["test"],
        faces.spaces[sname].decode,
        faces.perceptual,
        true_feats,
    )
    return {k: float(v.accuracy) for k, v in scores.items()}


def repeats_curve(
    models: dict[tuple[str, str], Any],
    trials: TrialPatterns,
    test_ids: Sequence[str],
    faces: FaceSpaces,
    counts: Sequence[int],
    n_draws: int,
    rng: np.random.Generator,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pairwise accuracy of each fitted mapping against the number of repeats averaged per test face.

    ``models``: (mapping, face space) -> fitted mapping; ``trials``: single test trials over the mapping's
    voxels, with their face ids; ``test_ids`` the faces in the order of ``faces.latents[..]["test"]``.
    A count above the fewest repeats of any face is clamped to it (and said so). Each count is drawn
    ``n_draws`` times (once when it takes every repeat); the result holds the mean and SD over draws.
    """
    trial_ids = np.asarray([str(s) for s in trials.ids])
    rows = {s: np.flatnonzero(trial_ids == s) for s in test_ids}
    if any(len(r) == 0 for r in rows.values()):
        missing = [s for s, r in rows.items() if len(r) == 0]
        raise ValueError(f"no single test trials for {missing[:3]}")
    most = min(len(r) for r in rows.values())
    true_feats = faces.features("test")
    used = sorted({min(int(n), most) for n in counts if n >= 1})
    out: dict[str, Any] = {"counts": used, "requested": [int(n) for n in counts], "max_repeats": most, "curves": {}}
    t0 = time.perf_counter()
    for n in used:
        draws = 1 if n == most and all(len(r) == most for r in rows.values()) else n_draws
        acc: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in models}
        for _ in range(draws):
            pick = [rng.choice(rows[s], size=n, replace=False) for s in test_ids]
            x = np.stack([trials.x[p].mean(axis=0) for p in pick])
            for (mname, sname), model in models.items():
                acc[(mname, sname)].append(_score(model.predict(x), sname, faces, true_feats))
        for (mname, sname), draws_scores in acc.items():
            entry = out["curves"].setdefault(f"{sname} {mname}", {})
            for kind in draws_scores[0]:
                vals = np.array([r[kind] for r in draws_scores])
                entry.setdefault(kind, {"mean": [], "sd": [], "draws": []})
                entry[kind]["mean"].append(float(vals.mean()))
                entry[kind]["sd"].append(float(vals.std()))
                entry[kind]["draws"].append(len(vals))
        shown = ", ".join(f"{k} {v['latent']['mean'][-1]:.3f}" for k, v in out["curves"].items())
        log(
            f"repeats: {n} of {most} per face averaged, {draws} draws: latent {shown} ({time.perf_counter() - t0:.0f} s)"
        )
    return out


def responsive_on_grid(mask: np.ndarray, affine: np.ndarray, shape: Sequence[int], target: np.ndarray) -> np.ndarray:
    """A voxel mask on another grid: each target voxel takes the mask at its centre (nearest voxel)."""
    mask = np.asarray(mask, bool)
    if tuple(mask.shape) == tuple(shape) and np.allclose(affine, target, atol=1e-4):
        return mask.copy()
    ijk = np.indices(tuple(shape)).reshape(3, -1).T
    xyz = ijk @ target[:3, :3].T + target[:3, 3]
    src = np.rint((xyz - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(np.int64)
    ok = np.all((src >= 0) & (src < np.array(mask.shape)), axis=1)
    out = np.zeros(int(np.prod(shape)), bool)
    out[ok] = mask[src[ok, 0], src[ok, 1], src[ok, 2]]
    return out.reshape(tuple(shape))


def _ridge_rung(
    name: str, train: TrialPatterns, x_test: np.ndarray, faces: FaceSpaces, true_feats, log: Callable[[str], None]
) -> dict[str, Any]:
    """One rung: the ridge mapping into every face space, fitted on ``train`` and scored on ``x_test``."""
    from offline.decoding.mapping import fit_shared

    t = time.perf_counter()
    names = faces.names
    models = fit_shared(
        [faces.make("ridge") for _ in names],
        train.x,
        [faces.latents[s]["train"] for s in names],
        train.runs,
        target_keys=names,
    )
    entry: dict[str, Any] = {"features": int(train.x.shape[1])}
    for sname, model in zip(names, models):
        entry[sname] = _score(model.predict(x_test), sname, faces, true_feats)
        entry[sname]["alpha"] = float(model.alpha_)
    shown = ", ".join(f"{s} latent {entry[s]['latent']:.3f}" for s in names)
    log(f"ablation {name}: {train.x.shape[1]} features, {shown} ({time.perf_counter() - t:.0f} s)")
    return entry


def ablations(
    plan,
    window: EstimatePatterns,
    faces: FaceSpaces,
    *,
    run_kinds: dict[str, str],
    brain: np.ndarray,
    affine: np.ndarray,
    spec: WindowSpec,
    poly_order: int,
    scale: str,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The ablation rungs from the twin's ground truth (``plan``: :func:`offline.twin.truth.load_plan`).

    ``window``: the pipeline's window estimates over every brain voxel of the reference grid (``brain``,
    ``affine``), ``train`` (with runs) and ``test`` averaged per face in the order of the latents; ``run_kinds``:
    the fit's runs (BIDS stem -> kind); ``spec``, ``poly_order``, ``scale``: how the fit made its window
    estimates. Returns one entry per rung, each with the ridge mapping's pairwise accuracies in both face spaces.
    """
    true_feats = faces.features("test")
    train, test = window.train, window.test
    out: dict[str, Any] = {}

    # 1. the twin's responsive voxels on the reference grid, in the pipeline's (noisy, realigned) estimates
    mask = plan.responsive
    on_ref = responsive_on_grid(mask, plan.affine, brain.shape, affine)
    cols = np.flatnonzero(on_ref[brain])
    out["true_voxels"] = {
        **_ridge_rung("true_voxels", train.select(cols), test.x[:, cols], faces, true_feats, log),
        "responsive": int(mask.sum()),
        "in_brain_mask": int(cols.size),
    }

    # 2. those voxels' BOLD without scanner noise or motion, through the same window estimates
    clean = _noise_free_patterns(
        plan, run_kinds, {"train": train.ids, "test": test.ids}, spec=spec, poly_order=poly_order, scale=scale, log=log
    )
    out["noise_free_bold"] = {
        **_ridge_rung("noise_free_bold", clean["train"], clean["test"].x, faces, true_feats, log),
        "responsive": int(mask.sum()),
    }

    # 3. the hidden code itself: the ceiling of a linear map from this brain into each face space
    code_of = dict(zip(plan.stimuli["stim_file"].astype(str), plan.codes))
    codes_train = np.stack([code_of[str(s)] for s in train.ids]).astype(np.float64)
    codes_test = np.stack([code_of[str(s)] for s in test.ids]).astype(np.float64)
    out["hidden_code"] = _ridge_rung(
        "hidden_code", TrialPatterns(codes_train, train.ids, train.runs), codes_test, faces, true_feats, log
    )
    return out


def _noise_free_patterns(
    plan, run_kinds: dict[str, str], want: dict[str, list[str]], *, spec: WindowSpec, poly_order: int, scale: str, log
) -> dict[str, TrialPatterns]:
    """The twin's noise-free, motion-free BOLD of the fit's training and test runs through the fit's window
    estimates (``spec``, ``poly_order``, ``scale``), averaged per face in the order of ``want``."""
    from offline.decoding.estimates import average_by_stimulus
    from offline.twin.truth import clean_signal, run_names
    from service.online import detrend_offline
    from service.window import last_volume_needed, window_estimate

    names = run_names(plan)
    tr = plan.cfg.paradigm.tr
    kinds = {"train": "train_face", "test": "test_face"}
    parts: dict[str, list[TrialPatterns]] = {"train": [], "test": []}
    t = time.perf_counter()
    done = 0
    for i, (name, run) in enumerate(zip(names, plan.runs)):
        kind = run_kinds.get(name)
        if kind not in kinds:
            continue
        signal = clean_signal(plan, i)
        resid = detrend_offline(100.0 + signal, None, poly_order=poly_order, scale=scale)
        ev = plan.events[i]
        trials = ev[ev["trial_type"] == kinds[kind]]
        onsets = trials["onset"].to_numpy(float)
        keep = np.array([last_volume_needed(o, tr, spec) < run.n_volumes for o in onsets], bool)
        if keep.any():
            pats = window_estimate(resid, onsets[keep], tr, spec)
            ids = trials["stim_file"].astype(str).to_numpy()[keep].tolist()
            parts[kind].append(TrialPatterns(pats, ids, np.full(len(ids), i)))
        done += 1
        if time.perf_counter() - t > 10.0 and done % 10 == 0:
            log(f"ablation noise_free_bold: {done} runs estimated")
    clean: dict[str, TrialPatterns] = {}
    for kind, ids in want.items():
        if not parts[kind]:
            raise ValueError(f"the twin plan has none of the fit's {kind} runs (another data set?)")
        trials = TrialPatterns.concat(parts[kind])
        avg, uids, g, _ = average_by_stimulus(trials.x, trials.ids, trials.runs)
        pos = {s: j for j, s in enumerate(uids)}
        missing = [s for s in ids if s not in pos]
        if missing:
            raise ValueError(f"the twin plan has no {kind} trials of {missing[:3]} (another data set?)")
        order = np.array([pos[str(s)] for s in ids])
        clean[kind] = TrialPatterns(avg[order], list(ids), g[order])
    return clean
