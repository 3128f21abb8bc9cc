"""The face experiment: training, test, imagery and neurofeedback runs, timed from the first scanner trigger.

:func:`run_experiment` loads (or makes and saves) the subject's plan, waits for the trigger, then runs a
``draw()`` / ``flip()`` loop: the event on screen for each frame comes from :class:`~stimulus.timeline.Timeline`,
its flip time from ``win.callOnFlip``, the rows of ``events.tsv`` from :class:`~stimulus.timeline.RunRecorder`.
The service gets an ``event`` message at the trigger, at every onset and for the feedback target. Escape ends
the run cleanly; every finished row is already on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.protocol import DEFAULT_PUB, DEFAULT_PULL
from stimulus.orders import PlanConfig, ensure_plan, load_stimuli
from stimulus.records import bids_stem
from stimulus.schedule import RUN_TYPES, TASKS, Timing
from stimulus.triggers import TriggerConfig
from stimulus.window import WindowConfig

__all__ = ["ExperimentConfig", "ExperimentError", "run_experiment", "run_paths"]


class ExperimentError(ValueError):
    """A run that cannot start as asked (named, with the reason)."""

    user_error = True


@dataclass(frozen=True)
class ExperimentConfig:
    """Options of ``fmriface experiment`` (TOML tables ``[plan]``, ``[timing]``, ``[trigger]``, ``[window]``)."""

    stimuli: Path = Path("stimuli")
    out: Path = Path("bids")
    subject: str = "01"
    session: int = 1
    run: int = 1
    run_type: str = ""
    response_keys: tuple[str, ...] = ("1", "2")
    quit_key: str = "escape"
    emulate_responses: bool = False
    service: str = DEFAULT_PULL
    feedback_sub: str = DEFAULT_PUB
    feedback_topic: str = "frame"
    feedback_range: tuple[float, float] = (-1.0, 1.0)
    feedback_show_face: bool = True
    send_target_image: bool = False
    max_duration: float = 0.0
    rush: bool = False
    force: bool = False
    plan: PlanConfig = field(default_factory=PlanConfig)
    timing: Timing = field(default_factory=Timing)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    window: WindowConfig = field(default_factory=WindowConfig)

    def __post_init__(self) -> None:
        if not self.subject.isalnum():
            raise ValueError(f"subject must be a BIDS label (letters and digits), got {self.subject!r}")
        if self.session < 1 or self.run < 1:
            raise ValueError(f"session and run count from 1, got session {self.session}, run {self.run}")
        if self.run_type and self.run_type not in RUN_TYPES:
            raise ValueError(f"run_type must be one of {list(RUN_TYPES)}, got {self.run_type!r}")
        if self.trigger.source == "key" and self.trigger.key in self.response_keys:
            raise ValueError(f"the trigger key {self.trigger.key!r} is also a response key")
        if self.feedback_range[1] <= self.feedback_range[0]:
            raise ValueError(f"feedback_range must be (low, high) with low < high, got {self.feedback_range}")
        if self.feedback_topic not in ("frame", "trial"):
            raise ValueError(f"feedback_topic must be frame or trial, got {self.feedback_topic!r}")


def run_paths(cfg: ExperimentConfig, task: str) -> dict[str, Path]:
    """Where a run's files go: the plan folder, ``events.tsv`` and the log."""
    plan_dir = cfg.out / "sourcedata" / "fmriface" / f"sub-{cfg.subject}"
    stem = bids_stem(cfg.subject, cfg.session, task, cfg.run)
    return {
        "plan": plan_dir,
        "events": cfg.out / f"sub-{cfg.subject}" / f"ses-{cfg.session:02d}" / "func" / f"{stem}_events.tsv",
        "log": plan_dir / f"ses-{cfg.session:02d}" / f"{stem}_log.tsv",
    }


def run_experiment(cfg: ExperimentConfig, plan_only: bool = False) -> dict[str, Any]:
    """Run one run of the experiment (or, with ``plan_only``, only make sure the plan is saved).

    Returns a summary: paths, run type, events written, triggers seen, whether it was aborted, frame drops.
    """
    stimuli = load_stimuli(cfg.stimuli)
    paths = run_paths(cfg, "faces")
    plan, created = ensure_plan(paths["plan"], stimuli, cfg.plan, cfg.timing)
    run_type, trials = plan.run(cfg.session, cfg.run)
    if cfg.run_type and cfg.run_type != run_type:
        raise ExperimentError(
            f"session {cfg.session} run {cfg.run} is a {run_type!r} run in {paths['plan'] / 'plan.json'}, "
            f"not {cfg.run_type!r}; drop --run-type or pick the run the plan has"
        )
    paths = run_paths(cfg, TASKS[run_type])
    summary: dict[str, Any] = {
        "plan": paths["plan"] / "plan.json",
        "plan_created": created,
        "order": paths["plan"] / "orders" / f"ses-{cfg.session:02d}_run-{cfg.run:02d}_order.tsv",
        "run_type": run_type,
        "task": TASKS[run_type],
        "n_trials": len(trials),
    }
    if plan_only:
        return summary
    if paths["events"].exists() and not cfg.force:
        raise ExperimentError(f"{paths['events']} already exists (run recorded); pass --force to record it again")
    from stimulus.experiment_loop import RunContext, run_loop

    ctx = RunContext(cfg=cfg, stimuli_root=stimuli.root, run_type=run_type, trials=trials, paths=paths)
    t_start = time.time()
    summary.update(run_loop(ctx))
    summary.update(events=paths["events"], log=paths["log"], wall_s=round(time.time() - t_start, 3))
    return summary
