"""Motion-correct a recorded run: write its motion parameters and framewise displacement (motion.tsv) and its QA
confounds (confounds.tsv).

Realigns every volume of a 4-D NIfTI run to one reference with the service's real-time rigid registration (the
same code the live service runs), and writes ``motion.tsv``: one row per volume, tab-separated, with a header
``trans_x trans_y trans_z rot_x rot_y rot_z fd`` (mm, degrees, framewise displacement in mm; the convention is
documented in ``service.motion``), as MCFLIRT's ``.par`` file serves FSL users. With ``--write-realigned`` the
realigned run is written too (``<run>_realigned.nii.gz``, trilinear).

Every volume is judged by the service's own QA (``service.qa``, docs/qa.md: the same code and default thresholds
as ``serve``), on the mask's voxels (``--mask``, else the registration mask estimated from the reference) after
motion correction: ``confounds.tsv`` holds fMRIPrep's columns ``trans_x`` ... ``rot_z``,
``framewise_displacement``, ``dvars``, ``std_dvars``, ``global_signal`` (``n/a`` where not yet defined, as
fMRIPrep writes the first volume's) and ``censored`` (0/1). An all-zero or constant volume is refused, naming it.

The reference is ``--reference FILE`` (a 3-D volume), volume ``--reference-volume K`` of the run, or by default
the mean of the run's volumes. A reference on another grid (another session's slab: another affine, maybe another
matrix or voxel size, as ``bundle/reference.nii.gz`` for a later session's run) is taken the way ``serve`` and
``fit`` take it: the mean of the run is registered to it with a wide capture (the session offset, reported and
written to ``session.json``), every volume is tracked on its own grid from that offset, ``motion.tsv`` holds the
motion within the session (the offset taken out), and the realigned run is written on the reference's grid
(one interpolation). A registration that fails (no overlap, an empty or constant volume, a flipped slab) is
refused with what was measured.

Examples
--------
  fmriface realign sub-01_task-faces_run-01_bold.nii.gz --out qc/run-01
  fmriface realign run.nii.gz --reference-volume 0 --out qc/run --write-realigned
  fmriface realign run.nii.gz --reference bundle/reference.nii.gz --mask brain_mask.nii.gz --out qc/run
  fmriface realign ses-02_run.nii.gz --reference bundle/reference.nii.gz --out qc/ses-02 --write-realigned
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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


@dataclasses.dataclass
class _Run:
    """What realign works on: the run, its data, the reference and the mask, all checked."""

    img: Any
    data: Any  # float32 [X, Y, Z, T], every value finite
    reference: Any  # float32 [X, Y, Z] on grid_img's grid
    grid_img: Any  # the image whose grid the reference (and mask) lie on: the run, or another session's
    mask: Any  # bool on the reference's grid, or None (estimated from the reference)

    @property
    def across(self) -> bool:
        """Whether the reference lies on another grid (another session's) than the run."""
        return self.grid_img is not self.img


def main(argv: list[str] | None = None) -> int:
    """Realign one run (to its mean, a volume of its own or a reference) and write motion.tsv, FD and the
    realigned run where asked; 0 on success."""
    args = _parse_args(argv)

    from fmriface.config import load_config, resolve_config

    cfg = load_config(RealignConfig, resolve_config(args.config, "realign"), {})
    run = _read_run(args)
    out = prepare_out_dir(args.out, args.force, inputs=[args.bold, args.reference, args.mask])
    tracker, session = _tracker(run, cfg, args)
    params, fd, realigned, qa = _track(tracker, run, args.write_realigned)
    written = _write(out, run, args, params, fd, realigned, session)
    written.append(_write_confounds(out, params, qa))
    summary = _summary(args, run, session, params, fd, written)
    summary["censored_volumes"] = [t for t, q in enumerate(qa) if q["censored"]]
    emit(summary, args.json)
    return 0


def _parse_args(argv: list[str] | None):
    p = parser("realign", __doc__)
    p.add_argument("bold", type=Path, help="a 4-D NIfTI run")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--reference", type=Path, help="a 3-D reference volume (on the run's grid or another session's)")
    ref.add_argument("--reference-volume", type=int, help="use volume K of the run (0-based) as the reference")
    p.add_argument(
        "--mask",
        type=Path,
        help="a brain (registration) mask on the reference's grid (default: estimated from the reference)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (motion.tsv, realigned run)")
    p.add_argument("--write-realigned", action="store_true", help="also write the realigned run")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    p.add_argument("--config", help="TOML file or preset name with the options of RealignConfig")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p.parse_args(argv)


def _read_run(args) -> _Run:
    """The run, the reference (a file on the run's grid or another's, volume K, or the mean) and the mask, checked
    before anything is written."""
    import numpy as np

    from service.motion import GridMismatchError, SessionRegistrationError

    img = _load(args.bold, "run")
    if len(img.shape) != 4:
        raise UsageError(f"{args.bold} is a {len(img.shape)}-D image of shape {img.shape}; realign needs a 4-D run")
    n = img.shape[3]
    if args.reference_volume is not None and not -n <= args.reference_volume < n:
        raise UsageError(f"--reference-volume {args.reference_volume} is outside the run's {n} volumes")
    reference = None
    grid_img = img  # the grid of the reference (and of the mask): the run's, or another session's
    if args.reference is not None:
        ref_img = _load(args.reference, "reference")
        if _same_grid(ref_img, img):
            reference = _on_grid(ref_img, img, args.reference, args.bold, GridMismatchError)
        else:
            reference = _volume_of(ref_img, args.reference)
            grid_img = ref_img
        spread = float(np.percentile(reference, 99) - np.percentile(reference, 1)) if reference.size else 0.0
        if not spread > 0:
            raise SessionRegistrationError(
                f"the reference {args.reference} (shape {reference.shape}) is empty or constant (1-99% range"
                f" {spread:g}): nothing to register to"
            )
    mask = None
    if args.mask is not None:
        mask = _on_grid(_load(args.mask, "mask"), grid_img, args.mask, args.reference or args.bold, GridMismatchError)
        mask = mask > 0
        if not mask.any():
            raise UsageError(f"the mask {args.mask} selects no voxel (all zero): nothing to register on")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    bad = [t for t in range(data.shape[3]) if not np.all(np.isfinite(data[..., t]))]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        raise UsageError(f"{args.bold}: volume(s) {shown} hold NaN or infinite values (0-based); nothing was written")
    if reference is None and args.reference_volume is not None:
        reference = np.asarray(data[..., args.reference_volume], dtype=np.float32)
    elif reference is None:
        reference = data.mean(axis=3, dtype=np.float64).astype(np.float32)
    return _Run(img, data, reference, grid_img, mask)


def _tracker(run: _Run, cfg: RealignConfig, args):
    """The tracker fitted on the reference, and the session registration when the reference lies on another grid
    (the mean of the run registered to it: every volume is then tracked from that offset): ``(tracker, session)``.
    """
    import numpy as np

    from service.motion import MotionTracker, SessionRegistrationError

    tracker = MotionTracker(
        levels=cfg.levels,
        n_points=cfg.n_points,
        max_iter=cfg.max_iter,
        tol_mm=cfg.tol_mm,
        warm_start=cfg.warm_start,
        seed=cfg.seed,
        fd_radius=cfg.fd_radius,
    ).fit(run.reference, run.grid_img.affine, run.mask)
    if not run.across:
        return tracker, None
    try:
        session = tracker.register(run.data.mean(axis=3, dtype=np.float64).astype(np.float32), run.img.affine)
    except SessionRegistrationError as exc:
        raise SessionRegistrationError(
            f"{args.bold} (its mean volume) cannot be registered to {args.reference}: {exc}"
        ) from None
    tracker.set_session(session.params, (run.img.shape[:3], run.img.affine), session.as_record())
    return tracker, session


def _track(tracker, run: _Run, write_realigned: bool):
    """Every volume tracked and judged in order: ``(motion [T, 6] within the session, FD [T], realigned or None,
    QA records)``; the realigned run lies on the reference's grid."""
    import numpy as np

    from service.qa import QualityTracker, RefusedVolumeError, check_volume

    n = run.data.shape[3]
    params, fd = np.zeros((n, 6)), np.zeros(n)
    realigned = np.empty((*run.reference.shape, n), dtype=np.float32) if write_realigned else None
    qa_mask = run.mask if run.mask is not None else tracker.registration_.mask_
    judge = QualityTracker(reference_mean=float(run.reference[qa_mask].mean(dtype=np.float64)))
    records = []
    with progress(total=n, desc="realign", unit="vol") as bar:
        for t in range(n):
            vol = run.data[..., t]
            try:
                check_volume(vol)
            except RefusedVolumeError as exc:
                raise UsageError(
                    f"{run.img.get_filename()}: volume {t} (0-based): {exc}; nothing was written"
                ) from None
            params[t], values = tracker.track(vol, None if realigned is not None else qa_mask, affine=run.img.affine)
            fd[t] = tracker.fd_
            if realigned is not None:
                realigned[..., t] = values
                values = values[qa_mask]
            records.append(judge.update(vol, values, fd[t]))
            bar.update(1)
    return params, fd, realigned, records


def _write_confounds(out: Path, params, qa: list[dict[str, Any]]) -> Path:
    """``confounds.tsv``: fMRIPrep's column names, ``n/a`` where a metric is not defined, and ``censored``."""
    columns = ("framewise_displacement", "dvars", "std_dvars", "global_signal")
    keys = ("fd", "dvars", "std_dvars", "global_signal")
    lines = ["\t".join((*HEADER[:6], *columns, "censored"))]
    for p, q in zip(params, qa):
        values = [f"{v:.6f}" for v in p] + ["n/a" if q[k] is None else f"{q[k]:.6g}" for k in keys]
        lines.append("\t".join((*values, str(int(q["censored"])))))
    path = out / "confounds.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write(out: Path, run: _Run, args, params, fd, realigned, session) -> list[Path]:
    """``motion.tsv``, the realigned run (``--write-realigned``) and ``session.json`` (across grids)."""
    import nibabel as nib
    import numpy as np

    table = np.column_stack([params, fd])
    np.savetxt(out / "motion.tsv", table, fmt="%.6f", delimiter="\t", header="\t".join(HEADER), comments="")
    written = [out / "motion.tsv"]
    img, grid_img = run.img, run.grid_img
    if realigned is not None:
        stem = args.bold.name.removesuffix(".gz").removesuffix(".nii")
        path = out / f"{stem}_realigned.nii.gz"
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        if run.across:  # on the reference's grid: its shape and affine, the run's TR
            header.set_data_shape(realigned.shape)
            header.set_sform(grid_img.affine, code=1)
            header.set_qform(grid_img.affine, code=1)
            zooms = [*np.linalg.norm(grid_img.affine[:3, :3], axis=0), img.header.get_zooms()[3]]
            header.set_zooms(zooms)
        nib.save(nib.Nifti1Image(realigned, grid_img.affine, header), path)
        written.append(path)
    if session is not None:
        import json

        record = {
            **session.as_record(),
            "reference": str(args.reference),
            "reference_grid": {"shape": list(run.reference.shape), "affine": np.round(grid_img.affine, 6).tolist()},
            "run_grid": {"shape": list(img.shape[:3]), "affine": np.round(img.affine, 6).tolist()},
            "motion": "motion.tsv holds the motion within the session: rigid(total) = rigid(motion) @ rigid(offset)",
        }
        (out / "session.json").write_text(json.dumps(record, indent=2) + "\n")
        written.append(out / "session.json")
    return written


def _summary(args, run: _Run, session, params, fd, written: list[Path]) -> dict[str, Any]:
    import numpy as np

    reference = (
        str(args.reference)
        if args.reference
        else (f"volume {args.reference_volume}" if args.reference_volume is not None else "mean of the run")
    )
    registered = {}
    if session is not None:
        record = session.as_record()
        registered = {
            "session_offset": record["offset"],
            "session_registration": {k: v for k, v in record.items() if k != "offset"},
        }
    return {
        "run": str(args.bold),
        "volumes": run.data.shape[3],
        "reference": reference,
        **registered,
        "max_abs_translation_mm": float(np.abs(params[:, :3]).max()),
        "max_abs_rotation_deg": float(np.abs(params[:, 3:]).max()),
        "mean_fd_mm": float(fd.mean()),
        "max_fd_mm": float(fd.max()),
        "volumes_fd_over_0.5mm": int((fd > 0.5).sum()),
        "written": [str(w) for w in written],
    }


def _load(path: Path, what: str):
    import nibabel as nib

    if not path.is_file():
        raise UsageError(f"the {what} file {path} does not exist")
    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for unreadable files
        raise UsageError(f"cannot read the {what} file {path} as NIfTI: {exc}") from None


def _same_grid(img, run_img) -> bool:
    import numpy as np

    shape = img.shape[:3] if len(img.shape) == 4 and img.shape[3] == 1 else img.shape
    return shape == run_img.shape[:3] and bool(np.allclose(img.affine, run_img.affine, atol=1e-4))


def _volume_of(img, path: Path):
    """The 3-D data of a reference on another grid (a 4-D image of one volume is taken as 3-D)."""
    import numpy as np

    shape = img.shape[:3] if len(img.shape) == 4 and img.shape[3] == 1 else img.shape
    if len(shape) != 3:
        raise UsageError(f"the reference {path} has shape {img.shape}; it must be one 3-D volume")
    return np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)


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
