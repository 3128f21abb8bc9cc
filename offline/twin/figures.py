"""The README picture: a grid of procedural faces beside slices of a simulated volume with the face voxels.

``faces_and_twin_figure(".readme/faces_and_twin.png")`` renders it from scratch (the default config's brain,
which is the demo preset's, and a few simulated volumes); pass ``twin_dir`` to take the volume and the mask from
a data set written by ``fmriface simulate`` instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["faces_and_twin_figure"]


def _volume_from_plan(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(volume, responsive mask, affine): the 12th volume of the twin's first run, simulated here."""
    from offline.twin.bold import synthesize_run
    from offline.twin.config import SimulateConfig
    from offline.twin.simulate import prepare

    cfg = cfg if cfg is not None else SimulateConfig()
    plan = prepare(cfg)
    run = plan.runs[0]
    codes = dict(zip(plan.stimuli["stim_file"], plan.codes))
    rng = plan.run_rng(run)
    n = min(run.n_volumes, 12)
    data = synthesize_run(
        plan.subject, plan.events[0], codes, n, cfg.paradigm.tr, plan.motion[0][:n], cfg.signal, cfg.noise, rng
    )
    return data[..., n - 1].astype(np.float32), plan.responsive, plan.affine


def _volume_from_dir(twin_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import nibabel as nib

    bold = sorted(twin_dir.glob("sub-*/ses-*/func/*task-faces*_bold.nii.gz"))[0]
    img = nib.load(bold)
    vol = np.asarray(img.dataobj[..., min(10, img.shape[3] - 1)], dtype=np.float32)
    mask_path = next((twin_dir / "derivatives" / "twin").glob("sub-*/responsive_mask.nii.gz"))
    return vol, np.asarray(nib.load(mask_path).dataobj) > 0, img.affine


def faces_and_twin_figure(
    out_path: str | Path = ".readme/faces_and_twin.png",
    twin_dir: str | Path | None = None,
    cfg=None,
    n_faces: int = 24,
    face_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write the README picture and return its path.

    Parameters
    ----------
    out_path : path
        PNG to write (its folder is created).
    twin_dir : path, optional
        A data set written by ``fmriface simulate``; without it one volume is simulated from ``cfg``.
    cfg : SimulateConfig, optional
        Used without ``twin_dir`` (default: ``SimulateConfig()``, the demo preset's grid, signal and noise).
    n_faces, face_size, seed : int
        The face grid (6 columns).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from offline.faces import render_faces, sample_params

    if twin_dir is not None:
        vol, resp, affine = _volume_from_dir(Path(twin_dir))
    else:
        vol, resp, affine = _volume_from_plan(cfg)
    faces = render_faces(sample_params(n_faces, np.random.default_rng(seed)), face_size)
    cols = 6
    rows = int(np.ceil(n_faces / cols))
    grid = np.full((rows * face_size, cols * face_size, 3), 255, np.uint8)
    for i, img in enumerate(faces):
        r, c = divmod(i, cols)
        grid[r * face_size : (r + 1) * face_size, c * face_size : (c + 1) * face_size] = img

    fig = Figure(figsize=(13.5, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1, 4, width_ratios=[2.2, 1, 1, 1])
    ax = fig.add_subplot(gs[0])
    ax.imshow(grid)
    ax.set_title("procedural faces (Male, Smiling, Eyeglasses, hair colour ... from 35 parameters)", fontsize=9)
    ax.axis("off")
    counts = resp.sum(axis=(0, 1)), resp.sum(axis=(0, 2)), resp.sum(axis=(1, 2))
    z, y, x = int(np.argmax(counts[0])), int(np.argmax(counts[1])), int(np.argmax(counts[2]))
    red = ListedColormap([[0, 0, 0, 0], [1.0, 0.15, 0.1, 0.65]])
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    views = (
        ("axial", vol[:, :, z].T, resp[:, :, z].T, zooms[1] / zooms[0]),
        ("coronal", vol[:, y, :].T, resp[:, y, :].T, zooms[2] / zooms[0]),
        ("sagittal", vol[x, :, :].T, resp[x, :, :].T, zooms[2] / zooms[1]),
    )
    hi = float(np.percentile(vol, 99.5))
    for k, (name, img, mask, aspect) in enumerate(views):
        ax = fig.add_subplot(gs[k + 1])
        ax.imshow(img, cmap="gray", origin="lower", vmin=0, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.imshow(mask.astype(int), cmap=red, origin="lower", aspect=aspect, interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(f"twin EPI, {name} (face voxels in red)", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"fmriface digital twin: {vol.shape[0]}x{vol.shape[1]}x{vol.shape[2]} EPI volume with motion and noise; "
        f"{int(resp.sum())} face-responsive voxels (fusiform, occipital, STS)",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
