"""Finish the BIDS copy of a serve run that stopped before it could (a crash, a kill, a full disk).

A serve run keeps its volumes as a BIDS run while it runs (an uncompressed ``_bold.nii``, valid at every moment)
and finishes it when it closes: the ``_bold.nii.gz``, the ``_events.tsv`` and the derivatives (confounds, decoded
trial latents), all from the run's records. This command does the same for a run that never closed; on a run that
did, it writes the same files again. It prints the finished ``_bold.nii.gz`` as one JSON line.

Example:
  fmriface bids-finish runs/run-3f2a9c01de
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fmriface.common import UsageError, parser


def main(argv: list[str] | None = None) -> int:
    """Finish each run folder's BIDS copy; returns 0 (a folder without one is a usage error naming it)."""
    p = parser("bids-finish", __doc__)
    p.add_argument("runs", type=Path, nargs="+", help="run folders (runs/<run_id>)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    from service.live.bids_writer import BidsError, finish_bids

    for run_dir in args.runs:
        if not run_dir.is_dir():
            raise UsageError(f"{run_dir} is not a run folder")
        try:
            bold = finish_bids(run_dir)
        except BidsError as exc:
            raise UsageError(str(exc)) from None
        print(json.dumps({"run_dir": str(run_dir), "bold": str(bold)}))
    return 0
