"""Encode a folder of face images into latents (z_mu) under a trained face space.

Writes ``--out`` (``latents.npy``, float32 [N, L]) and beside it ``<out stem>.ids.txt``, the image names (paths
relative to ``--images``) in row order: the order of ``--list`` when given (one name per line), otherwise the
sorted image files below ``--images``. Images are resized to the face space's size; ``--crop`` first applies
the paper's CelebA crop (central square, central 80%).

Examples
--------
fmriface encode --vaegan runs/vaegan-demo --images twin/stimuli --out latents.npy
fmriface encode --vaegan runs/vaegan-demo --images twin/stimuli --list test_ids.txt --out test.npy
"""

from __future__ import annotations

from pathlib import Path

from fmriface.common import emit, parser


def main(argv: list[str] | None = None) -> int:
    """Encode the images into the face space; save the latents (.npy) and their ids (.ids.txt); returns 0."""
    p = parser("encode", __doc__)
    p.add_argument("--vaegan", required=True, help="face-space folder (train-vaegan output or saved PCA space)")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--list", help="text file: image names relative to --images, one per line, in output order")
    p.add_argument("--out", required=True, help="output .npy file")
    p.add_argument("--crop", action="store_true", help="apply the paper's CelebA crop before resizing")
    p.add_argument("--json", action="store_true", help="print a summary as one JSON line")
    args = p.parse_args(argv)

    import numpy as np

    from offline.facespace import encode_folder, load_facespace

    space = load_facespace(args.vaegan)
    names = None
    if args.list:
        lines = Path(args.list).read_text().splitlines()
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    ids, latents = encode_folder(space, args.images, names, crop=args.crop)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, latents)
    ids_path = out.with_name(out.stem + ".ids.txt")
    ids_path.write_text("".join(f"{i}\n" for i in ids))
    emit({"out": str(out), "ids": str(ids_path), "n": len(ids), "latent_size": int(latents.shape[1])}, args.json)
    return 0
