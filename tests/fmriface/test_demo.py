from __future__ import annotations

import json
import shutil

import pytest
import tomllib

from fmriface.config import ConfigError, load_config, preset_path
from fmriface.demo import live
from fmriface.demo.steps import DemoConfig, Step


def _bids(tmp_path):
    root = tmp_path / "bids"
    func = root / "sub-01" / "ses-01" / "func"
    func.mkdir(parents=True)
    (root / "dataset_description.json").write_text("{}")
    for run, kind in ((1, "train_face"), (2, "test_face"), (3, "test_face")):
        stem = f"sub-01_ses-01_task-faces_run-{run:02d}"
        (func / f"{stem}_bold.nii.gz").write_bytes(b"x")
        (func / f"{stem}_bold.json").write_text("{}")
        (func / f"{stem}_events.tsv").write_text(f"onset\tduration\ttrial_type\tstim_file\n3\t1\t{kind}\ta.png\n")
    return root


def test_holdout_is_the_last_test_run_and_the_fit_view_lacks_it(tmp_path):
    root = _bids(tmp_path)
    hold = live.choose_holdout(root, "last-test")
    assert hold.name == "sub-01_ses-01_task-faces_run-03_bold.nii.gz"
    view = live.bids_view_without(root, hold, tmp_path / "view")
    names = sorted(p.name for p in view.rglob("*") if p.is_file())
    assert not any("run-03" in n for n in names)
    assert sum("run-02" in n for n in names) == 3 and "dataset_description.json" in names
    with pytest.raises(Exception, match="matches no bold"):
        live.choose_holdout(root, "sub-09")


def test_merged_toml_overrides_nested_keys_only(tmp_path):
    out = live.merged_toml(
        preset_path("simulate-tiny"), {"paradigm": {"test_runs_per_session": 2}}, tmp_path / "s.toml"
    )
    merged = tomllib.loads(out.read_text())
    original = tomllib.loads(preset_path("simulate-tiny").read_text())
    assert merged["paradigm"]["test_runs_per_session"] == 2
    original["paradigm"]["test_runs_per_session"] = 2
    assert merged == original


def test_steps_are_reused_only_when_their_key_matches(tmp_path):
    s = Step(tmp_path, "twin", "k1")
    assert not s.done()
    s.begin()
    s.dir.mkdir()
    s.finish(1.0)
    assert Step(tmp_path, "twin", "k1").done()
    assert not Step(tmp_path, "twin", "k2").done()
    shutil.rmtree(s.dir)
    assert not Step(tmp_path, "twin", "k1").done()


def test_demo_presets_load_and_bad_values_are_refused(tmp_path):
    for preset in ("demo-tiny", "demo-demo", "demo-paper"):
        cfg = load_config(DemoConfig, preset_path(preset))
        for name in (cfg.simulate, cfg.vaegan, cfg.fit, cfg.serve):
            assert preset_path(name).is_file()
    bad = tmp_path / "d.toml"
    bad.write_text('replay_format = "jpeg"\n')
    with pytest.raises(ConfigError, match="replay_format"):
        load_config(DemoConfig, bad)


@pytest.mark.slow
def test_tiny_demo_completes_with_every_report_section(tmp_path, monkeypatch):
    from fmriface.cli import main

    monkeypatch.delenv("FMRIFACE_RAISE", raising=False)
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path / "demo")]) == 0
    rep = tmp_path / "demo" / "report"
    html = (rep / "index.html").read_text()
    for section in ("Test faces", "Latency", "Motion", "Online / offline", "display"):
        assert section in html
    for fig in ("faces.png", "latency.png", "motion.png", "agreement.png"):
        assert (rep / fig).stat().st_size > 1000
    s = json.loads((rep / "summary.json").read_text())
    assert s["record"]["volumes_by_status"].get("ok", 0) == s["volumes"]
    assert s["record"]["trials"] > 0
    assert s["online_offline"]["median_r"] > 0.95
    assert set(s["offline_evaluation"]["pairwise"]) == {"vaegan", "pca"}


@pytest.mark.slow
def test_a_paper_shaped_demo_scores_every_repeat_and_writes_the_papers_table(tmp_path, monkeypatch):
    """demo-paper's shape at the tiny scale: the live run stays in the fit's test set (all repeats scored offline),
    the fit computes the repeats curve and the ablations, and the paper's table lands beside the demo report."""
    from fmriface.cli import main

    monkeypatch.delenv("FMRIFACE_RAISE", raising=False)
    fit = tmp_path / "fit.toml"
    fit.write_text("repeats = [1, 8]\nrepeat_draws = 2\nablations = true\n" + preset_path("fit-tiny").read_text())
    demo = tmp_path / "demo.toml"
    demo.write_text(
        "holdout_in_fit = true\npaper_report = true\n"
        + preset_path("demo-tiny").read_text().replace('fit = "fit-tiny"', f'fit = "{fit}"')
    )
    assert f'fit = "{fit}"' in demo.read_text()
    assert main(["demo", "--config", str(demo), "--out", str(tmp_path / "out"), "--no-display"]) == 0
    ev = json.loads((tmp_path / "out" / "fit" / "report" / "evaluation.json").read_text())
    assert ev["training"]["runs"]["test"] == 2  # both test runs: the live one too
    assert ev["repeats"]["max_repeats"] >= 8 and "hidden_code" in ev["ablations"]
    md = (tmp_path / "out" / "report" / "paper.md").read_text()
    assert "Where the accuracy goes" in md and "| ridge | vaegan |" in md
    assert (tmp_path / "out" / "report" / "paper.html").is_file()
