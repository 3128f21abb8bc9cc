"""PsychoPy feedback display (subscribes to frames; headless mode saves frames).

Shows the newest decoded face the service publishes (``--topic frame``: one per volume; ``trial``: one per
finished trial), a fixation cross until the first one; ``--mode feedback`` adds the neurofeedback value as a
thermometer, ``--mode operator`` the run, volume, motion and FD. After each flip that shows a new frame a
``flip`` ack (frame seq, flip time) goes to the service (``--ack``), closing the latency loop. The display
survives service restarts (ZeroMQ reconnects; a new run_id or a seq reset is detected). ``--headless`` runs
under Xvfb (started here when $DISPLAY is unset) and ``--save-frames DIR`` writes every shown screen as PNG
with ``frames.tsv``. It stops on Escape, ``--max-frames``, the service's ``end`` message (unless
``--stay-open``), ``--timeout`` seconds without any message, or ``--duration`` seconds. Prints a summary.

Examples
--------
fmriface display --sub tcp://127.0.0.1:5556 --mode operator
fmriface display --sub tcp://127.0.0.1:5556 --topic trial --mode feedback --fullscr
fmriface display --headless --save-frames out/frames --max-frames 100 --timeout 60 --json
"""

from __future__ import annotations

import sys
from pathlib import Path

from fmriface.common import UsageError, check_addresses, emit, parser


def _size(text: str) -> list[int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 800x600, got {text!r}") from None
    return [w, h]


def main(argv: list[str] | None = None) -> int:
    """Show the service's stream until it ends or a limit is reached, then print the display's summary; returns 0."""
    p = parser("display", __doc__)
    p.add_argument("--config", help="a TOML file or preset (face, operator, feedback, demo)")
    p.add_argument("--sub", help="the service's PUB address (default tcp://127.0.0.1:5556)")
    p.add_argument("--topic", choices=["frame", "trial"], help="frame (per volume) or trial (per trial)")
    p.add_argument("--mode", choices=["face", "feedback", "operator"], help="what to show (default face)")
    ack = p.add_mutually_exclusive_group()
    ack.add_argument("--ack", help="where flip acks go: the service's PULL (default tcp://127.0.0.1:5557)")
    ack.add_argument("--no-ack", action="store_true", help="send no flip acks")
    p.add_argument("--headless", action="store_true", default=None, help="no screen needed (Xvfb)")
    p.add_argument("--save-frames", type=Path, help="save each shown screen as PNG in this folder")
    p.add_argument("--max-frames", type=int, help="stop after showing N frames")
    p.add_argument("--timeout", type=float, help="stop after S seconds without any message")
    p.add_argument("--duration", type=float, help="stop after S seconds in all")
    p.add_argument("--stay-open", action="store_true", help="keep running after the service's end message")
    p.add_argument("--fullscr", action="store_true", default=None, help="full-screen window")
    p.add_argument("--size", type=_size, help="window size, e.g. 800x600")
    p.add_argument("--face-size", type=int, help="face size on screen in pixels")
    p.add_argument("--curve-secret", type=Path, help="CurveZMQ: this display's secret key file (fmriface keys)")
    p.add_argument("--curve-server-key", type=Path, help="CurveZMQ: the service's public key file")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)

    from fmriface.config import load_config, resolve_config
    from stimulus.display import DisplayConfig, run_display

    overrides = {
        "sub": args.sub, "topic": args.topic, "mode": args.mode, "ack": "" if args.no_ack else args.ack,
        "headless": args.headless, "save_frames": args.save_frames, "max_frames": args.max_frames,
        "timeout": args.timeout, "duration": args.duration, "exit_on_end": False if args.stay_open else None,
        "curve_secret": args.curve_secret, "curve_server_key": args.curve_server_key,
        "window.fullscr": args.fullscr, "window.size": args.size, "window.face_size": args.face_size,
    }  # fmt: skip
    cfg = load_config(DisplayConfig, resolve_config(args.config, "display"), overrides)
    check_addresses(sub=cfg.sub, ack=cfg.ack)
    if cfg.headless and cfg.window.fullscr:
        raise UsageError("--headless and --fullscr exclude each other")
    emit(run_display(cfg), args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
