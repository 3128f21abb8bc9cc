"""Checkpoints rebuild the network from their stored configuration and refuse foreign or broken files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import CheckpointError, config_diff, load_checkpoint, save_checkpoint
from models.config import preset
from models.vaegan import VAEGAN

torch.set_num_threads(1)


def _model(latent: int = 24) -> VAEGAN:
    torch.manual_seed(3)
    return VAEGAN(preset("small-64", latent_size=latent))


def test_round_trip_rebuilds_model_optimiser_and_step(tmp_path: Path) -> None:
    model = _model()
    opt = torch.optim.RMSprop(model.decoder.parameters(), lr=1e-3)
    model.decoder(torch.randn(2, 24)).mean().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pt", model, step=17, optimizers={"decoder": opt}, extra={"note": "x"})
    loaded, state = load_checkpoint(path, expected=model.cfg)
    assert loaded.cfg == model.cfg
    assert state["step"] == 17 and state["extra"] == {"note": "x"}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    opt2 = torch.optim.RMSprop(loaded.decoder.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizers"]["decoder"])
    assert opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    assert not list(tmp_path.glob("*.tmp"))


def test_other_preset_names_file_and_differences(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "small.pt", _model())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected=preset("paper-128"))
    msg = str(err.value)
    assert str(path) in msg and "paper-128" in msg and "encoder.image_size: 64 != 128" in msg
    assert "latent_size" in " ".join(config_diff(preset("small-64"), preset("small-64", 8)))


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", _model())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*truncated"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an fmriface VAE-GAN checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_their_config(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", _model())
    state = torch.load(path, weights_only=True)
    state["config"]["decoder"]["fc_channels"] = 128
    state["config"]["decoder"]["channels"] = [128, 64, 32, 3]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)
