"""What a methods section needs of one or more serve runs (CRED-nf): feedback, latency, control, exclusions, motion.

Reads each run's records (``runs/<run_id>/``) and prints, one column per run: the control condition (live or
sham, how it was assigned, the sham's source run and its hash), the volumes excluded and why, the trials
decoded, the feedback shown and the participant's own (a sham run records both), the latency per volume from
file to frame sent and from file to screen (the displays' flip acks), framewise displacement, the bundle's hash
and the software versions; then how the feedback signal was computed. Runs given together are shown side by
side (a live and a sham run, for example).

Examples
--------
fmriface report runs/run-live
fmriface report runs/run-live runs/run-sham --json
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from fmriface.common import UsageError, emit, parser


def main(argv: list[str] | None = None) -> int:
    """Print the report of each run folder (text, or one JSON object with --json); returns 0. Record lines that
    cannot be read (a torn last line, damage) are named in the report and warned of on stderr."""
    p = parser("report", __doc__)
    p.add_argument("runs", type=Path, nargs="+", help="run folders (runs/<run_id>)")
    p.add_argument("--fd-threshold", type=float, default=None, help="FD in mm above which volumes are counted (0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object ({runs: [...]})")
    args = p.parse_args(argv)

    from service.live.report import FD_THRESHOLD_MM, damaged_text, format_reports, run_report

    threshold = FD_THRESHOLD_MM if args.fd_threshold is None else args.fd_threshold
    if not (math.isfinite(threshold) and threshold > 0):
        raise UsageError(f"--fd-threshold must be a positive number of mm, got {threshold}")
    reports = [run_report(r, threshold) for r in args.runs]
    for path, r in zip(args.runs, reports):
        if r["damaged_lines"]:
            print(f"fmriface report: warning: {path}: {damaged_text(r)}", file=sys.stderr)
    if args.json:
        emit({"runs": reports}, True)
    else:
        print(format_reports(reports))
    return 0
