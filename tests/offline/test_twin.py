"""The digital twin end to end on the tiny preset: BIDS layout, events, determinism, signal placement, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmriface.common import UsageError
from fmriface.config import ConfigError, load_config, preset_path
from offline.faces import ATTRIBUTE_NAMES, PARAM_NAMES
from offline.twin import SimulateConfig, simulate
from offline.twin.bold import event_regressors

SUB = "sub-01"


def _tiny(**overrides) -> SimulateConfig:
    return load_config(SimulateConfig, preset_path("simulate-tiny"), overrides)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, SimulateConfig]:
    cfg = _tiny()
    out = tmp_path_factory.mktemp("twin") / "tiny"
    simulate(cfg, out)
    return out, cfg


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _events(root: Path) -> dict[str, pd.DataFrame]:
    return {
        p.name: pd.read_csv(p, sep="\t", keep_default_na=False)
        for p in sorted(root.glob(f"{SUB}/ses-*/func/*_events.tsv"))
    }


def test_pybids_loads_the_data_set(tiny):
    bids = pytest.importorskip("bids")
    root, cfg = tiny
    layout = bids.BIDSLayout(str(root), validate=True)
    assert layout.get_subjects() == ["01"]
    assert sorted(layout.get_tasks()) == ["faces", "imagery"]
    bold = layout.get(suffix="bold", extension=".nii.gz")
    p = cfg.paradigm
    assert len(bold) == p.sessions * (p.train_runs_per_session + p.test_runs_per_session + p.imagery_runs_per_session)
    for f in bold:
        assert f.get_metadata()["RepetitionTime"] == p.tr
        img = nib.load(f.path)
        assert img.get_data_dtype() == np.int16 and img.shape[:3] == cfg.grid.shape
        assert img.header.get_zooms()[3] == pytest.approx(p.tr)
    assert len(layout.get(suffix="events", extension=".tsv")) == len(bold)


def test_events_match_the_preset(tiny):
    root, cfg = tiny
    p = cfg.paradigm
    n_new = p.new_face_slots
    n_oneback = int(round(p.slots_per_run * p.oneback_fraction))
    stimuli = pd.read_csv(root / "derivatives/twin/stimuli.tsv", sep="\t")
    assert list(stimuli.columns) == ["stim_file", "split", *ATTRIBUTE_NAMES, *PARAM_NAMES]
    test = stimuli[stimuli.split == "test"]
    assert len(test) == p.n_test_faces and (test["Male"] == 1).sum() == p.n_test_faces // 2
    kinds = {"train": 0, "test": 0, "imagery": 0}
    for name, ev in _events(root).items():
        assert list(ev.columns) == ["onset", "duration", "trial_type", "stim_file", "oneback"]
        assert (ev.loc[ev.trial_type == "Fix", "stim_file"] == "n/a").all()
        shown = ev[ev.trial_type != "Fix"]
        assert all((root / "stimuli" / s).is_file() for s in shown.stim_file)
        ses = name.split("_")[1]  # sub-01_ses-02_task-...: the session's folder
        n_vol = nib.load(root / SUB / ses / "func" / name.replace("_events.tsv", "_bold.nii.gz")).shape[3]
        assert ev.onset.max() + ev.duration.max() <= n_vol * p.tr
        if "task-imagery" in name:
            kinds["imagery"] += 1
            img = ev[ev.trial_type == "Img"]
            assert len(img) == p.imagery_trials_per_run and (img.duration == p.imagery_s).all()
            fix = ev[ev.trial_type == "Fix"]
            assert np.allclose(fix.onset.to_numpy(), img.onset.to_numpy() + p.imagery_s)
            continue
        assert len(ev) == p.slots_per_run
        assert np.allclose(np.diff(ev.onset), p.soa_s) and ev.onset.iloc[0] == p.lead_in_s
        assert (ev.oneback == 1).sum() == n_oneback
        repeats = ev.index[ev.oneback == 1]
        assert (ev.stim_file.to_numpy()[repeats] == ev.stim_file.to_numpy()[repeats - 1]).all()
        first = shown[shown.oneback == 0]
        if (first.trial_type == "train_face").all():
            kinds["train"] += 1
            assert len(first) == n_new and first.stim_file.is_unique
        else:
            kinds["test"] += 1
            assert (first.trial_type == "test_face").all()
            assert (first.stim_file.value_counts() == p.test_repeats_per_run).all()
            assert first.stim_file.nunique() == p.n_test_faces
    assert kinds == {
        "train": p.sessions * p.train_runs_per_session,
        "test": p.sessions * p.test_runs_per_session,
        "imagery": p.sessions * p.imagery_runs_per_session,
    }
    motion = sorted((root / "derivatives/twin" / SUB).glob("ses-*/func/*_motion.tsv"))
    assert len(motion) == sum(kinds.values())
    table = pd.read_csv(motion[0], sep="\t")
    assert list(table.columns) == ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    assert table[["trans_x", "trans_y", "trans_z"]].abs().to_numpy().max() <= cfg.motion.max_mm
    assert table[["rot_x", "rot_y", "rot_z"]].abs().to_numpy().max() <= cfg.motion.max_deg


def test_same_seed_same_files_other_seed_other_data(tiny, tmp_path):
    root, cfg = tiny
    from fmriface.commands import simulate as command

    again = tmp_path / "again"
    assert command.main(["--preset", "tiny", "--out", str(again), "--workers", "2", "--json"]) == 0
    assert _hashes(again) == _hashes(root)  # two processes write the same bytes as one
    other = tmp_path / "other"
    simulate(_tiny(seed=1), other)
    name = f"{SUB}/ses-01/func/{SUB}_ses-01_task-faces_run-01_bold.nii.gz"
    assert _hashes(other)[name] != _hashes(root)[name]


def _face_regressors(ev: pd.DataFrame, n_vol: int, tr: float, codes: dict, weights: np.ndarray):
    faces = ev[ev.trial_type.isin(["train_face", "test_face"])]
    x = event_regressors(np.arange(n_vol) * tr + tr / 2, faces.onset.to_numpy(float), faces.duration.to_numpy(float))
    code = np.stack([codes[s] for s in faces.stim_file])
    return x.sum(1), x @ (code @ weights.T)  # [T] mean face response, [T, V] identity-specific part


@pytest.fixture(scope="module")
def tiny_two_train(tmp_path_factory) -> tuple[Path, SimulateConfig]:
    """The tiny twin with two training runs in session 1, as this check was designed for: its voxel-by-voxel
    statistics need the first session's runs, and one training run beside the test run left them to chance
    (the far voxels' mean correlation was under 0.05 with one draw of the trial order and 0.18 with another)."""
    cfg = _tiny(**{"paradigm.train_runs_per_session": 2})
    out = tmp_path_factory.mktemp("twin") / "tiny2"
    simulate(cfg, out)
    return out, cfg


def test_face_voxels_carry_the_hidden_code_and_other_voxels_do_not(tiny_two_train):
    root, cfg = tiny_two_train
    deriv = root / "derivatives/twin"
    npz = np.load(deriv / "codes.npz")
    codes = dict(zip(npz["stim_files"].tolist(), npz["codes"]))
    readout = np.load(deriv / SUB / "readout.npz")
    resp = nib.load(deriv / SUB / "responsive_mask.nii.gz").get_fdata() > 0
    brain = nib.load(deriv / SUB / "brain_mask.nii.gz").get_fdata() > 0
    assert np.array_equal(readout["voxel_index"], np.flatnonzero(resp)) and resp.sum() == cfg.signal.n_responsive
    from scipy import ndimage

    far = brain & ~ndimage.binary_dilation(resp, iterations=2)
    ys, preds, commons = [], [], []
    for name, ev in _events(root).items():
        if "task-faces" not in name or "_ses-01_" not in name:
            continue  # voxel by voxel: session 1's runs, on the masks' grid (later sessions lie on their own slabs)
        data = nib.load(root / SUB / "ses-01/func" / name.replace("_events.tsv", "_bold.nii.gz")).get_fdata()
        common, pred = _face_regressors(ev, data.shape[3], cfg.paradigm.tr, codes, readout["weights"])
        ys.append(data.reshape(-1, data.shape[3]).T)
        preds.append(pred)
        commons.append(common)
    # Per run: remove mean, linear trend and the shared face response; then correlate with the code's prediction.
    resid_y, resid_p = [], []
    for y, pred, common in zip(ys, preds, commons):
        t = np.arange(len(common))
        nuisance = np.column_stack([np.ones_like(t), t, common])
        proj = nuisance @ np.linalg.pinv(nuisance)
        resid_y.append(y - proj @ y)
        resid_p.append(pred - proj @ pred)
    y = np.concatenate(resid_y)
    p = np.concatenate(resid_p)
    yr = y[:, np.flatnonzero(resp)]
    r_resp = np.sum(yr * p, 0) / np.sqrt(np.sum(yr**2, 0) * np.sum(p**2, 0))
    assert np.median(r_resp) > 0.4  # every face voxel follows its own readout of the code
    # Other voxels: the best-matching responsive voxel's prediction explains nothing there.
    yf = y[:, np.flatnonzero(far)]
    best = p[:, int(np.argmax(r_resp))]
    r_far = (yf.T @ best) / np.sqrt(np.sum(yf**2, 0) * np.sum(best**2))
    assert abs(np.mean(r_far)) < 0.05 and np.mean(np.abs(r_far) > 0.4) < 0.02
    # And the responsive voxels' own predictions do not fit shuffled voxels (the signal is voxel-specific).
    shuffled = np.roll(np.arange(yr.shape[1]), yr.shape[1] // 2)
    r_wrong = np.sum(yr * p[:, shuffled], 0) / np.sqrt(np.sum(yr**2, 0) * np.sum(p[:, shuffled] ** 2, 0))
    assert np.median(r_wrong) < np.median(r_resp) - 0.2


def test_invalid_config_is_refused_before_anything_is_written(tmp_path):
    from fmriface.commands import simulate as command

    bad = tmp_path / "bad.toml"
    bad.write_text((preset_path("simulate-tiny")).read_text() + "\n[extra]\nkey = 1\n")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="extra"):
        command.main(["--config", str(bad), "--out", str(out)])
    bad.write_text(preset_path("simulate-tiny").read_text().replace("tsnr = 150.0", "tsnr = -3.0"))
    with pytest.raises(ConfigError, match="tsnr"):
        command.main(["--config", str(bad), "--out", str(out)])
    bad.write_text(preset_path("simulate-tiny").read_text().replace("n_test_faces = 4", "n_test_faces = 5"))
    with pytest.raises(ConfigError, match="n_test_faces"):
        command.main(["--config", str(bad), "--out", str(out)])
    # Well-typed and in range, but more face voxels than this grid's grey matter holds: refused in planning.
    text = preset_path("simulate-tiny").read_text().replace("n_responsive = 60", "n_responsive = 700")
    bad.write_text(text.replace("voxel_size = [9.6, 8.0, 7.875]", "voxel_size = [20.0, 20.0, 20.0]"))
    with pytest.raises(UsageError, match="n_responsive"):
        command.main(["--config", str(bad), "--out", str(out)])
    assert not out.exists()


def test_non_empty_out_is_refused_unless_forced(tmp_path):
    from fmriface.commands import simulate as command

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        command.main(["--preset", "tiny", "--out", str(out)])
    assert (out / "keep.txt").read_text() == "mine"
    assert command.main(["--preset", "tiny", "--out", str(out), "--force", "--seed", "3", "--workers", "1"]) == 0
    assert not (out / "keep.txt").exists() and (out / "dataset_description.json").is_file()


def test_readme_figure_from_a_simulated_data_set(tiny, tmp_path):
    from PIL import Image

    from offline.twin.figures import faces_and_twin_figure

    root, _ = tiny
    out = faces_and_twin_figure(tmp_path / "fig" / "twin.png", twin_dir=root, n_faces=6, face_size=32)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape[0] > 300 and image.shape[1] > 1000
    red = (image[..., 0] > 180) & (image[..., 1] < 120) & (image[..., 2] < 120)
    assert red.sum() > 50  # the face voxels are marked
