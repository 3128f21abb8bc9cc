"""The feedback signal as a plugin: the built-in signals behind the interface give what they always gave, a plugin
is chosen by name, and one that raises, overruns or returns NaN is reported and disabled for the run while the
live path goes on; a sham run replays a plugin signal's feedback; the documented example plugin works."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib

from fmriface.benchmarks.synth import make_bundle, make_run
from service.live.feedback import Feedback, SignalContext, TargetCorrelation
from service.live.feedback_plugins import BUILTIN_SIGNALS, FeedbackPluginError, GuardedSignal, make_signal
from service.live.serve import ServeConfig
from tests.service.harness import make_volume, serve, serve_config
from tests.service.live import feedback_fakes

TR = 2.0
N_VOL = 14
FAKES = "tests.service.live.feedback_fakes"
EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "feedback-plugin"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR)


def _context(latent_size: int = 6) -> SignalContext:
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(2, latent_size)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return SignalContext(latent_size, ("Male", "Smiling"), dirs, np.zeros(latent_size, np.float32), smooth=2)


def _run(synth, tmp_path, **cfg):
    data = make_run(synth, [], N_VOL, amplitude=3.0, noise=2.0, drift=5.0, seed=1)
    vols = [make_volume(i, data[i], synth.affine, TR) for i in range(N_VOL)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = dict(max_volumes=N_VOL, target_stim=synth.stim_ids[1].split("/")[-1])
    return serve(serve_config(synth.path, tmp_path, **{**base, **cfg}), vols)


def test_the_built_in_target_correlation_gives_the_smoothed_pearson_correlation():
    rng = np.random.default_rng(1)
    ctx = _context()
    fb = Feedback(ctx.attribute_names, ctx.attribute_directions * 3.0, ctx.center, smooth=2)
    assert "value" not in fb.frame(rng.normal(size=6).astype(np.float32))  # no target: projections only
    target = rng.normal(size=6).astype(np.float32)
    fb.set_target(target, {"stim_id": "face_01.png"})
    a, b = rng.normal(size=(2, 6)).astype(np.float32)
    ra, rb = (float(np.corrcoef(x, target)[0, 1]) for x in (a, b))
    first, second = fb.frame(a), fb.frame(b)
    assert list(second) == ["projections", "value", "correlation", "smooth", "target"]
    assert first["value"] == pytest.approx(ra, abs=1e-5) and second["correlation"] == pytest.approx(rb, abs=1e-5)
    assert second["value"] == pytest.approx((ra + rb) / 2, abs=1e-5) and second["target"] == "face_01.png"
    # projections on the unit directions (scaled directions are normalised), 5 decimals
    assert second["projections"]["Smiling"] == pytest.approx(float(ctx.attribute_directions[1] @ b), abs=1e-5)
    trial = fb.trial(a)
    assert trial["value"] == trial["correlation"] == pytest.approx(ra, abs=1e-5) and "smooth" not in trial
    fb.clear_target()
    assert set(fb.frame(a)) == {"projections"} and fb.target_ is None


def test_the_attribute_projection_signal_makes_one_attribute_the_value():
    ctx = _context()
    fb = Feedback(ctx.attribute_names, ctx.attribute_directions, ctx.center, signal="attribute-projection",
                  options={"attribute": "Smiling"})  # fmt: skip
    latent = np.arange(6, dtype=np.float32)
    out = fb.frame(latent)
    assert out["value"] == out["projections"]["Smiling"] and out["attribute"] == "Smiling"
    assert fb.report() is None  # a built-in signal runs inline
    with pytest.raises(FeedbackPluginError, match="Frowning"):
        make_signal("attribute-projection", ctx, {"attribute": "Frowning"}, 0.02)


def test_an_unknown_signal_is_refused_in_the_config_with_those_available(tmp_path):
    with pytest.raises(ValueError, match="target-correlation"):
        ServeConfig(feedback="no-such-signal")
    with pytest.raises(FeedbackPluginError, match="cannot be loaded"):
        make_signal("no_such_module:Factory", _context(), {}, 0.02)
    assert isinstance(make_signal("target-correlation", _context(), {}, 0.02), TargetCorrelation)


@pytest.mark.parametrize(
    "factory, reason",
    [
        ("Raises", "raised RuntimeError: the plugin broke"),
        ("Sleeps", "overran its budget of 50 ms"),
        ("ReturnsNaN", "not a finite number"),
    ],  # fmt: skip
)
def test_a_failing_plugin_is_disabled_for_the_run_and_reported(factory, reason):
    ctx = _context()
    signal = make_signal(f"{FAKES}:{factory}", ctx, {"after": 2}, budget_s=0.05)
    assert isinstance(signal, GuardedSignal)
    latent = np.ones(6, np.float32)
    assert all("value" in signal.frame(latent) for _ in range(2))  # it works for its first calls
    start = time.perf_counter()
    out = signal.frame(latent)
    assert time.perf_counter() - start < 1.0  # never waits for the plugin beyond its budget (Sleeps sleeps 5 s)
    assert out["signal"] == f"{FAKES}:{factory}" and reason in out["disabled"] and "value" not in out
    later = signal.frame(latent)
    assert later == out and signal.report()["disabled"] == out["disabled"]


@pytest.mark.parametrize("factory", ["Raises", "Sleeps", "ReturnsNaN"])
def test_the_live_path_goes_on_past_a_failing_plugin(synth, tmp_path, factory):
    """FMRIFACE_RAISE=1 (set by the tests) does not turn a plugin's failure into a stopped run."""
    out = _run(synth, tmp_path, feedback=f"{FAKES}:{factory}", feedback_options={"after": 4}, feedback_budget_ms=50.0)
    frames = out.topic("frame")
    assert [m.header["volume"] for m in frames] == list(range(N_VOL))
    values = [m.header["feedback"].get("value") for m in frames]
    assert values[:4] == [{"Raises": 0.5, "Sleeps": 0.25, "ReturnsNaN": 0.75}[factory]] * 4
    assert all(v is None for v in values[4:])
    assert all("disabled" in m.header["feedback"] and "projections" in m.header["feedback"] for m in frames[4:])
    report = out.summary["feedback_signal"]
    assert report["name"] == f"{FAKES}:{factory}" and report["disabled"]
    assert out.summary["volumes_ok"] == N_VOL and out.summary["volumes_failed"] == 0
    end = out.topic("end")[0].header
    assert end["summary"]["feedback_signal"]["disabled"] == report["disabled"]


def test_a_plugin_value_is_published_recorded_and_replayed_by_a_sham_run(synth, tmp_path):
    src = _run(synth, tmp_path / "src", feedback=f"{FAKES}:Mean", feedback_options={"scale": 2.0})
    frames = src.topic("frame")
    for m in frames:  # the plugin saw this frame's latent (the header carries it: latent size 8)
        assert m.header["feedback"]["value"] == pytest.approx(2.0 * np.mean(m.header["latent"]), abs=1e-4)
        assert m.header["feedback"]["signal"] == f"{FAKES}:Mean"
    assert [m.header["feedback"]["calls"] for m in frames] == list(range(1, N_VOL + 1))
    vols = [json.loads(x) for x in (src.service.run_dir_ / "volumes.jsonl").read_text().splitlines()]
    assert [v["feedback"] for v in vols] == [m.header["feedback"]["value"] for m in frames]
    # a sham run (its own signal the default) shows the plugin run's feedback, volume by volume
    sham = _run(synth, tmp_path / "sham", sham_source=src.service.run_dir_)
    assert [m.header["feedback"] for m in sham.topic("frame")] == [m.header["feedback"] for m in frames]
    lines = [json.loads(x) for x in (sham.service.run_dir_ / "feedback.jsonl").read_text().splitlines()]
    assert all(x["real"]["target"] for x in lines if x["topic"] == "frame")  # its own: the target correlation


def test_the_example_plugin_declares_its_entry_point_and_runs_in_the_service(synth, tmp_path, monkeypatch):
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["fmriface.feedback"]
    assert eps == {"nearest-face": "fmriface_nearest_face:NearestFace"}
    monkeypatch.syspath_prepend(str(EXAMPLE))
    chosen = [Path(s).name for s in synth.stim_ids[:3]]
    out = _run(synth, tmp_path, feedback=eps["nearest-face"], feedback_options={"stimuli": chosen})
    frames = out.topic("frame")
    assert len(frames) == N_VOL and out.summary["feedback_signal"]["disabled"] is None
    for m in frames:
        fb = m.header["feedback"]
        assert fb["nearest"] in chosen and -1.0 <= fb["value"] <= 1.0
    # the last frame's correlation with its nearest face, recomputed from the bundle's latents
    latent = np.asarray(frames[-1].header["latent"])
    names = [Path(s).name for s in synth.stim_ids]
    best = max(float(np.corrcoef(latent, synth.stim_latents[names.index(n)])[0, 1]) for n in chosen)
    assert frames[-1].header["feedback"]["correlation"] == pytest.approx(best, abs=1e-3)


def test_the_built_in_signals_are_the_entry_points_pyproject_declares():
    meta = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["fmriface.feedback"] == BUILTIN_SIGNALS
    assert callable(feedback_fakes.Mean)
