"""Write procedural face images with a CelebA-style attribute table and their generative parameters.

Writes ``face_00000.png``... , ``attributes.csv`` (image_id, then Male, Smiling, Eyeglasses, hair colours, ...
as 1/-1) and ``params.csv`` (image_id, then the continuous parameters in [0, 1]). Same seed, same files.

Examples
--------
fmriface faces --n 1000 --size 64 --seed 0 --out runs/faces64
fmriface faces --n 20000 --size 128 --seed 1 --out runs/faces128 --force
"""

from __future__ import annotations

from fmriface.common import UsageError, emit, parser, prepare_out_dir, progress


def main(argv: list[str] | None = None) -> int:
    """Write --n procedural faces and their attribute table into --out and print each attribute's share."""
    p = parser("faces", __doc__)
    p.add_argument("--n", type=int, required=True, help="number of faces")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (64 or 128; default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --force)")
    p.add_argument("--force", action="store_true", help="empty a non-empty --out first")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if args.size < 16 or args.size > 1024:
        raise UsageError(f"--size must be between 16 and 1024 pixels, got {args.size}")

    from offline.faces import ATTRIBUTE_NAMES, write_faces

    out = prepare_out_dir(args.out, args.force)
    with progress(total=args.n, desc="faces", unit="img") as bar:
        table = write_faces(out, args.n, args.size, args.seed, progress=bar.update)
    share = {name: round(float((table[name] == 1).mean()), 3) for name in ATTRIBUTE_NAMES}
    emit({"out": str(out), "n": args.n, "size": args.size, "seed": args.seed, "attribute_share": share}, args.json)
    return 0
