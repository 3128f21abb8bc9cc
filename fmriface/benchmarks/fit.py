"""fmriface fit on the paper-scale twin: wall time, peak memory, per-step times and every pairwise score.

Runs the real command, ``fmriface fit --config fit-paper`` (``--config``), as a child process on a twin
(``--bids``; else one simulated with ``--simulate-config``, default simulate-paper, under ``--work``) and a face
space (``--vaegan``; else one trained with ``--vaegan-config`` under ``--work``). Its progress lines go to
stderr as they come. Reported: ``wall_s`` (the child's wall clock), ``peak_rss_mb`` (its peak resident memory,
from ``wait4``), ``cpu_s`` (its user + system CPU time: other work on the machine lengthens the wall clock
more than this), the load average before and after, ``steps_s`` (realign + estimates, face spaces, voxel selection, mappings, permutation control,
bundle, report), the selection, and the pairwise scores: ``scores[estimate][mapping][space]`` = latent, pixel
and perceptual accuracy (window and GLM estimates, ridge and encoding, VAE-GAN and PCA), ``pairwise`` (the
bundle's estimate and mapping) and ``permutation`` (mean shuffled-pairs accuracy per mapping, chance 0.5); where
the config asks for them (fit-paper does), ``repeats`` (latent accuracy against the repeats averaged) and
``ablations`` (each rung's scores, see docs/paper-scale.md). The time of making a twin or a face space is reported apart (``prepare_s``), never in ``wall_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("latent", "pixel", "perceptual")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fit preset, an existing twin or face space to reuse, and where the work goes."""
    p.add_argument("--config", default="fit-paper", help="fit preset or TOML file (default fit-paper)")
    p.add_argument("--bids", type=Path, help="an existing twin or BIDS data set (default: simulate one)")
    p.add_argument("--vaegan", type=Path, help="an existing face space (default: train one)")
    p.add_argument("--simulate-config", default="simulate-paper", help="twin preset when --bids is not given")
    p.add_argument("--vaegan-config", default="vaegan-demo", help="face-space preset when --vaegan is not given")
    p.add_argument("--work", type=Path, help="folder for the fit's output (and a made twin / face space)")
    p.add_argument("--threads", type=int, help="threads of the fit (default: the config's)")
    p.add_argument("--permutations", type=int, help="shuffles of the permutation control (default: the config's)")


def _child(argv: list[str]) -> tuple[int, float, float, str, float]:
    """Run ``python -m fmriface ARGV``; ``(exit status, wall s, peak RSS MB, stdout, CPU s)``; stderr passes
    through."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "fmriface", *argv], stdout=out, stderr=None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        text = out.read().decode()
    peak = usage.ru_maxrss / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)
    return proc.returncode, wall, peak, text, usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict:
    """Prepare the twin and face space (unless given), run ``fmriface fit`` once and report its wall time, peak
    memory, per-step times and scores."""
    work = args.work or Path(tempfile.mkdtemp(prefix="fmriface-bench-fit-"))
    work.mkdir(parents=True, exist_ok=True)
    prepare_s: dict[str, float] = {}
    bids, vaegan = args.bids, args.vaegan

    def prepare(what: str, argv: list[str], key: str) -> None:  # a twin or a face space, timed apart from the fit
        print(f"bench fit: {what}", file=sys.stderr, flush=True)
        rc, wall, *_ = _child([*argv, "--force"])
        if rc:
            raise RuntimeError(f"fmriface {argv[0]} failed (exit {rc})")
        prepare_s[key] = round(wall, 1)

    if bids is None:
        bids = work / "twin"
        prepare(
            f"simulating {args.simulate_config} into {bids}",
            ["simulate", "--config", args.simulate_config, "--out", str(bids)],
            "simulate_s",
        )
    if vaegan is None:
        vaegan = work / "vaegan"
        prepare(
            f"training {args.vaegan_config} into {vaegan}",
            ["train-vaegan", "--config", args.vaegan_config, "--out", str(vaegan)],
            "vaegan_s",
        )
    out = work / "fit"
    argv = ["fit", "--config", args.config, "--bids", str(bids), "--vaegan", str(vaegan), "--out", str(out)]
    argv += ["--force", "--json"]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.permutations is not None:
        argv += ["--permutations", str(args.permutations)]
    print(f"bench fit: fmriface {' '.join(argv)}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rc, wall, peak, text, cpu = _child(argv)
    if rc:
        raise RuntimeError(f"fmriface fit failed (exit {rc})")
    summary = json.loads(text.strip().splitlines()[-1])
    ev = json.loads((out / "report" / "evaluation.json").read_text())
    scores = {
        est: {
            mapping: {space: {k: round(v[k]["accuracy"], 4) for k in KINDS if k in v} for space, v in per.items()}
            for mapping, per in by_mapping.items()
        }
        for est, by_mapping in ev["details"].items()
    }
    permutation = {m: round(ev["permutation"][m]["mean"], 4) for m in ("ridge", "encoding") if m in ev["permutation"]}
    return {
        "config": args.config,
        "bids": str(bids),
        "vaegan": str(vaegan),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak, 1),
        "cpu_s": round(cpu, 1),
        "steps_s": summary["timing_s"].get("steps_s", {}),
        "fit_total_s": summary["timing_s"].get("total_s"),
        "threads": summary.get("threads"),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min_before": round(load_before, 2) if load_before is not None else None,
        "load_average_1min_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "n_voxels": summary.get("n_voxels"),
        "selection": {k: ev["selection"][k] for k in ("method", "k", "cv") if k in ev["selection"]},
        "estimate": ev.get("estimate"),
        "mapping": ev.get("mapping"),
        "pairwise": ev["pairwise"],
        "scores": scores,
        "permutation": permutation,
        "n_permutations": {m: ev["permutation"][m]["n_permutations"] for m in permutation},
        **_where_it_goes(ev),
        **({"prepare_s": prepare_s} if prepare_s else {}),
        "out": str(out),
    }


def _where_it_goes(ev: dict) -> dict:
    """The repeats curve (latent means) and the ablation rungs' scores, when the fit computed them."""
    out: dict = {}
    rep = ev.get("repeats", {})
    if "curves" in rep:
        out["repeats"] = {
            "counts": rep["counts"],
            **{name: [round(v, 4) for v in c["latent"]["mean"]] for name, c in rep["curves"].items()},
        }
    abl = ev.get("ablations", {})
    if abl and "skipped" not in abl:
        out["ablations"] = {
            rung: {s: {k: round(v[k], 4) for k in KINDS if k in v} for s, v in e.items() if isinstance(v, dict)}
            for rung, e in abl.items()
        }
    return out
