"""The commands' option handling and the experiment's checks before any window opens."""

from __future__ import annotations

import json

import pytest

from fmriface.commands import display as display_cmd
from fmriface.commands import experiment as experiment_cmd
from fmriface.config import CONFIG_DIR, ConfigError, load_config, resolve_config
from stimulus.display import DisplayConfig
from stimulus.experiment import ExperimentConfig, ExperimentError


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("experiment-*.toml")), ids=lambda p: p.stem)
def test_experiment_presets_load(path):
    cfg = load_config(ExperimentConfig, path)
    assert cfg.plan.layout and cfg.timing.soa > cfg.timing.face_duration


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("display-*.toml")), ids=lambda p: p.stem)
def test_display_presets_load(path):
    cfg = load_config(DisplayConfig, path)
    assert cfg.topic in ("frame", "trial")


def test_paper_preset_follows_the_paper():
    cfg = load_config(ExperimentConfig, resolve_config("paper", "experiment"))
    assert (cfg.timing.soa, cfg.timing.face_duration, cfg.timing.imagery_duration) == (3.0, 1.0, 12.0)
    assert cfg.timing.imagery_rest == 6.0 and cfg.plan.sessions == 8 and cfg.trigger.key == "5"


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[timing]\nsoa = 3.0\nfaces = 2\n")
    with pytest.raises(ConfigError, match="timing.faces"):
        load_config(ExperimentConfig, bad)
    with pytest.raises(ConfigError, match="also a response key"):
        load_config(ExperimentConfig, None, {"trigger.key": "1"})
    with pytest.raises(ConfigError, match="mode"):
        load_config(DisplayConfig, None, {"mode": "bogus"})


def test_plan_only_and_checks_before_the_window(stimuli_dir, tmp_path, capsys):
    out = tmp_path / "bids"
    base = ["--config", "tiny", "--stimuli", str(stimuli_dir), "--out", str(out), "--json"]
    assert experiment_cmd.main([*base, "--run", "3", "--plan-only"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["plan_created"] and summary["run_type"] == "imagery" and summary["task"] == "imagery"
    assert experiment_cmd.main([*base, "--session", "2", "--run", "3", "--plan-only"]) == 0
    assert not json.loads(capsys.readouterr().out)["plan_created"]
    with pytest.raises(ExperimentError, match="is a 'imagery' run"):
        experiment_cmd.main([*base, "--run", "3", "--run-type", "train"])
    events = out / "sub-01" / "ses-01" / "func" / "sub-01_ses-01_task-imagery_run-03_events.tsv"
    events.parent.mkdir(parents=True)
    events.write_text("onset\n")
    with pytest.raises(ExperimentError, match="already exists"):
        experiment_cmd.main([*base, "--run", "3"])


def test_display_rejects_headless_fullscreen():
    with pytest.raises(Exception, match="exclude each other"):
        display_cmd.main(["--headless", "--fullscr"])
    with pytest.raises(Exception, match="800x600"):
        display_cmd.main(["--size", "big"])
