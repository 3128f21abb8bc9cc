"""A subject's run orders, generated once from a stimulus list and a seed and saved, so any run can be resumed.

The plan lays out every session the same way (``layout``: the run type of run 1, 2, ...). All training images
are shuffled once and split across the training runs of all sessions, so each is shown once (plus its one-back
repeats); every test run shows every test image ``test_repeats`` times; imagery runs cycle through the
imagery pool; feedback runs cue one target. The plan is written as ``plan.json`` plus one
``ses-XX_run-YY_order.tsv`` per run; a later call loads the saved orders (resuming at run N reuses them) and
refuses to continue if the stimuli or the plan settings changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from stimulus.schedule import (
    NA,
    RUN_TYPES,
    TASKS,
    Timing,
    Trial,
    faces_run,
    feedback_run,
    imagery_run,
    spread_without_neighbours,
)

__all__ = ["PlanConfig", "Stimuli", "Plan", "PlanError", "load_stimuli", "make_plan", "ensure_plan", "order_path"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ORDER_COLUMNS = ("index", "onset", "duration", "trial_type", "stim_file", "oneback")


class PlanError(ValueError):
    """A stimulus folder or saved plan that cannot be used (named, with the reason)."""

    user_error = True


@dataclass(frozen=True)
class PlanConfig:
    """What a subject's plan depends on (besides the stimulus list)."""

    seed: int = 0
    sessions: int = 1
    layout: tuple[str, ...] = ("train", "train", "test", "imagery")
    test_repeats: int = 2
    imagery_trials: int = 10
    imagery_pool: tuple[str, ...] = ()
    feedback_target: str = ""
    feedback_blocks: int = 6

    def __post_init__(self) -> None:
        if self.sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {self.sessions}")
        if not self.layout:
            raise ValueError("layout must list at least one run")
        bad = [r for r in self.layout if r not in RUN_TYPES]
        if bad:
            raise ValueError(f"layout has unknown run types {bad}; known: {list(RUN_TYPES)}")
        for name in ("test_repeats", "imagery_trials", "feedback_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Stimuli:
    """Stimulus files relative to ``root`` (the BIDS ``stimuli/`` folder), split into train and test."""

    root: Path
    train: tuple[str, ...]
    test: tuple[str, ...]

    def digest(self) -> str:
        """A short hash of the train and test file lists: a saved plan is checked against it."""
        blob = json.dumps([list(self.train), list(self.test)]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Plan:
    """A subject's saved run orders: ``runs[(session, run)] = (run_type, trials)``."""

    config: PlanConfig
    stimuli_digest: str
    runs: dict[tuple[int, int], tuple[str, list[Trial]]] = field(default_factory=dict)

    def run(self, session: int, run: int) -> tuple[str, list[Trial]]:
        """The run type and trials of ``(session, run)``; PlanError names the plan's runs when it has no such run."""
        if (session, run) not in self.runs:
            raise PlanError(
                f"session {session} run {run} is not in the plan ({self.config.sessions} sessions of "
                f"{len(self.config.layout)} runs: {', '.join(self.config.layout)})"
            )
        return self.runs[(session, run)]


def load_stimuli(root: str | Path) -> Stimuli:
    """The images under ``root/train`` and ``root/test`` (sorted), names relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise PlanError(f"stimulus folder {root} does not exist")
    found = {}
    for split in ("train", "test"):
        folder = root / split
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        found[split] = tuple(p.relative_to(root).as_posix() for p in files)
    if not found["train"] and not found["test"]:
        raise PlanError(f"stimulus folder {root} has no images under train/ or test/")
    return Stimuli(root, found["train"], found["test"])


def make_plan(stimuli: Stimuli, cfg: PlanConfig, timing: Timing) -> Plan:
    """Every run's trial order for all sessions, deterministic from ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    n_train_runs = cfg.sessions * cfg.layout.count("train")
    train_order = [stimuli.train[i] for i in rng.permutation(len(stimuli.train))]
    chunks = [list(c) for c in np.array_split(np.array(train_order, dtype=object), max(n_train_runs, 1))]
    if n_train_runs and min(len(c) for c in chunks) == 0:
        raise PlanError(f"{len(stimuli.train)} training images cannot fill {n_train_runs} training runs")
    if cfg.layout.count("test") and not stimuli.test:
        raise PlanError(f"the layout has test runs but {stimuli.root}/test holds no images")
    pool = list(cfg.imagery_pool) or list(stimuli.test) or list(stimuli.train)
    missing = sorted(set(pool) - set(stimuli.train) - set(stimuli.test))
    target = cfg.feedback_target or pool[0]
    if cfg.feedback_target and cfg.feedback_target not in set(stimuli.train) | set(stimuli.test):
        missing.append(cfg.feedback_target)
    if missing:
        raise PlanError(f"imagery/feedback faces not found under {stimuli.root}: {missing[:5]}")
    plan = Plan(cfg, stimuli.digest())
    k_train = 0
    for ses in range(1, cfg.sessions + 1):
        for run, run_type in enumerate(cfg.layout, start=1):
            if run_type == "train":
                trials = faces_run(chunks[k_train], "train", timing, rng)
                k_train += 1
            elif run_type == "test":
                order = spread_without_neighbours(list(stimuli.test) * cfg.test_repeats, rng)
                trials = faces_run(order, "test", timing, rng)
            elif run_type == "imagery":
                faces = [pool[i % len(pool)] for i in rng.permutation(max(cfg.imagery_trials, len(pool)))]
                trials = imagery_run(faces[: cfg.imagery_trials], timing)
            else:
                trials = feedback_run(target, cfg.feedback_blocks, timing)
            plan.runs[(ses, run)] = (run_type, trials)
    return plan


def order_path(folder: Path, session: int, run: int) -> Path:
    """The order TSV of one run inside a plan folder (``orders/ses-SS_run-RR_order.tsv``)."""
    return Path(folder) / "orders" / f"ses-{session:02d}_run-{run:02d}_order.tsv"


def save_plan(plan: Plan, folder: str | Path, timing: Timing) -> None:
    """Write ``plan.json`` and one order TSV per run into ``folder``."""
    folder = Path(folder)
    (folder / "orders").mkdir(parents=True, exist_ok=True)
    runs = []
    for (ses, run), (run_type, trials) in sorted(plan.runs.items()):
        path = order_path(folder, ses, run)
        _write_order(path, trials)
        runs.append({"session": ses, "run": run, "run_type": run_type, "task": TASKS[run_type],
                     "order": path.relative_to(folder).as_posix(), "n_trials": len(trials)})  # fmt: skip
    meta = {"config": asdict(plan.config), "timing": asdict(timing), "stimuli_digest": plan.stimuli_digest,
            "runs": runs}  # fmt: skip
    (folder / "plan.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_plan(folder: str | Path) -> tuple[Plan, dict]:
    """Read a saved plan; returns it and the raw ``plan.json`` content."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
        cfg = PlanConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"saved plan {folder / 'plan.json'} cannot be read: {exc}") from None
    plan = Plan(cfg, meta["stimuli_digest"])
    for r in meta["runs"]:
        plan.runs[(r["session"], r["run"])] = (r["run_type"], _read_order(folder / r["order"]))
    return plan, meta


def ensure_plan(folder: str | Path, stimuli: Stimuli, cfg: PlanConfig, timing: Timing) -> tuple[Plan, bool]:
    """The saved plan in ``folder`` (checked against ``stimuli``, ``cfg`` and ``timing``), or a new one.

    Returns ``(plan, created)``. Raises PlanError when a saved plan was made from other stimuli or settings.
    """
    folder = Path(folder)
    if not (folder / "plan.json").exists():
        plan = make_plan(stimuli, cfg, timing)
        save_plan(plan, folder, timing)
        return plan, True
    plan, meta = load_plan(folder)
    if plan.stimuli_digest != stimuli.digest():
        raise PlanError(f"saved plan {folder / 'plan.json'} was made from another stimulus list than {stimuli.root}")
    if plan.config != cfg or meta.get("timing") != asdict(timing):
        raise PlanError(
            f"saved plan {folder / 'plan.json'} was made with other settings (seed, layout or timing); "
            "use the same config to resume, or a new output folder for a new plan"
        )
    return plan, False


def _write_order(path: Path, trials: Sequence[Trial]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(ORDER_COLUMNS)
        for t in trials:
            w.writerow([t.index, f"{t.onset:.3f}", f"{t.duration:.3f}", t.trial_type, t.stim_file, t.oneback])


def _read_order(path: Path) -> list[Trial]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return [
            Trial(
                int(r["index"]),
                float(r["onset"]),
                float(r["duration"]),
                r["trial_type"],
                r["stim_file"] or NA,
                int(r["oneback"]),
            )  # fmt: skip
            for r in rows
        ]
    except (OSError, KeyError, ValueError) as exc:
        raise PlanError(f"saved order {path} cannot be read: {exc}") from None
