"""Export a trained face space's decoder and encoder to ONNX, parity-checked against torch.

Writes ``decoder.onnx`` (latent [N, L] -> image [N, 3, H, W] in [0, 1]) and ``encoder.onnx`` (image -> latent),
single files with a dynamic batch axis, plus ``export.json``: the parity check (max abs difference on random and
real latents, <= 1e-4) and the shapes. Works for a ``train-vaegan`` folder and for a saved PCA face space.

Examples
--------
fmriface export --vaegan runs/vaegan-demo --out runs/vaegan-demo/onnx
"""

from __future__ import annotations

import json
import time

from fmriface.common import emit, parser, prepare_out_dir


def main(argv: list[str] | None = None) -> int:
    """Export the face space to ONNX in --out with export.json (the parity check) and print it; returns 0."""
    p = parser("export", __doc__)
    p.add_argument("--vaegan", required=True, help="face-space folder (train-vaegan output or saved PCA space)")
    p.add_argument("--out", required=True, help="output folder for decoder.onnx, encoder.onnx, export.json")
    p.add_argument("--force", action="store_true", help="empty a non-empty --out first")
    p.add_argument("--json", action="store_true", help="print the parity summary as one JSON line")
    args = p.parse_args(argv)

    from offline.facespace import load_facespace

    space = load_facespace(args.vaegan)
    out = prepare_out_dir(args.out, args.force, inputs=[args.vaegan])
    report = space.export_onnx(out)
    report.update(source=str(args.vaegan), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    emit(report, args.json)
    return 0
