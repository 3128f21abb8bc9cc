"""VAE-GAN training throughput (images/s) of small-64 and paper-128 on this machine, side by side.

A few full training steps (encoder, decoder and discriminator forward and backward, three RMSProp updates) on
random images, after warm-up steps, on the device ``train-vaegan`` would pick (CUDA when available). The data
pipeline is not included. paper-128 runs with a smaller batch on a CPU (reported) so the bench stays short.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench train``."""
    p.add_argument("--steps", type=int, default=3, help="timed steps per preset (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--batch-small", type=int, default=32, help="batch of small-64 (default 32)")
    p.add_argument("--batch-paper", type=int, default=0, help="batch of paper-128 (default 64 on CUDA, 8 on CPU)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0 = torch's default)")
    p.add_argument("--presets", default="small-64,paper-128", help="comma-separated network presets")


def run(args: argparse.Namespace) -> dict:
    """Time full training steps of each preset on random images; returns images per second per preset."""
    import torch

    from models.config import preset
    from models.vaegan import VAEGAN
    from offline.training.io import setup_device
    from offline.training.losses import LossWeights, train_step

    device, *_ = setup_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    default = {"small-64": args.batch_small, "paper-128": args.batch_paper or (64 if device.type == "cuda" else 8)}
    batches = {name: default.get(name, args.batch_small) for name in args.presets.split(",")}
    # Both the decoder and the discriminator are updated on every step (a margin the losses never leave), so
    # every timed step costs what a full step costs.
    weights = LossWeights(pixel=1.0, margin=1e9)
    result: dict = {}
    for name, batch in batches.items():
        print(f"bench train: {name}, batch {batch} on {device}", file=sys.stderr)
        torch.manual_seed(0)
        model = VAEGAN(preset(name)).to(device).train()
        opts = {
            k: torch.optim.RMSprop(getattr(model, k).parameters(), lr=3e-4)
            for k in ("encoder", "decoder", "discriminator")
        }
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, model.cfg.image_size, model.cfg.image_size, generator=gen).to(device)
        times = []
        for i in range(args.warmup + args.steps):
            t = time.perf_counter()
            train_step(model.encoder, model.decoder, model.discriminator, opts, x, weights, gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        dt = sum(times)
        result[name] = {
            "images_per_s": round(batch * len(times) / dt, 2),
            "device": str(device),
            "batch_size": batch,
            "steps": len(times),
            "seconds_per_step": round(dt / len(times), 3),
        }
        del model, opts
    result["threads"] = torch.get_num_threads()
    return result
