"""Fit the brain-to-face decoder: GLM/window estimates -> voxel selection -> mapping -> evaluation -> bundle.

Reads a BIDS data set laid out like ds001761 (the digital twin from ``fmriface simulate``, ds001761 itself or a
lab's own data) and a trained VAE-GAN (``fmriface train-vaegan``); realigns every run to the mean of the first
run's volumes, estimates each trial (window estimates and GLM betas), selects voxels, fits the ridge and the
paper's encoding-model mappings for the VAE-GAN and a PCA face space, scores them on the test faces, and writes

- ``OUT/bundle/``: what ``fmriface serve`` reads (manifest, reference, mask, mapping, ONNX decoder/encoder,
  attributes);
- ``OUT/report/``: ``report.html`` with figures and ``evaluation.json`` with every number.

Example: ``fmriface fit --config fit-demo --bids twin --vaegan vaegan --out fit``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fmriface.common import UsageError, emit, parser, prepare_out_dir, progress
from fmriface.config import config_to_dict, load_config, resolve_config


def main(argv: list[str] | None = None) -> int:
    """Fit the mapping on a BIDS data set and write the bundle and its report; 0 on success."""
    from service.preprocess import ESTIMATORS

    p = parser("fit", __doc__)
    p.add_argument("--config", help="TOML file or preset name (fit-tiny, fit-demo, fit-paper)")
    p.add_argument("--bids", required=True, type=Path, help="BIDS data set (e.g. the output of fmriface simulate)")
    p.add_argument("--vaegan", required=True, type=Path, help="trained VAE-GAN folder (fmriface train-vaegan)")
    p.add_argument("--out", required=True, type=Path, help="output folder (bundle/ and report/ go there)")
    p.add_argument("--subject", help="subject label, e.g. 01 (default: the first)")
    p.add_argument(
        "--estimate", choices=list(ESTIMATORS), help="trial estimate the bundle's mapping uses (preprocess.estimate)"
    )
    p.add_argument(
        "--mapping",
        choices=["ridge", "encoding", "auto"],
        help="mapping stored in the bundle (auto: the better one in cross-validation on the training runs)",
    )
    p.add_argument("--selection", choices=["auto", "mask", "contrast", "encoding"], help="voxel selection method")
    p.add_argument("--n-voxels", type=int, help="voxels to keep (0: chosen by cross-validation)")
    p.add_argument("--permutations", type=int, help="shuffles of the permutation control")
    p.add_argument("--threads", type=int, help="CPU threads for numpy/torch")
    p.add_argument("--sessions", type=int, help="fit on the training runs of the first N sessions only (0: all)")
    p.add_argument(
        "--align-to",
        type=Path,
        help="a new subject from little data: align it on the shared faces to this subject's bundle (align.to)",
    )
    p.add_argument("--align-sessions", type=int, help="with --align-to: the sessions the bundle is fitted on (1)")
    p.add_argument("--align-method", choices=["ridge", "procrustes"], help="with --align-to: fmralign's method")
    p.add_argument(
        "--align-bundle",
        choices=["auto", "aligned", "fine_tuned", "alone"],
        help="with --align-to: the bundle's map (auto: the best in cross-validation on the training faces)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = p.parse_args(argv)

    from offline.fit import FitConfig

    cfg_path = resolve_config(args.config, "fit")
    cfg = load_config(
        FitConfig,
        cfg_path,
        {
            "subject": args.subject,
            "preprocess.estimate": args.estimate,
            "mapping": args.mapping,
            "selection.method": args.selection,
            "selection.k": args.n_voxels,
            "n_permutations": args.permutations,
            "threads": args.threads,
            "sessions": args.sessions,
            "align.to": str(args.align_to) if args.align_to else None,
            "align.sessions": args.align_sessions,
            "align.method": args.align_method,
            "align.bundle": args.align_bundle,
        },
    )
    if cfg.align.to and not Path(cfg.align.to).is_dir():
        raise UsageError(f"--align-to {cfg.align.to} is not a folder (a bundle of `fmriface fit`)")
    for opt, path in (("--bids", args.bids), ("--vaegan", args.vaegan)):
        if not path.is_dir():
            raise UsageError(f"{opt} {path} is not a folder")
    if not (args.vaegan / "facespace.json").is_file():
        raise UsageError(f"--vaegan {args.vaegan} is not a trained face space (no facespace.json; see train-vaegan)")
    from offline.datasets.bids import load_bids

    load_bids(args.bids, cfg.subject or None)  # a bad data set is refused before anything is written
    out = prepare_out_dir(args.out, args.force, inputs=[args.bids, args.vaegan, cfg_path])

    import os

    quiet = os.environ.get("FMRIFACE_QUIET") == "1"
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            print(f"[fit {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    from offline.fit import run_fit

    log(f"config: {config_to_dict(cfg)}")
    summary = run_fit(cfg, args.bids, args.vaegan, out, log=log, progress=progress)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(summary, args.json)
    return 0
