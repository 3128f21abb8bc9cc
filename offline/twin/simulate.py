"""The digital-twin subject: ``prepare`` everything that can fail, then ``write`` the BIDS data set.

Randomness is split by purpose, so changing one part leaves the others alone: ``signal.code_seed`` fixes the
brain (hidden code, responsive voxels, their tuning); ``seed`` fixes the stimuli, the trial order, the noise
and the motion of every run (each run from its own stream) and where each later session's slab and head lie
(each session from its own stream; :mod:`offline.twin.sessions`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from offline.datasets.bids import SHARED_LIST
from offline.faces.params import ATTRIBUTE_NAMES, PARAM_NAMES, attributes_from_params, sample_params
from offline.twin.anatomy import grey_matter, make_anatomy
from offline.twin.bold import Subject, synthesize_run
from offline.twin.config import SimulateConfig
from offline.twin.group import shared_names
from offline.twin.motion import MovedGrid, motion_trace
from offline.twin.neural import FaceCode, MixedCode, readout_weights, responsive_voxels
from offline.twin.paradigm import RunPlan, face_run_events, face_slots, imagery_run_events, plan_runs
from offline.twin.sessions import SessionGeometry, draw_sessions, session_subject
from offline.twin.writer import func_dir, write_dataset_files, write_json, write_nifti, write_run, write_tsv

__all__ = ["Plan", "prepare", "write", "simulate"]


@dataclass
class Plan:
    """Everything decided before writing: the subject, the stimuli, the runs with their events and motion, and
    where each session lies (``motion``: each run's within-session motion, ``sessions[s - 1]``: session s's grid
    and head pose; session 1 is ``affine`` with the head at rest)."""

    cfg: SimulateConfig
    anatomy: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    responsive: np.ndarray
    subject: Subject
    stimuli: pd.DataFrame  # stim_file, split, attributes, params
    codes: np.ndarray  # [S, C] in stimuli order
    runs: list[RunPlan]
    events: list[pd.DataFrame]
    motion: list[np.ndarray]
    sessions: list[SessionGeometry] = dataclasses.field(default_factory=list)
    session_subjects: dict[int, Subject] = dataclasses.field(default_factory=dict)  # sessions after the first

    def subject_of(self, run: RunPlan) -> Subject:
        """The twin as the run's session sees it (session 1: ``subject``)."""
        return self.session_subjects.get(run.session, self.subject)

    def affine_of(self, run: RunPlan) -> np.ndarray:
        """The affine of the run's session's grid."""
        return self.sessions[run.session - 1].affine if self.sessions else self.affine

    def run_rng(self, run: RunPlan) -> np.random.Generator:
        """A fresh generator for the run's BOLD data, in the state :func:`synthesize_run` starts from (its signal
        is drawn first: ``offline.twin.truth.clean_signal`` reads it back with the same state)."""
        return np.random.default_rng([self.cfg.seed, 6, run.index])


def subject_code(cfg: SimulateConfig) -> FaceCode | MixedCode:
    """The subject's hidden code: its own :class:`FaceCode`, or for a group member (``group.index`` > 0) the
    group's shared code mixed with its own (:class:`MixedCode`, ``group.shared_fraction`` shared)."""
    sig = cfg.signal
    own = FaceCode(sig.code_size, sig.nonlinear_share, sig.code_seed)
    if not cfg.group.index:
        return own
    shared = FaceCode(sig.code_size, sig.nonlinear_share, cfg.group.shared_seed)
    return MixedCode(shared, own, cfg.group.shared_fraction)


def _test_params(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` test faces, half male, ordered female, male, female, ..."""
    male, female = [], []
    while len(male) < n // 2 or len(female) < n // 2:
        batch = sample_params(64, rng)
        for p in batch:
            (male if p[PARAM_NAMES.index("masculinity")] > 0.5 else female).append(p)
    out = [x for pair in zip(female[: n // 2], male[: n // 2]) for x in pair]
    return np.stack(out).astype(np.float32)


def _subject(cfg: SimulateConfig, anatomy, affine, brain, code: FaceCode) -> tuple[Subject, np.ndarray]:
    sig, mot = cfg.signal, cfg.motion
    rng = np.random.default_rng([sig.code_seed, 21])
    grey = grey_matter(cfg.grid.shape, cfg.grid.voxel_size, cfg.grid.oblique_deg)
    mask, strength = responsive_voxels(affine, grey, sig.n_responsive, rng)
    head = anatomy > 0.02 * float(anatomy.max())
    reach = (mot.max_mm + np.deg2rad(mot.max_deg) * 100.0) if mot.enabled else 0.0
    support = ndimage.binary_dilation(head, iterations=int(np.ceil(reach / min(cfg.grid.voxel_size))) + 1)
    head_flat = np.flatnonzero(head)
    pos = np.full(head.size, -1)
    pos[head_flat] = np.arange(head_flat.size)
    resp_flat = np.flatnonzero(mask)
    s = strength.reshape(-1)[resp_flat]
    subject = Subject(
        s0=anatomy.reshape(-1)[head_flat].astype(np.float32),
        head=head,
        brain_in_head=pos[np.flatnonzero(brain & head)],
        resp_in_head=pos[resp_flat],
        base=sig.psc_face * (0.4 + 0.6 * s) * rng.lognormal(0.0, 0.25, s.size),
        ident=sig.psc_identity * (0.4 + 0.6 * s) * rng.lognormal(0.0, 0.25, s.size),
        weights=readout_weights(mask, code, sig.tuning_smoothness_vox, rng),
        s0_grey=float(anatomy[grey > 0.5].mean()) if (grey > 0.5).any() else float(anatomy[brain].mean()),
        grid=MovedGrid(affine, anatomy.shape, support, order=mot.order),
    )
    if (pos[resp_flat] < 0).any():
        raise ValueError("responsive voxels outside the head: the grid does not cover the brain")
    return subject, mask


def prepare(cfg: SimulateConfig) -> Plan:
    """Build the subject, stimuli, events and motion; raises ValueError for a config that cannot work."""
    par = cfg.paradigm
    anatomy, affine, brain = make_anatomy(cfg.grid.shape, cfg.grid.voxel_size, cfg.grid.oblique_deg)
    if brain.sum() < 100:
        raise ValueError(f"grid {cfg.grid.shape} at {cfg.grid.voxel_size} mm holds fewer than 100 brain voxels")
    code = subject_code(cfg)
    subject, responsive = _subject(cfg, anatomy, affine, brain, code)

    runs = plan_runs(par)
    n_new = face_slots(par)[0]
    n_shared = cfg.group.shared_faces if cfg.group.index else 0
    repeats = cfg.group.shared_repeats if n_shared else 1
    n_train = n_new * sum(r.kind == "train" for r in runs) - n_shared * (repeats - 1)  # distinct training faces
    shared = sample_params(n_shared, np.random.default_rng([cfg.group.shared_seed, 31]))  # the same for every subject
    train = np.concatenate([shared, sample_params(n_train - n_shared, np.random.default_rng([cfg.seed, 1]))])
    test = _test_params(par.n_test_faces, np.random.default_rng([cfg.seed, 2]))
    names = shared_names(n_shared)
    names += [f"train/train_{i:05d}.png" for i in range(n_shared, n_train)]
    names += [f"test/test_{i:02d}.png" for i in range(len(test))]
    params = np.concatenate([train, test])
    stimuli = pd.DataFrame({"stim_file": names, "split": ["train"] * n_train + ["test"] * len(test)})
    stimuli = pd.concat(
        [
            stimuli,
            pd.DataFrame(attributes_from_params(params), columns=list(ATTRIBUTE_NAMES)),
            pd.DataFrame(params.astype(np.float64).round(6), columns=list(PARAM_NAMES)),
        ],
        axis=1,
    )
    test_names = names[n_train:]
    # the training runs' faces in order: the shared faces first, ``repeats`` times over (each pass in its own order;
    # shown once, in name order), then the subject's own
    passes = (
        [list(range(n_shared))]
        if repeats == 1
        else [  # shown once: in name order
            list(np.random.default_rng([cfg.group.shared_seed, 32, k]).permutation(n_shared)) for k in range(repeats)
        ]
    )
    slots = [names[i] for p in passes for i in p] + names[n_shared:n_train] if n_shared else names[:n_train]
    rng = np.random.default_rng([cfg.seed, 3])
    events, motion = [], []
    next_train = 0
    offsets: dict[int, np.ndarray] = {}
    limit = np.array([cfg.motion.max_mm] * 3 + [cfg.motion.max_deg] * 3)
    for run in runs:
        if run.kind == "train":
            ev = face_run_events(par, slots[next_train : next_train + n_new], rng, "train_face", shuffle=False)
            next_train += n_new
        elif run.kind == "test":
            ev = face_run_events(par, test_names * par.test_repeats_per_run, rng, "test_face", shuffle=True)
        else:
            ev = imagery_run_events(par, test_names[: par.n_imagery_faces], rng)
        events.append(ev)
        mrng = np.random.default_rng([cfg.seed, 5, run.index])
        if run.session not in offsets:  # where the head lies in this session, relative to the reference
            offsets[run.session] = mrng.uniform(-0.3, 0.3, 6) * limit
        start = offsets[run.session] + mrng.normal(0.0, 0.08, 6) * limit
        motion.append(motion_trace(run.n_volumes, cfg.motion, start, mrng))
    # Each later session on its own slab with the head in its own place (the motion above: within the session).
    sessions = draw_sessions(cfg, affine)
    session_subjects = {
        g.session: session_subject(
            subject, cfg, affine, responsive, g, [m for r, m in zip(runs, motion) if r.session == g.session]
        )
        for g in sessions[1:]
    }
    return Plan(
        cfg,
        anatomy,
        affine,
        brain,
        responsive,
        subject,
        stimuli,
        code(params),
        runs,
        events,
        motion,
        sessions,
        session_subjects,
    )


def _write_stimuli(plan: Plan, root: Path, progress: Callable[[int], None] | None) -> None:
    from offline.faces import render_faces, write_png

    params = plan.stimuli[list(PARAM_NAMES)].to_numpy(np.float32)
    files = plan.stimuli["stim_file"].tolist()
    for folder in ("train", "test"):
        (root / "stimuli" / folder).mkdir(parents=True, exist_ok=True)
    for i in range(0, len(files), 64):
        for name, image in zip(files[i : i + 64], render_faces(params[i : i + 64], plan.cfg.image_size)):
            write_png(root / "stimuli" / name, image)
        if progress is not None:
            progress(0)


_PLAN: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _PLAN
    _PLAN = plan


def _synthesize(i: int) -> np.ndarray:
    """The BOLD data of run ``i`` of the worker's plan (one BLAS thread: runs are the unit of parallelism)."""
    from threadpoolctl import threadpool_limits

    plan = _PLAN
    assert plan is not None
    cfg, run = plan.cfg, plan.runs[i]
    code_of = dict(zip(plan.stimuli["stim_file"], plan.codes))
    rng = plan.run_rng(run)
    with threadpool_limits(1):
        return synthesize_run(
            plan.subject_of(run),
            plan.events[i],
            code_of,
            run.n_volumes,
            cfg.paradigm.tr,
            plan.motion[i],
            cfg.signal,
            cfg.noise,
            rng,
        )


def _run_job(i: int, path: Path) -> int:
    assert _PLAN is not None
    write_nifti(path, _synthesize(i), _PLAN.affine_of(_PLAN.runs[i]), _PLAN.cfg.paradigm.tr)
    return i


def write(plan: Plan, out_dir: str | Path, progress: Callable[[int], None] | None = None, workers: int = 1) -> dict:
    """Write the BIDS data set of a prepared plan into ``out_dir`` (expected empty); returns a summary.

    ``progress`` is called with 1 after each run is written (and with 0 while stimuli are being written).
    ``workers`` > 1 builds runs in that many processes; the files are identical whatever the number.
    """
    t0 = time.perf_counter()
    cfg = plan.cfg
    root = Path(out_dir)
    deriv = root / "derivatives" / "twin"
    sub = f"sub-{cfg.subject}"
    write_dataset_files(root, deriv, cfg.subject, dataclasses.asdict(cfg))
    _write_stimuli(plan, root, progress)
    shared = plan.stimuli[
        plan.stimuli["stim_file"].isin(shared_names(cfg.group.shared_faces if cfg.group.index else 0))
    ]
    if len(shared):  # a group member: the faces every subject saw (what a new subject is aligned on)
        write_tsv(root / SHARED_LIST, shared[["stim_file"]])
    write_tsv(deriv / "stimuli.tsv", plan.stimuli, float_format="%.6f")
    np.savez(deriv / "codes.npz", stim_files=np.array(plan.stimuli["stim_file"].tolist()), codes=plan.codes)
    s = plan.subject
    (deriv / sub).mkdir(parents=True, exist_ok=True)
    np.savez(
        deriv / sub / "readout.npz",
        voxel_index=np.flatnonzero(plan.responsive),
        weights=s.weights,
        base_psc=s.base.astype(np.float32),
        identity_psc=s.ident.astype(np.float32),
    )
    write_nifti(deriv / sub / "responsive_mask.nii.gz", plan.responsive.astype(np.uint8), plan.affine)
    write_nifti(deriv / sub / "brain_mask.nii.gz", plan.brain.astype(np.uint8), plan.affine)
    write_nifti(deriv / sub / "anatomy.nii.gz", plan.anatomy.astype(np.float32), plan.affine)
    for g in plan.sessions:
        stem = f"sub-{cfg.subject}_ses-{g.session:02d}"
        write_json(func_dir(deriv, cfg.subject, g.session).parent / f"{stem}_session.json", g.as_record(cfg.subject))
    paths = [
        write_run(root, deriv, cfg.subject, r, ev, m, cfg.paradigm.tr)
        for r, ev, m in zip(plan.runs, plan.events, plan.motion)
    ]
    if workers > 1 and len(plan.runs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # fork is unsafe once BLAS or tqdm threads run (Python 3.12 warns)
        with ProcessPoolExecutor(
            min(workers, len(plan.runs)), mp_context=ctx, initializer=_init_worker, initargs=(plan,)
        ) as pool:
            for _ in pool.map(_run_job, range(len(plan.runs)), paths):
                if progress is not None:
                    progress(1)
    else:
        _init_worker(plan)
        with ThreadPoolExecutor(max_workers=1) as pool:  # gzip releases the GIL: compress while building the next run
            pending = None
            for i, path in enumerate(paths):
                data = _synthesize(i)
                if pending is not None:
                    pending.result()
                    if progress is not None:
                        progress(1)
                pending = pool.submit(write_nifti, path, data, plan.affine_of(plan.runs[i]), cfg.paradigm.tr)
            if pending is not None:
                pending.result()
                if progress is not None:
                    progress(1)
    n_vol = sum(r.n_volumes for r in plan.runs)
    all_events = pd.concat(plan.events)
    counts = all_events["trial_type"].value_counts().to_dict()
    return {
        "out": str(root),
        "runs": len(plan.runs),
        "volumes": n_vol,
        "trials": {k: int(v) for k, v in sorted(counts.items())},
        "oneback": int(all_events["oneback"].sum()),
        "train_faces": int((plan.stimuli["split"] == "train").sum()),
        "test_faces": int((plan.stimuli["split"] == "test").sum()),
        "responsive_voxels": int(plan.responsive.sum()),
        "grid": list(cfg.grid.shape),
        "sessions": [
            {
                "session": g.session,
                "shape": list(g.shape),
                "slab": [round(float(v), 3) for v in g.slab],
                "head": [round(float(v), 3) for v in g.head],
            }
            for g in plan.sessions
        ],
        "tr": cfg.paradigm.tr,
        "max_abs_motion": [round(float(v), 3) for v in np.abs(np.concatenate(plan.motion)).max(0)],
        "workers": workers,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def simulate(
    cfg: SimulateConfig, out_dir: str | Path, progress: Callable[[int], None] | None = None, workers: int = 1
) -> dict:
    """Prepare and write the twin's data set (see :func:`prepare` and :func:`write`)."""
    return write(prepare(cfg), out_dir, progress, workers)
