"""The steps of ``fmriface demo`` (see :mod:`fmriface.commands.demo` for what each does): the twin, the face
space, the fit, the live run (:mod:`fmriface.demo.live`) and the reports, each reused on a rerun when its inputs
and config are unchanged (keyed by a config hash). The demo's report itself is offline's
(:mod:`offline.reports.demo`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmriface.common import UsageError
from fmriface.config import config_hash, preset_or_file


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: the preset of every step and how the live part is paced."""

    #: each step's preset: a shipped preset's name, or a path to a TOML file (ending in .toml)
    simulate: str = "simulate-demo"
    #: where the face space comes from: ``train`` (trained anew with the ``vaegan`` preset) or ``reference``
    #: (the shipped reference face space ``reference``, verified against its hashes; no training)
    facespace: str = "train"
    #: the reference face space: a shipped name (``models/reference/<name>/``) or a path to a packed folder
    reference: str = "small-64"
    vaegan: str = "vaegan-demo"
    fit: str = "fit-demo"
    serve: str = "serve-demo"
    replay_format: str = "mosaic"
    replay_speed: float = 10.0
    holdout_run: str = "last-test"
    display: bool = True
    seed: int = 0
    #: the held-out run stays in the fit's test set too (a test run trains nothing: the mapping, its penalty and
    #: the voxel selection see training runs only), so the offline scores average every repeat of every face
    holdout_in_fit: bool = False
    #: also write the paper's table (``report/paper.html``, ``paper.md``) from the fit's evaluation
    paper_report: bool = False
    #: Changes to the simulate preset for the demo (the live replay needs a test run held out of the fit).
    simulate_overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.facespace not in ("train", "reference"):
            raise ValueError(f"facespace must be train or reference, not {self.facespace!r}")
        if self.replay_format not in ("mosaic", "enhanced", "slices", "nifti"):
            raise ValueError(f"replay_format must be mosaic, enhanced, slices or nifti, not {self.replay_format!r}")
        if self.replay_speed <= 0:
            raise ValueError(f"replay_speed must be positive, got {self.replay_speed}")


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run_cli(args: list[str]) -> None:
    from fmriface.cli import main as cli

    _say("fmriface " + " ".join(str(a) for a in args))
    rc = cli([str(a) for a in args])
    if rc:
        raise UsageError(f"step `fmriface {args[0]}` failed with exit status {rc}")


class Step:
    """A step's folder, reused when its stamp matches the step's key (config hash of its inputs)."""

    def __init__(self, out: Path, name: str, key: str) -> None:
        self.dir = out / name
        self.name = name
        self.key = key
        self._stamp = out / f".{name}.done.json"

    def done(self) -> bool:
        """Whether this step already ran with the same inputs: its folder exists and its stamp holds this key."""
        if not self._stamp.is_file() or not self.dir.exists():
            return False
        try:
            return json.loads(self._stamp.read_text()).get("key") == self.key
        except json.JSONDecodeError:
            return False

    def begin(self) -> None:
        """Forget an earlier result before the step runs: the stamp first, then the folder."""
        self._stamp.unlink(missing_ok=True)
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def finish(self, seconds: float) -> None:
        """Mark the folder complete for this key (the stamp also records the seconds the step took)."""
        self._stamp.write_text(json.dumps({"key": self.key, "seconds": round(seconds, 1)}))


def _step(out: Path, name: str, key_parts: list[Any], fn) -> tuple[Path, float | None]:
    step = Step(out, name, config_hash(key_parts))
    if step.done():
        _say(f"{name}: reusing {step.dir} (inputs unchanged)")
        return step.dir, None
    step.begin()
    t = time.time()
    fn(step.dir)
    dt = time.time() - t
    step.finish(dt)
    _say(f"{name}: done in {dt:.1f} s -> {step.dir}")
    return step.dir, dt


def _session_note(bids: Path, holdout: Path) -> str:
    """Which session the held-out run comes from, beside the reference's (the first session's first run).

    ``last-test`` takes the last run with test faces, so with two or more sessions the live run comes from a later
    session than the bundle's reference: its own slab and head position, registered by ``serve`` at its first
    volume.
    """
    sessions = sorted({p.name for p in bids.glob("sub-*/ses-*") if p.is_dir()})
    mine = next((part for part in holdout.parts if part.startswith("ses-")), None)
    if not sessions or mine is None:
        return ""
    if mine == sessions[0]:
        return f" ({mine}, the reference's session)"
    return f" ({mine}; the bundle's reference is {sessions[0]}'s: another slab and head position)"


def _preset_text(name: str) -> str:
    return preset_or_file(name).read_text()


def _facespace_label(cfg: DemoConfig) -> str:
    return "train-vaegan" if cfg.facespace == "train" else "reference face space"


def _facespace_step(cfg: DemoConfig, out: Path) -> tuple[Path, float | None]:
    """The face space the fit reads: trained anew with the ``vaegan`` preset, or the shipped reference verified
    against its manifest's hashes (every run, also when reused) and unpacked to float32 (seconds)."""
    if cfg.facespace == "train":
        return _step(
            out,
            "vaegan",
            ["vaegan", _preset_text(cfg.vaegan), cfg.seed],
            lambda d: _run_cli(
                [
                    "train-vaegan",
                    "--config",
                    preset_or_file(cfg.vaegan),
                    "--data",
                    "procedural",
                    "--out",
                    d,
                    "--seed",
                    cfg.seed,
                ]
            ),
        )
    from fmriface.demo.reference import materialise_reference, resolve_reference, verify_reference

    folder = resolve_reference(cfg.reference)
    manifest = verify_reference(folder)
    _say(f"face space: the reference {folder} (hashes checked; `fmriface demo --train-facespace` trains one)")
    return _step(
        out,
        "vaegan",
        ["reference", json.dumps(manifest["files"], sort_keys=True)],
        lambda d: materialise_reference(folder, d),
    )


def run_demo(cfg: DemoConfig, out: Path) -> int:
    """Run every step into ``out`` and print the report's summary; 0 on success."""
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    times: dict[str, float | None] = {}

    from fmriface.demo import live

    sim_cfg = live.merged_toml(preset_or_file(cfg.simulate), cfg.simulate_overrides, out / ".simulate.toml")
    twin, times["simulate"] = _step(
        out,
        "twin",
        ["simulate", sim_cfg.read_text(), cfg.seed],
        lambda d: _run_cli(["simulate", "--config", sim_cfg, "--out", d, "--seed", cfg.seed]),
    )
    vaegan, times[_facespace_label(cfg)] = _facespace_step(cfg, out)

    holdout = live.choose_holdout(twin, cfg.holdout_run)
    _say(f"held-out run for the live replay: {holdout.name}{_session_note(twin, holdout)}")

    def fit(d: Path) -> None:
        view = twin if cfg.holdout_in_fit else live.bids_view_without(twin, holdout, out / ".fit-bids")
        _run_cli(["fit", "--config", preset_or_file(cfg.fit), "--bids", view, "--vaegan", vaegan, "--out", d])

    fitted, times["fit"] = _step(
        out,
        "fit",
        [
            "fit",
            _preset_text(cfg.fit),
            str(holdout),
            *(["holdout in the fit"] if cfg.holdout_in_fit else []),  # the demo's and tiny's keys as before
            (out / ".twin.done.json").read_text(),  # a rebuilt twin (same paths, new data) refits
            (out / ".vaegan.done.json").read_text(),
        ],
        fit,
    )
    bundle = live.find_bundle(fitted)

    t = time.time()
    result = live.run_live(cfg, bundle, holdout, out / "live", say=_say)
    times["live"] = time.time() - t

    from offline.reports.demo import write_demo_report

    t = time.time()
    report = write_demo_report(out, bundle=bundle, fit_dir=fitted, live=result, holdout=holdout, times=times)
    paper = None
    if cfg.paper_report:
        paper = _paper_report(out, fitted, vaegan, times)
    times["report"] = time.time() - t
    total = time.time() - t_start
    _say(f"finished in {total:.0f} s")
    print(report["summary_text"])
    print(f"\nreport: {report['html']}")
    if paper is not None:
        print(paper["text"])
        print(f"\nthe paper's table: {paper['html']} (Markdown: {paper['md']})")
    return 0


def _paper_report(out: Path, fitted: Path, vaegan: Path, times: dict) -> dict:
    from offline.reports.paper import write_paper_report

    evaluation = json.loads((fitted / "report" / "evaluation.json").read_text())
    fs = vaegan / "facespace.json"
    facespace = json.loads(fs.read_text()) if fs.is_file() else None
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if isinstance(v, (int, float)))
    extra = (
        f"Steps this time (reused steps have no time): {steps}. Fit timing: {json.dumps(evaluation.get('timing', {}))}"
    )
    pictures = {
        "test-faces": (
            fitted / "report" / "figures" / "faces.png",
            "Test faces and their reconstructions (offline, every repeat averaged)",
        ),
        "facespace-samples": (
            vaegan / "samples.png",
            "The face space: held-out faces, their reconstructions, samples from the prior",
        ),
    }
    return write_paper_report(out / "report", evaluation, facespace, extra=extra, pictures=pictures)
