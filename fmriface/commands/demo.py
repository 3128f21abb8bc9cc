"""The whole loop on the embedded digital twin, from nothing to a report (`--preset tiny|demo`).

Steps, each reused on a rerun when its inputs and config are unchanged (keyed by a config hash):

  1. simulate      the digital-twin subject: a BIDS data set with stimuli and ground truth
  2. face space    the VAE-GAN face space: the shipped reference (models/reference/small-64, trained once with
                   `train-vaegan --config vaegan-converged`; its hashes checked) where the preset says
                   `facespace = "reference"`, else trained on procedural faces (`--train-facespace` forces this)
  3. fit           GLM/window estimates -> voxel selection -> mapping -> evaluation report -> bundle
                   (one test run is held out of the fit for the live replay)
  4. live          `fmriface serve` on a watched folder while the scanner emulator replays the held-out run
                   (with its events, so trial-wise decoding runs) and `fmriface display --headless` saves the
                   frames it shows (under Xvfb where available)
  5. report        HTML with PNGs: test faces beside their live reconstructions, latency per stage, motion,
                   online/offline agreement; a short summary is printed at the end. The paper preset adds the
                   paper's table (report/paper.html and paper.md): both face spaces and mappings beside the twin's
                   ceiling, gender, imagery, the permutation control, accuracy against the number of repeats
                   averaged and the ablations from the twin's ground truth

presets: tiny (<= 3 min), demo (<= 10 min), paper (the paper's scale: 8,000 training faces, 20 test faces x 40
repeats; a converged face space trained once, about an hour, then reused; the fit about 15 minutes; 2 CPU cores)

Examples
--------
fmriface demo                       # the demo preset into ./demo-out
fmriface demo --preset tiny --out /tmp/tiny
fmriface demo --preset paper --out paper-out --no-display
fmriface demo --train-facespace     # train the face space anew (the vaegan preset) instead of the reference
"""

from __future__ import annotations

from pathlib import Path

from fmriface.common import parser
from fmriface.config import load_config, preset_path
from fmriface.demo.steps import DemoConfig, run_demo


def main(argv: list[str] | None = None) -> int:
    """Run the demo's steps into --out, reusing those whose inputs are unchanged, and print the report's summary."""
    p = parser("demo", __doc__)
    p.add_argument(
        "--preset",
        default="demo",
        choices=["tiny", "demo", "paper"],
        help="demo (<= 10 min), tiny (<= 3 min) or paper (about 1.5 h the first time)",
    )
    p.add_argument("--config", default=None, help="a demo TOML (default: configs/demo-<preset>.toml)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (reused on a rerun)")
    p.add_argument("--no-display", action="store_true", help="skip the PsychoPy display (no Xvfb needed)")
    p.add_argument(
        "--train-facespace",
        action="store_true",
        help="train the face space anew with the preset's vaegan preset instead of using the shipped reference",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="the reference face space to use: a shipped name (small-64) or a packed folder (reference.json)",
    )
    args = p.parse_args(argv)

    cfg = load_config(DemoConfig, args.config or preset_path(f"demo-{args.preset}"))
    if args.no_display:
        cfg = DemoConfig(**{**cfg.__dict__, "display": False})
    if args.train_facespace:
        cfg = DemoConfig(**{**cfg.__dict__, "facespace": "train"})
    elif args.reference:
        cfg = DemoConfig(**{**cfg.__dict__, "facespace": "reference", "reference": args.reference})
    return run_demo(cfg, args.out.resolve())
