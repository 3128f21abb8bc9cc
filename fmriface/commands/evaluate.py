"""Score the authors' released ds001761 decoders: pairwise accuracy of the test faces, as in the paper.

Reads a subject's ``ROI_VAEGAN.mat``, ``test_patterns.mat`` and ``test_images.mat`` (MATLAB v7.3 / HDF5) from
the OpenNeuro ds001761 derivatives, decodes the test patterns as the authors did (``z = (W W^T)^-1 W y``, bias
dropped) and prints the pairwise identification accuracy (chance 50 %; the paper reports above 95 %), plus
imagery and the PCA baseline when their files are present.

Example: ``fmriface evaluate --ds001761-derivatives ds001761/derivatives --subject 1 --out sub-01.json``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fmriface.common import UsageError, emit, parser
from fmriface.config import load_config, resolve_config


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``fmriface evaluate``."""

    latent_size: int = 1024
    bias: Literal["last", "first"] = "last"

    def __post_init__(self) -> None:
        if self.latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {self.latent_size}")


def main(argv: list[str] | None = None) -> int:
    """Evaluate the released model on one ds001761 subject; print the result (also to --out); returns 0."""
    p = parser("evaluate", __doc__)
    p.add_argument("--config", help="TOML file or preset name with the options below")
    p.add_argument("--ds001761-derivatives", required=True, type=Path, help="the data set's derivatives folder")
    p.add_argument("--subject", required=True, help="subject number (1-4) or label (sub-01)")
    p.add_argument("--latent-size", type=int, help="latent size of the released model (default 1024)")
    p.add_argument("--bias", choices=["last", "first"], help="row of W that holds the bias (default last)")
    p.add_argument("--out", type=Path, help="also write the result to this JSON file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    cfg_path = resolve_config(args.config, "evaluate")
    cfg = load_config(EvaluateConfig, cfg_path, {"latent_size": args.latent_size, "bias": args.bias})

    from offline.decoding.released import evaluate_subject

    if not args.ds001761_derivatives.is_dir():
        raise UsageError(f"--ds001761-derivatives {args.ds001761_derivatives} is not a folder")
    result = evaluate_subject(args.ds001761_derivatives, args.subject, cfg.latent_size, cfg.bias)
    result.pop("decoded_latents", None)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    emit(result, args.json)
    return 0
