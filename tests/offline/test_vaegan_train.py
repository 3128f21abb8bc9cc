"""VAE-GAN training: the loss goes down, resume equals an uninterrupted run, records and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fmriface.config import load_config, preset_path
from models.checkpoint import CheckpointError, save_checkpoint
from models.config import preset
from models.vaegan import VAEGAN
from offline.facespace import load_facespace
from offline.training.io import read_metrics
from offline.training.vaegan import TrainConfig, train_vaegan

torch.set_num_threads(1)
LOSSES = ("kl", "feature", "pixel", "gan_dec", "dis", "d_real", "d_fake", "train_dec", "train_dis")


def _cfg(**over) -> TrainConfig:
    base = {"threads": 1, "device": "cpu", "n_attribute_faces": 24}
    return load_config(TrainConfig, preset_path("vaegan-tiny"), {**base, **over})


def test_tiny_run_lowers_reconstruction_loss_and_writes_its_records(tmp_path: Path) -> None:
    summary = train_vaegan(_cfg(steps=14), tmp_path)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 15))
    pix = np.array([r["pixel"] for r in rows])
    assert pix[-3:].mean() < 0.85 * pix[:3].mean(), pix
    for name in (
        "checkpoint.pt",
        "facespace.json",
        "train_config.json",
        "samples.png",
        "attributes.npz",
        "summary.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000006.png", "step_000012.png"]
    assert summary["device"] == "cpu" and summary["steps"] == 14 and -1 <= summary["heldout_pixel_corr"] <= 1
    with np.load(tmp_path / "attributes.npz") as z:
        assert "Male" in list(z["names"]) and z["directions"].shape[1] == 64
    meta = json.loads((tmp_path / "facespace.json").read_text())
    assert meta["kind"] == "vaegan" and meta["framing"] == "resize"  # procedural faces are already framed
    q = meta["quality"]  # measured at each sample grid (steps 6 and 12) and at the end
    assert [h["step"] for h in q["history"]] == [6, 12] and q["step"] == 14 and q["stop_reason"] == "steps"
    assert -1 <= q["heldout_pixel_corr"] <= 1 and "Male" in q["attribute_readout"]
    assert all(0 <= v <= 1 for v in q["attribute_readout"].values())
    assert len((tmp_path / "quality.csv").read_text().splitlines()) == 3  # a header and two checks
    assert load_facespace(tmp_path).framing == "resize"


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _cfg(steps=6, checkpoint_every=3, sample_every=100, n_attribute_faces=0)
    train_vaegan(cfg, tmp_path / "whole")
    train_vaegan(_cfg(steps=3, checkpoint_every=3, sample_every=100, n_attribute_faces=0), tmp_path / "split")
    # A crash after the checkpoint: a metrics row past it is dropped on resume.
    with open(tmp_path / "split" / "metrics.csv", "a") as f:
        f.write("4,0,0,9,9,9,9,9,9,9,1,1\n")
    train_vaegan(cfg, tmp_path / "split", resume=True)
    whole = read_metrics(tmp_path / "whole" / "metrics.csv")
    split = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in split] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole, split):
        for key in LOSSES:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), (a["step"], key)


def test_image_folder_with_attribute_table(tmp_path: Path) -> None:
    from offline.faces import write_faces
    from offline.facespace import load_facespace

    write_faces(tmp_path / "faces", 30, size=48, seed=4)
    cfg = _cfg(data=f"folder:{tmp_path / 'faces'}", steps=3, sample_every=100, n_attribute_faces=24)
    summary = train_vaegan(cfg, tmp_path / "run")
    assert summary["data"]["source"] == "folder" and summary["data"]["n_held_out"] == 3
    space = load_facespace(tmp_path / "run")
    assert "Male" in space.attribute_names and space.attribute_directions_.shape[1] == 64


def test_time_budget_stops_early_with_a_checkpoint(tmp_path: Path) -> None:
    summary = train_vaegan(_cfg(steps=50, max_minutes=1e-6, n_attribute_faces=0), tmp_path)
    assert summary["stopped_early"] and summary["steps"] == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_resume_refuses_a_checkpoint_of_another_network(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "checkpoint.pt", VAEGAN(preset("small-64", latent_size=16)))
    with pytest.raises(CheckpointError, match=r"checkpoint.pt.*latent_size: 16 != 64"):
        train_vaegan(_cfg(), tmp_path, resume=True)


def test_command_line_and_bad_inputs(tmp_path: Path) -> None:
    from fmriface.commands.train_vaegan import main
    from offline.datasets import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        main(["--config", "vaegan-tiny", "--data", f"folder:{tmp_path / 'empty'}", "--out", str(tmp_path / "o")])
    with pytest.raises(Exception, match="does not exist"):
        main(["--config", "vaegan-tiny", "--out", str(tmp_path / "o2"), "--resume"])
    with pytest.raises(Exception, match="batch_size must be at least 1"):
        main(["--config", "vaegan-tiny", "--out", str(tmp_path / "o3"), "--batch-size", "0"])


@pytest.mark.parametrize("name", ["vaegan-tiny", "vaegan-demo", "vaegan-paper", "vaegan-converged"])
def test_presets_load(name: str) -> None:
    cfg = load_config(TrainConfig, preset_path(name))
    assert preset(cfg.network, cfg.latent_size).image_size in (64, 128)
    if name == "vaegan-paper":
        assert (cfg.network, cfg.batch_size, cfg.steps, cfg.pixel_weight) == ("paper-128", 64, 50000, 0.0)


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    """DistributedDataParallel under torchrun, gloo on the CPU: ~8 s on an idle 2-core machine."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FMRIFACE_QUIET": "1"}
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "fmriface",
        "train-vaegan",
        "--config",
        "vaegan-tiny",
        "--steps",
        "4",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert summary["ranks_in_sync"] is True  # gradients were averaged: both ranks hold the same weights
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and len(state["extra"]["generators"]) == 2
    assert len(read_metrics(out / "metrics.csv")) == 4
    shutil.rmtree(out)


def test_training_stops_when_its_quality_plateaus(tmp_path: Path) -> None:
    summary = train_vaegan(_cfg(steps=40, sample_every=2, plateau_checks=2, plateau_tol=1.0), tmp_path)
    # a tolerance no change can beat: the third check (step 6) finds the last two no better than the first
    assert summary["stop_reason"] == "plateau" and summary["stopped_early"] and summary["steps"] == 6
    assert json.loads((tmp_path / "facespace.json").read_text())["quality"]["stop_reason"] == "plateau"


def test_plateau_rule() -> None:
    from offline.training.vaegan import plateaued

    def h(*pairs):
        return [{"heldout_pixel_corr": c, "attribute_readout_mean": r} for c, r in pairs]

    assert not plateaued(h((0.5, 0.6), (0.6, 0.6)), 2, 0.01)  # too few checks to judge
    assert plateaued(h((0.5, 0.6), (0.505, 0.605), (0.508, 0.6)), 2, 0.01)
    assert not plateaued(h((0.5, 0.6), (0.505, 0.6), (0.52, 0.6)), 2, 0.01)  # the correlation still rises
    assert not plateaued(h((0.5, 0.6), (0.5, 0.6), (0.5, 0.63)), 2, 0.01)  # the readout still rises
    assert plateaued([{"heldout_pixel_corr": v, "attribute_readout_mean": None} for v in (0.5, 0.5, 0.5)], 2, 0.01)
    assert not plateaued(h((0.5, 0.6), (0.5, 0.6), (0.5, 0.6)), 0, 0.01)  # 0: never


def test_attribute_readout_reads_a_planted_attribute_and_not_noise() -> None:
    from offline.facespace import attribute_readout

    rng = np.random.default_rng(0)
    n, d = 1000, 64
    latents = rng.normal(size=(n, d))
    planted = np.sign(latents @ rng.normal(size=d))  # a linear attribute of the latents
    noise = np.where(rng.random(n) < 0.3, 1, -1)  # unrelated, unbalanced
    out = attribute_readout(latents, np.stack([planted, noise], 1), ["Planted", "Noise"])
    assert out["Planted"] > 0.85 and 0.35 < out["Noise"] < 0.65
    assert attribute_readout(latents, np.zeros((n, 1)), ["None"]) == {}  # no face has it: not scored
