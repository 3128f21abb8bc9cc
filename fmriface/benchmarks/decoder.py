"""Decoder latency at batch 1: onnxruntime vs torch eager, small-64 and paper-128 side by side.

Randomly initialised weights (latency does not depend on training). Each preset's decoder is exported to a
temporary single-file ONNX and timed through ``service.live.onnx_session`` (the service's path) and through torch in
eval mode, alternating call by call so both see the same machine load. Reported per preset: median and p99
milliseconds of each, and the speed-up of onnxruntime over torch. With ``--device cuda`` both run on the GPU
(onnxruntime-gpu's CUDA provider, refused if it cannot start) and the largest difference between the CUDA and
the CPU session's images is reported too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench decoder``."""
    p.add_argument("--repeats", type=int, default=200, help="timed calls per preset and runtime (default 200)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes (default 1)")
    p.add_argument("--presets", default="small-64,paper-128", help="comma-separated network presets")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where both runtimes run (default cpu)")


def _stats(ms: list[float]) -> tuple[float, float]:
    a = np.asarray(ms)
    return round(float(np.median(a)), 3), round(float(np.percentile(a, 99)), 3)


def run(args: argparse.Namespace) -> dict:
    """Time each preset's decoder at batch 1 through onnxruntime and torch; returns the timings per preset."""
    import torch

    from models.config import preset
    from models.export import export_decoder
    from models.vaegan import VAEGAN
    from service.live.onnx_session import decode_fn, make_session, warm_up

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result: dict = {"batch": 1, "threads": args.threads, "repeats": args.repeats, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets.split(","):
            print(f"bench decoder: {name}", file=sys.stderr)
            torch.manual_seed(0)
            model = VAEGAN(preset(name)).eval()
            path = export_decoder(model, Path(tmp) / f"{name}.onnx")
            session, provider = make_session(path, args.device, threads=args.threads)
            decode = decode_fn(session)
            warm_up(session, 5)
            rng = np.random.default_rng(0)
            extra = {}
            if args.device == "cuda":
                z16 = rng.uniform(-1, 1, (16, model.cfg.latent_size)).astype(np.float32)
                on_cpu = decode_fn(make_session(path, "cpu", threads=args.threads)[0])(z16)
                extra["max_abs_diff_vs_cpu"] = float(np.abs(decode(z16) - on_cpu).max())
            model.to(device)
            ort_ms, torch_ms = [], []
            with torch.inference_mode():
                for _ in range(5):
                    model.decoder(torch.zeros(1, model.cfg.latent_size, device=device))
                sync()
                for _ in range(args.repeats):
                    z = rng.uniform(-1, 1, (1, model.cfg.latent_size)).astype(np.float32)
                    t0 = time.perf_counter()
                    decode(z)
                    t1 = time.perf_counter()
                    model.decoder(torch.from_numpy(z).to(device)).cpu()  # to host, as the service needs it
                    sync()
                    t2 = time.perf_counter()
                    ort_ms.append((t1 - t0) * 1e3)
                    torch_ms.append((t2 - t1) * 1e3)
            om, op = _stats(ort_ms)
            tm, tp = _stats(torch_ms)
            result[name] = {
                "ort_median_ms": om,
                "ort_p99_ms": op,
                "torch_median_ms": tm,
                "torch_p99_ms": tp,
                "ort_speedup": round(tm / om, 2),
                "provider": provider,
                "decoder_params": sum(p.numel() for p in model.decoder.parameters()),
                "onnx_bytes": path.stat().st_size,
                **extra,
            }
    return result
