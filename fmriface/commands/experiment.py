"""PsychoPy face experiment (training / test / imagery / neurofeedback runs), writes BIDS events.

Waits for the scanner trigger (a key, a serial port, or emulated), then shows the run planned for this
subject, session and run: faces 1 s every 3 s with the one-back task, imagery trials (cue, 12 s imagine,
6 s fixation) or neurofeedback blocks. The subject's run orders are generated once from the stimulus folder
(``train/`` and ``test/``) and a seed, and saved under ``OUT/sourcedata/fmriface/sub-S/``, so a session can
be resumed at any run. Writes ``OUT/sub-S/ses-T/func/..._events.tsv`` row by row and a log; sends ``event``
messages to the service. Escape ends the run and keeps what was recorded.

Examples
--------
fmriface experiment --config experiment-paper --stimuli twin/stimuli --out bids --subject 01 --session 1 --run 1
fmriface experiment --config experiment-practice --stimuli twin/stimuli --out /tmp/practice --run 2
fmriface experiment --config experiment-paper --stimuli twin/stimuli --out bids --plan-only
"""

from __future__ import annotations

import sys
from pathlib import Path

from fmriface.common import check_addresses, emit, parser


def main(argv: list[str] | None = None) -> int:
    """Run one run of the experiment (or, with --plan-only, only make the plan) and print its summary; returns 0."""
    p = parser("experiment", __doc__)
    p.add_argument("--config", help="a TOML file or preset (paper, practice, tiny)")
    p.add_argument("--stimuli", type=Path, help="stimulus folder with train/ and test/ images")
    p.add_argument("--out", type=Path, help="BIDS folder the events (and the saved plan) go to")
    p.add_argument("--subject", help="BIDS subject label (default 01)")
    p.add_argument("--session", type=int, help="session number (default 1)")
    p.add_argument("--run", type=int, help="run number within the session (default 1)")
    p.add_argument("--run-type", choices=["train", "test", "imagery", "feedback"], help="check the planned type")
    p.add_argument("--seed", type=int, help="seed of the subject's plan (used when the plan is first made)")
    p.add_argument("--trigger", choices=["key", "serial", "emulated"], help="trigger source")
    p.add_argument("--trigger-key", help="the trigger key (e.g. 5 or t)")
    p.add_argument("--serial-port", help="serial port of the trigger (e.g. /dev/ttyUSB0)")
    p.add_argument("--tr", type=float, help="TR of the emulated trigger (s)")
    p.add_argument("--emulate-responses", action="store_true", default=None, help="a simulated participant")
    p.add_argument("--service", help="service PULL address for events ('' for none)")
    p.add_argument("--feedback-sub", help="service PUB address read in feedback runs")
    p.add_argument("--fullscr", action="store_true", default=None, help="full-screen window")
    p.add_argument("--max-duration", type=float, help="stop the run after this many seconds (practice)")
    p.add_argument("--plan-only", action="store_true", help="only make (or check) and save the subject's plan")
    p.add_argument("--force", action="store_true", default=None, help="record again a run already recorded")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)

    from fmriface.config import load_config, resolve_config
    from stimulus.experiment import ExperimentConfig, run_experiment

    overrides = {
        "stimuli": args.stimuli, "out": args.out, "subject": args.subject, "session": args.session,
        "run": args.run, "run_type": args.run_type, "plan.seed": args.seed, "trigger.source": args.trigger,
        "trigger.key": args.trigger_key, "trigger.serial_port": args.serial_port, "trigger.tr": args.tr,
        "emulate_responses": args.emulate_responses, "service": args.service, "feedback_sub": args.feedback_sub,
        "window.fullscr": args.fullscr, "max_duration": args.max_duration, "force": args.force,
    }  # fmt: skip
    cfg = load_config(ExperimentConfig, resolve_config(args.config, "experiment"), overrides)
    check_addresses(service=cfg.service, feedback_sub=cfg.feedback_sub)
    result = run_experiment(cfg, plan_only=args.plan_only)
    emit(result, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
