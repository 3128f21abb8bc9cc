"""Train the VAE-GAN face space (procedural faces, a CelebA folder or any image folder).

Examples
--------
fmriface train-vaegan --config vaegan-demo --data procedural --out runs/vaegan-demo
fmriface train-vaegan --config configs/vaegan-paper.toml --data celeba:/data/celeba --out runs/paper
fmriface train-vaegan --config vaegan-demo --out runs/vaegan-demo --resume --steps 2000
torchrun --nproc_per_node 4 -m fmriface train-vaegan --config vaegan-paper --data celeba:/data/celeba --out runs/p
"""

from __future__ import annotations

import os
from pathlib import Path

from fmriface.common import emit, parser, prepare_out_dir


def main(argv: list[str] | None = None) -> int:
    """Train (or with --resume, continue) the VAE-GAN face space in --out and print its summary; returns 0.

    Under torchrun only rank 0 prepares --out and prints; the other ranks only make sure the folder exists.
    """
    p = parser("train-vaegan", __doc__)
    p.add_argument("--config", help="TOML file or preset name (vaegan-tiny, vaegan-demo, vaegan-paper)")
    p.add_argument("--data", help="procedural | celeba:PATH | folder:PATH")
    p.add_argument("--out", required=True, help="output folder (checkpoint, metrics, sample grids)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--force", action="store_true", help="empty a non-empty --out first")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, help="train up to this many steps (batches)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--json", action="store_true", help="print the run summary as one JSON line")
    args = p.parse_args(argv)

    from fmriface.config import load_config, resolve_config
    from offline.training.vaegan import TrainConfig, train_vaegan

    config = resolve_config(args.config, "vaegan")
    overrides = {
        "data": args.data,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "device": args.device,
        "threads": args.threads,
    }
    cfg = load_config(TrainConfig, config, overrides)
    out = Path(args.out)
    if args.resume:
        if not (out / "checkpoint.pt").is_file():
            from fmriface.common import UsageError

            raise UsageError(f"--resume: {out / 'checkpoint.pt'} does not exist")
    elif int(os.environ.get("RANK", "0")) == 0:
        data_folder = (args.data or "").split(":", 1)[1] if ":" in (args.data or "") else None
        prepare_out_dir(out, args.force, inputs=[config, data_folder])
    else:
        out.mkdir(parents=True, exist_ok=True)
    summary = train_vaegan(cfg, out, resume=args.resume)
    if summary:
        emit(summary, args.json)
    return 0
