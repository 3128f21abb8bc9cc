from __future__ import annotations

import json
from collections import Counter

import pytest

from stimulus.orders import PlanConfig, PlanError, ensure_plan, load_stimuli, make_plan, order_path
from stimulus.schedule import Timing

TIMING = Timing(soa=0.4, face_duration=0.2, lead_in=0.4, lead_out=0.2)
CFG = PlanConfig(seed=3, sessions=2, layout=("train", "test", "train", "imagery"), test_repeats=2, imagery_trials=4)


def test_load_stimuli(stimuli_dir):
    s = load_stimuli(stimuli_dir)
    assert s.train[0] == "train/train_00.png" and len(s.train) == 10 and len(s.test) == 3
    with pytest.raises(PlanError, match="does not exist"):
        load_stimuli(stimuli_dir / "nope")


def test_every_training_image_once_across_sessions(stimuli_dir):
    stimuli = load_stimuli(stimuli_dir)
    plan = make_plan(stimuli, CFG, TIMING)
    assert sorted(plan.runs) == [(s, r) for s in (1, 2) for r in (1, 2, 3, 4)]
    shown = Counter()
    for (_, _), (run_type, trials) in plan.runs.items():
        if run_type == "train":
            shown.update(t.stim_file for t in trials if t.trial_type == "train_face" and not t.oneback)
        elif run_type == "test":
            counts = Counter(t.stim_file for t in trials if t.trial_type == "test_face" and not t.oneback)
            assert counts == {f: 2 for f in stimuli.test}  # every test image test_repeats times in every test run
        else:
            imagined = [t.stim_file for t in trials if t.trial_type == "Img"]
            assert len(imagined) == 4 and set(imagined) <= set(stimuli.test)
    assert shown == {f: 1 for f in stimuli.train}


def test_plan_is_seeded(stimuli_dir):
    stimuli = load_stimuli(stimuli_dir)
    a, b = make_plan(stimuli, CFG, TIMING), make_plan(stimuli, CFG, TIMING)
    c = make_plan(stimuli, PlanConfig(**{**CFG.__dict__, "seed": 4}), TIMING)
    assert a.runs == b.runs and a.runs != c.runs


def test_saved_plan_is_reused_on_resume(stimuli_dir, tmp_path):
    stimuli = load_stimuli(stimuli_dir)
    folder = tmp_path / "plan"
    plan, created = ensure_plan(folder, stimuli, CFG, TIMING)
    assert created and (folder / "plan.json").is_file()
    # The saved order is what a resumed session runs, even where it differs from what the seed would give now.
    path = order_path(folder, 2, 3)
    lines = path.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    stims = [r.split("\t")[4] for r in rows]
    edited = [r.replace(s, stims[len(stims) - 1 - i]) for i, (r, s) in enumerate(zip(rows, stims))]
    path.write_text("\n".join([header, *edited]) + "\n")
    again, created = ensure_plan(folder, stimuli, CFG, TIMING)
    assert not created
    assert [t.stim_file for t in again.run(2, 3)[1]] == stims[::-1]
    assert again.run(1, 1) == plan.run(1, 1)
    meta = json.loads((folder / "plan.json").read_text())
    assert [r["run_type"] for r in meta["runs"][:4]] == list(CFG.layout)


def test_saved_plan_refuses_other_settings(stimuli_dir, tmp_path):
    stimuli = load_stimuli(stimuli_dir)
    ensure_plan(tmp_path, stimuli, CFG, TIMING)
    with pytest.raises(PlanError, match="other settings"):
        ensure_plan(tmp_path, stimuli, PlanConfig(**{**CFG.__dict__, "seed": 9}), TIMING)
    (stimuli_dir / "train" / "train_00.png").rename(stimuli_dir / "train" / "train_99.png")
    with pytest.raises(PlanError, match="another stimulus list"):
        ensure_plan(tmp_path, load_stimuli(stimuli_dir), CFG, TIMING)


def test_plan_errors(stimuli_dir):
    stimuli = load_stimuli(stimuli_dir)
    with pytest.raises(PlanError, match="cannot fill"):
        make_plan(stimuli, PlanConfig(sessions=11, layout=("train",)), TIMING)
    with pytest.raises(PlanError, match="not found"):
        make_plan(stimuli, PlanConfig(imagery_pool=("test/missing.png",)), TIMING)
    plan = make_plan(stimuli, CFG, TIMING)
    with pytest.raises(PlanError, match="not in the plan"):
        plan.run(3, 1)
    with pytest.raises(ValueError, match="unknown run types"):
        PlanConfig(layout=("train", "rest"))
