"""Motion-correct a recorded run: write its motion parameters and framewise displacement (motion.tsv).

Realigns every volume of a 4-D NIfTI run to one reference with the service's real-time rigid registration (the
same code the live service runs), and writes ``motion.tsv``: one row per volume, tab-separated, with a header
``trans_x trans_y trans_z rot_x rot_y rot_z fd`` (mm, degrees, framewise displacement in mm; the convention is
documented in ``service.motion``), as MCFLIRT's ``.par`` file serves FSL users. With ``--write-realigned`` the
realigned run is written too (``<run>_realigned.nii.gz``, trilinear).

The reference is ``--reference FILE`` (a 3-D volume on the run's grid), volume ``--reference-volume K`` of the
run, or by default the mean of the run's volumes.

examples:
  fmriface realign sub-01_task-faces_run-01_bold.nii.gz --out qc/run-01
  fmriface realign run.nii.gz --reference-volume 0 --out qc/run --write-realigned
  fmriface realign run.nii.gz --reference bundle/reference.nii.gz --mask brain_mask.nii.gz --out qc/run
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fmriface.common import UsageError, emit, parser, prepare_out_dir, progress

HEADER = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "fd")


@dataclasses.dataclass(frozen=True)
class RealignConfig:
    """Options of ``fmriface realign`` (also from a TOML file with ``--config``)."""

    levels: tuple[int, ...] = (1,)
    n_points: tuple[int, ...] = (3000,)
    max_iter: tuple[int, ...] = (20,)
    tol_mm: float = 2e-3
    warm_start: bool = True
    seed: int = 0
    fd_radius: float = 50.0

    def __post_init__(self) -> None:
        if not (len(self.levels) == len(self.n_points) == len(self.max_iter)) or not self.levels:
            raise ValueError("levels, n_points and max_iter must be non-empty lists of the same length")
        if any(f < 1 or f & (f - 1) for f in self.levels):
            raise ValueError(f"levels must be powers of two, got {list(self.levels)}")
        if min(self.n_points) < 32 or min(self.max_iter) < 1 or self.tol_mm <= 0 or self.fd_radius <= 0:
            raise ValueError("n_points must be >= 32, max_iter >= 1, tol_mm and fd_radius > 0")


def main(argv: list[str] | None = None) -> int:
    p = parser("realign", __doc__)
    p.add_argument("bold", type=Path, help="a 4-D NIfTI run")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--reference", type=Path, help="a 3-D reference volume on the run's grid")
    ref.add_argument("--reference-volume", type=int, help="use volume K of the run (0-based) as the reference")
    p.add_argument(
        "--mask",
        type=Path,
        help="a brain (registration) mask on the run's grid (default: estimated from the reference)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (motion.tsv, realigned run)")
    p.add_argument("--write-realigned", action="store_true", help="also write the realigned run")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    p.add_argument("--config", help="TOML file or preset name with the options of RealignConfig")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = p.parse_args(argv)

    import nibabel as nib
    import numpy as np

    from fmriface.config import load_config, resolve_config
    from service.motion import GridMismatchError, RigidRegistration, framewise_displacement, realign_run

    config = resolve_config(args.config, "realign")
    cfg = load_config(RealignConfig, config, {})

    img = _load(args.bold, "run")
    if len(img.shape) != 4:
        raise UsageError(f"{args.bold} is a {len(img.shape)}-D image of shape {img.shape}; realign needs a 4-D run")
    n = img.shape[3]
    if args.reference_volume is not None and not -n <= args.reference_volume < n:
        raise UsageError(f"--reference-volume {args.reference_volume} is outside the run's {n} volumes")
    reference = None
    if args.reference is not None:
        reference = _on_grid(_load(args.reference, "reference"), img, args.reference, args.bold, GridMismatchError)
    mask = None
    if args.mask is not None:
        mask = _on_grid(_load(args.mask, "mask"), img, args.mask, args.bold, GridMismatchError) > 0
    out = prepare_out_dir(args.out, args.force, inputs=[args.bold, args.reference, args.mask])

    data = np.asarray(img.get_fdata(dtype=np.float32))
    reg = RigidRegistration(
        levels=cfg.levels,
        n_points=cfg.n_points,
        max_iter=cfg.max_iter,
        tol_mm=cfg.tol_mm,
        warm_start=cfg.warm_start,
        seed=cfg.seed,
    )
    with progress(total=n, desc="realign", unit="vol") as bar:
        params, realigned = realign_run(
            data,
            img.affine,
            reference=reference,
            reference_volume=args.reference_volume,
            mask=mask,
            return_realigned=args.write_realigned,
            registration=reg,
            callback=lambda _t: bar.update(1),
        )
    fd = framewise_displacement(params, radius=cfg.fd_radius)
    table = np.column_stack([params, fd])
    np.savetxt(out / "motion.tsv", table, fmt="%.6f", delimiter="\t", header="\t".join(HEADER), comments="")
    written = [out / "motion.tsv"]
    if realigned is not None:
        stem = args.bold.name.removesuffix(".gz").removesuffix(".nii")
        path = out / f"{stem}_realigned.nii.gz"
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        nib.save(nib.Nifti1Image(realigned, img.affine, header), path)
        written.append(path)
    summary = {
        "run": str(args.bold),
        "volumes": n,
        "reference": str(args.reference)
        if args.reference
        else (f"volume {args.reference_volume}" if args.reference_volume is not None else "mean of the run"),
        "max_abs_translation_mm": float(np.abs(params[:, :3]).max()),
        "max_abs_rotation_deg": float(np.abs(params[:, 3:]).max()),
        "mean_fd_mm": float(fd.mean()),
        "max_fd_mm": float(fd.max()),
        "volumes_fd_over_0.5mm": int((fd > 0.5).sum()),
        "written": [str(w) for w in written],
    }
    emit(summary, args.json)
    return 0


def _load(path: Path, what: str):
    import nibabel as nib

    if not path.is_file():
        raise UsageError(f"the {what} file {path} does not exist")
    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for unreadable files
        raise UsageError(f"cannot read the {what} file {path} as NIfTI: {exc}") from None


def _on_grid(img, run_img, path: Path, run_path: Path, error: type[Exception]):
    """The 3-D data of ``img``, checked against the run's grid (shape and affine)."""
    import numpy as np

    shape = img.shape[:3] if len(img.shape) == 4 and img.shape[3] == 1 else img.shape
    if len(shape) != 3 or shape != run_img.shape[:3] or not np.allclose(img.affine, run_img.affine, atol=1e-4):
        raise error(
            f"{path} (shape {img.shape}, affine {np.round(img.affine[:3], 3).tolist()}) is not on the grid of "
            f"{run_path} (shape {run_img.shape[:3]}, affine {np.round(run_img.affine[:3], 3).tolist()})"
        )
    return np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
