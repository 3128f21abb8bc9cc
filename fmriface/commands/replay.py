"""Scanner emulator: write a recorded or simulated run into a folder as DICOM or NIfTI, at TR pace.

Replays a run volume by volume into the folder ``fmriface serve`` watches, named and formatted as a scanner's
real-time export (Siemens mosaic, enhanced multi-frame, slice-per-file DICOM, or NIfTI), on an absolute
schedule t0 + k*TR/speed (or as fast as possible). With ``--events-to`` the run's events.tsv is replayed as
``event`` messages to the service at the right times, after a ``trigger`` event at the first volume, so
trial-wise decoding works in simulation. ``--faults`` injects truncated, corrupt, dropped, reordered,
duplicated or delayed volumes to test the service's intake; ``--signal-faults`` writes well-formed files with
wrong data to test its quality assurance: a volume multiplied by ``--spike-factor`` (spike, default x100), one
slice multiplied by ``--slice-factor`` (slice-spike, x10) or set to zero (slice-dropout), an all-zero volume
(zero), a sustained global change by ``--step-factor`` from a volume on (step, x1.05), on volumes drawn with
``--signal-fault-rate`` or listed in ``--signal-fault-volumes`` (0-based, the i-th listed volume gets the i-th
kind). Every fault injected is listed in ``<to>_faults.tsv`` (volume, acquisition, fault, file; with signal
faults also slice, magnitude and quantum: the value of one stored unit of that volume).

Examples
--------
fmriface replay --bids twin/ --subject 01 --session 02 --task faces --run 4 --to /tmp/scanner --format mosaic --speed 4
fmriface replay --run sub-01_task-faces_run-01_bold.nii.gz --to /tmp/scanner --asap --faults drop,truncate
fmriface replay --run run.nii.gz --to /tmp/scanner --signal-faults spike,slice-spike,zero --signal-fault-volumes 30,60,90
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fmriface.common import UsageError, parser, progress


def find_bids_run(bids: Path, subject: str, session: str | None, run: str, task: str | None = None) -> Path:
    """The bold file of a run in a BIDS folder (any task), with a clear error when absent or ambiguous."""
    sub = f"sub-{subject.removeprefix('sub-')}"
    base = bids / sub
    if session:
        base = base / f"ses-{session.removeprefix('ses-')}"
    run_label = f"run-{int(run):02d}" if str(run).isdigit() else f"run-{run}"
    task_part = f"_task-{task}" if task else ""
    hits = sorted(base.glob(f"**/func/*{task_part}_*{run_label}_bold.nii*"))
    if not hits:
        raise UsageError(f"no bold file for {sub} session {session or '-'} {run_label} under {bids}")
    if len(hits) > 1:
        raise UsageError(
            f"several bold files match {run_label}: {', '.join(h.name for h in hits)}; give --session or --task"
        )
    return hits[0]


def read_events(bold: Path) -> list[dict]:
    """Rows of the run's ``_events.tsv`` beside its bold file ([] if there is none)."""
    import csv

    name = bold.name.split("_bold.nii")[0] + "_events.tsv"
    path = bold.with_name(name)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f, delimiter="\t")]


def main(argv: list[str] | None = None) -> int:
    """Replay one run into --to as the scanner's export, paced by its TR (or --tr, --speed, --asap); returns 0.

    Every option is checked before anything is read or written; progress and the faults injected go to stderr.
    """
    p = parser("replay", __doc__)
    p.add_argument(
        "--run",
        required=True,
        help="a 4-D NIfTI run (its _events.tsv beside it is used if present); with --bids, the run number",
    )
    p.add_argument("--bids", type=Path, help="a BIDS folder; the run is chosen by --subject, --session, --run")
    p.add_argument("--subject", default="01")
    p.add_argument("--session", default=None)
    p.add_argument("--task", default=None, help="BIDS task of the run (e.g. faces, imagery)")
    p.add_argument("--to", type=Path, required=True, help="the folder to write into (the service watches it)")
    p.add_argument("--format", default="mosaic", choices=["mosaic", "enhanced", "slices", "nifti"])
    p.add_argument(
        "--vendor",
        default="siemens",
        choices=["siemens", "ge", "philips"],
        help="whose export: slices as Siemens XA interoperability, GE real-time EPI or Philips classic",
    )
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--tr", type=float, help="seconds between volumes (default: the run's TR)")
    pace.add_argument("--speed", type=float, help="pace factor: 2 writes twice as fast as the scanner")
    pace.add_argument("--asap", action="store_true", help="as fast as possible")
    p.add_argument("--faults", default="", help="comma list of truncate,corrupt,drop,reorder,duplicate,delay")
    p.add_argument("--fault-rate", type=float, default=0.05)
    p.add_argument(
        "--signal-faults", default="", help="comma list of spike,slice-spike,slice-dropout,zero,step (data faults)"
    )
    p.add_argument(
        "--signal-fault-rate",
        type=float,
        default=0.02,
        help="probability that a volume gets a signal fault (0.02; never one of the first 5 or one with a file fault)",
    )
    p.add_argument(
        "--signal-fault-volumes",
        default=None,
        help="0-based volumes that get the signal faults instead, e.g. 12,40 (the i-th gets the i-th kind, cycling)",
    )
    p.add_argument("--spike-factor", type=float, default=100.0, help="factor of a spiked volume (100)")
    p.add_argument("--slice-factor", type=float, default=10.0, help="factor of a spiked slice (10)")
    p.add_argument("--step-factor", type=float, default=1.05, help="global factor from a step on (1.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunked", action="store_true", help="write files in chunks (partial files are visible)")
    p.add_argument("--events-to", default=None, help="service PULL address for events, e.g. tcp://127.0.0.1:5557")
    p.add_argument("--max-volumes", type=int, default=None, help="replay only the first N volumes")
    args = p.parse_args(argv)

    import math

    import nibabel as nib
    import numpy as np

    from service.protocol import ProtocolError, check_address
    from service.scanner.replay import FAULT_KINDS, ScannerEmulator

    # every number and address at the edge, before anything is read or written
    for opt, value in (("--tr", args.tr), ("--speed", args.speed)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{opt} {value:g} must be a positive number of {'seconds' if opt == '--tr' else 'times'}")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed} must not be negative")
    if args.max_volumes is not None and args.max_volumes < 1:
        raise UsageError(f"--max-volumes {args.max_volumes} must be at least 1")
    if not 0.0 <= args.fault_rate <= 1.0:
        raise UsageError(f"--fault-rate {args.fault_rate:g} must be between 0 and 1")
    unknown = sorted({f for f in args.faults.split(",") if f} - set(FAULT_KINDS))
    if unknown:
        raise UsageError(
            f"--faults {args.faults!r}: unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}"
        )
    signal_faults = _signal_faults(args)
    if args.to.exists() and not args.to.is_dir():
        raise UsageError(f"--to {args.to} exists and is not a folder")
    if args.events_to is not None:
        try:
            check_address(args.events_to, "--events-to")
        except ProtocolError as exc:
            raise UsageError(str(exc)) from None

    bold = find_bids_run(args.bids, args.subject, args.session, args.run, args.task) if args.bids else Path(args.run)
    if not bold.is_file():
        raise UsageError(f"--run {bold} does not exist")
    try:
        img = nib.load(str(bold))
    except Exception as exc:  # noqa: BLE001 - any nibabel failure is a bad input file
        raise UsageError(f"{bold} is not a readable NIfTI file: {exc}") from None
    if len(img.shape) != 4:
        raise UsageError(f"{bold} is not a 4-D run (shape {img.shape})")
    data = np.asarray(img.dataobj)
    if args.max_volumes is not None:
        data = data[..., : args.max_volumes]
    late = [v for v in signal_faults.volumes or () if v >= data.shape[3]]
    if late:
        raise UsageError(f"--signal-fault-volumes {late} beyond the run's {data.shape[3]} volumes (0-based)")
    tr_run = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 2.0
    tr = tr_run if tr_run > 0 else 2.0
    speed = 1.0
    if args.tr is not None:
        speed = tr / args.tr
    elif args.speed is not None:
        speed = args.speed
    faults = tuple(f for f in args.faults.split(",") if f)
    events = read_events(bold) if args.events_to else None
    emu = ScannerEmulator(
        data=data,
        affine=img.affine,
        tr=tr,
        out_dir=args.to,
        fmt=args.format,
        vendor=args.vendor,
        speed=speed,
        asap=args.asap,
        faults=faults,
        fault_rate=args.fault_rate if faults else 0.0,
        chunked=args.chunked,
        events=events,
        event_address=args.events_to,
        seed=args.seed,
        signal_faults=signal_faults,
    )
    n = emu.n_volumes
    pace = "as fast as possible" if args.asap else f"every {tr / speed:.3f} s (TR {tr:g} s, x{speed:g})"
    print(f"replaying {bold.name}: {n} volumes as {args.vendor} {args.format} into {args.to}, {pace}", file=sys.stderr)
    bar = progress(total=n, desc="replay", unit="vol")
    with emu:
        print(f"trigger (first volume) at {emu.trigger_time or time.time():.3f}", file=sys.stderr)
        done = 0
        while not emu.wait(0.1):
            bar.update(len(emu.written) - done)
            done = len(emu.written)
        bar.update(len(emu.written) - done)
    bar.close()
    if emu.injected:
        kinds: dict[str, int] = {}
        for f in emu.injected:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        print(f"faults injected: {kinds} (listed in {args.to}_faults.tsv)", file=sys.stderr)
    return 0


def _signal_faults(args):
    """The signal faults the options ask for, checked (a UsageError names the bad option)."""
    import math

    from service.scanner.signal import SignalFaults

    kinds = tuple(f for f in args.signal_faults.split(",") if f)
    volumes = None
    if args.signal_fault_volumes is not None:
        try:
            volumes = [int(v) for v in args.signal_fault_volumes.split(",") if v.strip()]
        except ValueError:
            raise UsageError(
                f"--signal-fault-volumes {args.signal_fault_volumes!r} must be a comma list of volume indices"
            ) from None
    for opt, value in (
        ("--spike-factor", args.spike_factor),
        ("--slice-factor", args.slice_factor),
        ("--step-factor", args.step_factor),
    ):
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{opt} {value:g} must be a positive factor")
    if not 0.0 <= args.signal_fault_rate <= 1.0:
        raise UsageError(f"--signal-fault-rate {args.signal_fault_rate:g} must be between 0 and 1")
    try:
        return SignalFaults(
            kinds,
            rate=args.signal_fault_rate if kinds else 0.0,
            volumes=volumes,
            spike_factor=args.spike_factor,
            slice_factor=args.slice_factor,
            step_factor=args.step_factor,
        )
    except ValueError as exc:
        raise UsageError(f"--signal-faults: {exc}") from None
