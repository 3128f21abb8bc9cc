"""Write a digital-twin subject: a BIDS data set with face stimuli, BOLD runs and the ground truth.

The twin has an EPI-like brain from nilearn's MNI152, face-responsive voxels in occipito-temporal cortex that
read out a hidden code of each face, HRF-convolved BOLD with drift, AR(1) and thermal noise, rigid head motion,
and the paradigm of VanRullen & Reddy (training, test and imagery runs). Ground truth (motion per volume,
responsive voxels, hidden codes, attributes) goes to derivatives/twin/.

Examples
--------
fmriface simulate --preset tiny --out runs/twin-tiny
fmriface simulate --config configs/simulate-demo.toml --out runs/twin-demo --seed 3 --force
"""

from __future__ import annotations

import os
from pathlib import Path

from fmriface.common import UsageError, emit, parser, prepare_out_dir, progress


def main(argv: list[str] | None = None) -> int:
    """Simulate the digital-twin data set into --out and print its summary; returns 0."""
    p = parser("simulate", __doc__)
    p.add_argument("--config", help="TOML file or preset name (simulate-tiny, simulate-demo, simulate-paper)")
    p.add_argument("--preset", choices=["tiny", "demo", "paper"], help="shorthand for --config simulate-PRESET")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --force)")
    p.add_argument("--force", action="store_true", help="empty a non-empty --out first")
    p.add_argument("--seed", type=int, help="seed of stimuli, trial order, noise and motion")
    p.add_argument("--tsnr", type=float, help="temporal SNR in grey matter (overrides noise.tsnr)")
    p.add_argument("--subjects", type=int, help="a group of N twins, OUT/sub-01 ... (overrides group.subjects)")
    p.add_argument(
        "--shared-fraction", type=float, help="share of the face code common to the group (group.shared_fraction)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes building runs (default 0: 1 for small data sets, else up to 2, one per core)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)

    from fmriface.config import load_config, preset_path, resolve_config

    if args.config and args.preset:
        raise UsageError("give --config or --preset, not both")
    config = resolve_config(args.config, "simulate") if args.config else None
    if args.preset:
        config = preset_path(f"simulate-{args.preset}")

    import numpy as np

    from offline.twin import SimulateConfig, prepare, write

    overrides = {"seed": args.seed, "noise.tsnr": args.tsnr, "group.subjects": args.subjects}
    cfg = load_config(SimulateConfig, config, {**overrides, "group.shared_fraction": args.shared_fraction})
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.force:
        prepare_out_dir(out, force=False)  # raises the standard "not empty" error before any work

    def plan_of(member):
        try:
            return prepare(member)
        except ValueError as exc:  # a config that passed the type checks but cannot be simulated
            raise UsageError(f"{config or 'defaults'}: {exc}") from None

    def write_one(member, folder: Path, plan=None) -> dict:
        plan = plan or plan_of(member)
        size = sum(r.n_volumes for r in plan.runs) * int(np.prod(member.grid.shape))
        # Worker processes take a second or two to start: worth it only for data sets of some size.
        workers = args.workers if args.workers > 0 else (min(2, os.cpu_count() or 1) if size > 20_000_000 else 1)
        label = "simulate" if member is cfg else f"simulate sub-{member.subject}"
        with progress(total=len(plan.runs), desc=label, unit="run") as bar:
            return write(plan, folder, progress=bar.update, workers=workers)

    if cfg.group.subjects > 1:
        from offline.twin.group import member_configs, write_group

        try:  # every subject's config checked before anything is written
            members = member_configs(cfg)
        except ValueError as exc:
            raise UsageError(f"{config or 'defaults'}: {exc}") from None
        plan_of(members[-1])
        out = prepare_out_dir(out, args.force, inputs=[config])
        emit(write_group(cfg, out, write_one), args.json)
        return 0
    plan = plan_of(cfg)
    out = prepare_out_dir(out, args.force, inputs=[config])
    emit(write_one(cfg, out, plan), args.json)
    return 0
