"""Motion correction: time per volume and displacement error on the twin's anatomy, beside peer tools.

The digital twin's EPI-like anatomy (``offline.twin.make_anatomy``, 64x64x36 at 3x3x3.5 mm) is the reference.
Each volume is that head moved by known random parameters (uniform within +-3 mm and +-3 degrees per axis,
drawn independently per volume, so the warm start from the previous volume does not help; ``--motion
trajectory`` uses a smooth random walk instead), imaged by evaluating the reference's cubic B-spline at the
moved positions (zero outside the field of view), with a slow global intensity drift and Gaussian noise.

Reported: ``median_ms`` / ``p95_ms`` (wall clock) for estimate + resample of the brain-mask voxels (the
service's fast path; several passes over the volumes), with ``min_ms`` and ``cpu_median_ms`` (process CPU time,
which other processes on a shared machine inflate far less) and the load average before and after,
``estimate_median_ms``, ``masked_resample_median_ms``, ``resample_5000_voxels_median_ms`` (a decoding mask
the service's size),
``full_resample_median_ms``, and ``mean_error_mm`` / ``max_error_mm``: the distance between where the true and
the estimated motion put each brain voxel, averaged / maximal over voxels and volumes. ``peers`` run the same
volumes (their first ``--peer-volumes``) where installed: python-rtspm (OpenNFT), ANTsPy, SimpleITK. A table
with ratios goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench motion``."""
    p.add_argument("--volumes", type=int, default=100, help="moved volumes (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the volumes (default 3)")
    p.add_argument("--max-mm", type=float, default=3.0, help="largest translation per axis, mm")
    p.add_argument("--max-deg", type=float, default=3.0, help="largest rotation per axis, degrees")
    p.add_argument("--noise", type=float, default=0.01, help="noise SD as a fraction of the mean brain intensity")
    p.add_argument("--drift", type=float, default=0.03, help="global intensity gain change over the run")
    p.add_argument("--motion", choices=["independent", "trajectory"], default="independent")
    p.add_argument("--peer-volumes", type=int, default=12, help="volumes each peer registers (they are slow)")
    p.add_argument("--no-peers", action="store_true", help="skip the peer tools")
    p.add_argument("--oblique-deg", type=float, default=0.0, help="tilt the twin's slab (an oblique affine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sessions", type=int, default=12, help="cross-session registrations to time (default 12)")


def make_motions(n: int, max_mm: float, max_deg: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Known motion parameters ``[n, 6]`` within +-max_mm / +-max_deg."""
    limits = np.array([max_mm] * 3 + [max_deg] * 3)
    if kind == "independent":
        return rng.uniform(-1.0, 1.0, (n, 6)) * limits
    walk = np.cumsum(rng.normal(0.0, 1.0, (n, 6)), axis=0)
    walk -= walk.mean(axis=0)
    return walk / np.abs(walk).max(axis=0) * limits


def make_volumes(reference, affine, brain, motions, noise, drift, rng) -> list[np.ndarray]:
    """The reference head moved by each row of ``motions``, with drift and noise, on the reference grid."""
    from scipy import ndimage

    from service.motion import rigid_matrix

    coef = ndimage.spline_filter(reference.astype(np.float64), order=3, mode="constant")
    ijk = np.indices(reference.shape).reshape(3, -1).astype(np.float64)
    world = affine @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])
    sd = noise * float(reference[brain].mean())
    out = []
    n = len(motions)
    for t, p in enumerate(motions):
        src = np.linalg.inv(affine) @ np.linalg.inv(rigid_matrix(p)) @ world  # value at y is head(T^-1 y)
        vol = ndimage.map_coordinates(coef, src[:3], order=3, mode="constant", prefilter=False)
        gain = 1.0 + drift * t / max(n - 1, 1)
        out.append((gain * vol.reshape(reference.shape) + rng.normal(0.0, sd, reference.shape)).astype(np.float32))
    return out


def displacement_errors(estimated: np.ndarray, true: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per volume and brain voxel, mm between the estimated and true positions ``[T, V]``."""
    from service.motion import rigid_matrix

    return np.stack(
        [np.linalg.norm(((rigid_matrix(e) - rigid_matrix(t)) @ points)[:3], axis=0) for e, t in zip(estimated, true)]
    )


def run(args: argparse.Namespace) -> dict:
    """Register the moved volumes with service.motion (and the peers) and return time per volume and errors."""
    from fmriface.common import progress
    from offline.twin import make_anatomy
    from service.motion import RigidRegistration

    rng = np.random.default_rng(args.seed)
    reference, affine, brain = make_anatomy((64, 64, 36), (3.0, 3.0, 3.5), oblique_deg=args.oblique_deg)
    reference = np.asarray(reference, dtype=np.float32)
    motions = make_motions(args.volumes, args.max_mm, args.max_deg, args.motion, rng)
    volumes = make_volumes(reference, affine, brain, motions, args.noise, args.drift, rng)
    ijk = np.argwhere(brain).T.astype(np.float64)
    points = affine @ np.vstack([ijk, np.ones((1, ijk.shape[1]))])

    reg = RigidRegistration().fit(reference, affine, brain)
    est_ms, res_ms, both_ms, full_ms, cpu_ms, small_ms = [], [], [], [], [], []
    # A decoding mask the size the service uses (~5,000 voxels), for the service's per-volume cost.
    small = np.zeros_like(brain)
    small.flat[np.sort(rng.choice(np.flatnonzero(brain), 5000, replace=False))] = True
    load_before = os.getloadavg()[0]
    estimated = np.zeros_like(motions)
    iterations = []
    with progress(total=args.repeats * len(volumes), desc="fmriface", unit="vol") as bar:
        for rep in range(args.repeats):
            for t, vol in enumerate(volumes):
                c0, t0 = time.process_time(), time.perf_counter()
                p = reg.estimate(vol)
                t1 = time.perf_counter()
                reg.resample(vol, p, brain)
                t2, c2 = time.perf_counter(), time.process_time()
                reg.resample(vol, p, small)
                small_ms.append(1e3 * (time.perf_counter() - t2))
                est_ms.append(1e3 * (t1 - t0))
                res_ms.append(1e3 * (t2 - t1))
                both_ms.append(1e3 * (t2 - t0))
                cpu_ms.append(1e3 * (c2 - c0))
                if rep == 0:
                    estimated[t] = p
                    iterations.append(reg.n_iter_)
                    t3 = time.perf_counter()
                    reg.resample(vol, p)
                    full_ms.append(1e3 * (time.perf_counter() - t3))
                bar.update(1)
    err = displacement_errors(estimated, motions, points)
    result = {
        "median_ms": float(np.median(both_ms)),
        "p95_ms": float(np.percentile(both_ms, 95)),
        "min_ms": float(np.min(both_ms)),
        "cpu_median_ms": float(np.median(cpu_ms)),
        "estimate_median_ms": float(np.median(est_ms)),
        "masked_resample_median_ms": float(np.median(res_ms)),
        "full_resample_median_ms": float(np.median(full_ms)),
        "resample_5000_voxels_median_ms": float(np.median(small_ms)),
        "mean_error_mm": float(err.mean()),
        "max_error_mm": float(err.max()),
        "p95_error_mm": float(np.percentile(err.mean(axis=1), 95)),
        "mean_iterations": float(np.mean(iterations)),
        "volumes": len(volumes),
        "repeats": args.repeats,
        "mask_voxels": int(brain.sum()),
        "grid": [64, 64, 36],
        "voxel_mm": [3.0, 3.0, 3.5],
        "motion": args.motion,
        "oblique_deg": args.oblique_deg,
        "max_mm": args.max_mm,
        "max_deg": args.max_deg,
        "noise": args.noise,
        "drift": args.drift,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "peers": {},
    }
    result["cross_grid"] = cross_grid(reference, affine, brain, points, args.sessions, args.noise, rng)
    result["interpolation"] = interpolation_comparison(reference, affine, brain, small, rng)
    if not args.no_peers:
        result["peers"] = _run_peers(reference, affine, volumes, motions, points, args.peer_volumes, err)
    _print_table(result)
    return result


def draw_rigid(rng: np.random.Generator, max_mm: float, max_deg: float, low: float = 0.25) -> np.ndarray:
    """Rigid parameters whose translation is at most ``max_mm`` long and whose rotation turns at most ``max_deg``
    in all (about a random axis), each magnitude uniform in [``low``, 1] of its limit: the stated range, not the
    per-axis box (drawn per axis, +-10 mm and +-10 degrees reach 17 mm and 17 degrees)."""
    from scipy.spatial.transform import Rotation

    from service.motion import params_from_matrix

    def direction() -> np.ndarray:
        v = rng.normal(size=3)
        return v / np.linalg.norm(v)

    shift = direction() * rng.uniform(low, 1.0) * max_mm
    rotvec = direction() * np.deg2rad(rng.uniform(low, 1.0) * max_deg)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    return np.concatenate([shift, params_from_matrix(m)[3:]])


def rigid_size(params: np.ndarray) -> tuple[float, float]:
    """(translation length in mm, total rotation angle in degrees) of rigid parameters."""
    from service.motion import rigid_matrix

    r = rigid_matrix(params)[:3, :3]
    angle = np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))
    return float(np.linalg.norm(params[:3])), float(angle)


def cross_grid(reference, affine, brain, points, n, noise, rng) -> dict:
    """A later session: the slab rotated up to 8 degrees and shifted up to 10 mm, the head moved up to 10 mm /
    10 degrees (magnitudes, :func:`draw_rigid`), on the same matrix and on another (72x72x40 at 2.7x2.7x3.2 mm). The live volumes are the twin's
    anatomy sampled from the templates on the live grid (``anatomy_on_grid``), not resampled from the reference.
    Reported: the session registration's time and error, and the per-volume tracking on the live grid (a
    further 0-1 mm / 0-1 degree of motion) beside the same-grid figures above."""
    from offline.twin.anatomy import anatomy_on_grid, scanner_affine
    from service.motion import RigidRegistration, params_from_matrix, rigid_matrix
    from service.motion.session import register_session

    out = {}
    sd = noise * float(reference[brain].mean())
    for name, shape, voxel in (
        ("same_matrix", (64, 64, 36), (3.0, 3.0, 3.5)),
        ("other_matrix", (72, 72, 40), (2.7, 2.7, 3.2)),
    ):
        ms, errors, track_ms, track_err, sizes = [], [], [], [], []
        for _ in range(n):
            head, slab_params = draw_rigid(rng, 10.0, 10.0), draw_rigid(rng, 10.0, 8.0)
            sizes.append([*rigid_size(head), *rigid_size(slab_params)])
            slab = rigid_matrix(slab_params) @ scanner_affine(shape, voxel)
            live, _ = anatomy_on_grid(slab, shape, head)
            live = (live + rng.normal(0.0, sd, live.shape)).astype(np.float32)
            result = register_session(reference, affine, live, slab, brain)
            ms.append(1e3 * result.seconds)
            errors.append(float(displacement_errors(result.params[None], head[None], points).mean()))
            # track a moved volume of this session from the offset, as serve does
            moved = params_from_matrix(rigid_matrix(rng.uniform(-1, 1, 6)) @ rigid_matrix(head))
            vol2, _ = anatomy_on_grid(slab, shape, moved)
            vol2 = (vol2 + rng.normal(0.0, sd, vol2.shape)).astype(np.float32)
            reg = RigidRegistration(other_grids=True).fit(reference, affine, brain)
            reg.estimate(live, init=result.params, affine=slab)
            t0 = time.perf_counter()
            p, _ = reg.estimate_resample(vol2, brain, affine=slab)
            track_ms.append(1e3 * (time.perf_counter() - t0))
            track_err.append(float(displacement_errors(p[None], moved[None], points).mean()))
        out[name] = {
            "grid": list(shape),
            "voxel_mm": list(voxel),
            "session_registration_median_ms": round(float(np.median(ms)), 2),
            "session_mean_error_mm": round(float(np.mean(errors)), 4),
            "session_max_error_mm": round(float(np.max(errors)), 4),
            "tracking_median_ms": round(float(np.median(track_ms)), 2),
            "tracking_mean_error_mm": round(float(np.mean(track_err)), 4),
            "sessions": n,
            # the largest offsets drawn: head shift (mm) and turn (deg), slab shift (mm) and turn (deg)
            "largest_drawn": dict(
                zip(("head_mm", "head_deg", "slab_mm", "slab_deg"), np.round(np.max(sizes, axis=0), 2).tolist())
            ),
        }
    return out


def interpolation_comparison(reference, affine, brain, small, rng) -> dict:
    """Trilinear against cubic B-spline resampling of the decoding mask's voxels.

    ``smoothing``: the SD of white noise after resampling at a sub-voxel shift, relative to before (1 = no
    smoothing): trilinear smooths most at half a voxel, so head motion modulates the data's noise; ``error``:
    RMS difference, relative to the brain's mean, between the reference resampled at a known motion and the
    head evaluated there exactly (its cubic spline); ``ms``: the 5,000-voxel resample.
    """
    from scipy import ndimage

    from service.motion import RigidRegistration, rigid_matrix

    regs = {k: RigidRegistration(interpolation=k).fit(reference, affine, brain) for k in ("linear", "cubic")}
    noise = rng.normal(0.0, 1.0, reference.shape).astype(np.float32)
    out: dict[str, dict] = {k: {"smoothing": {}} for k in regs}
    voxel = float(np.linalg.norm(affine[:3, 0]))
    for frac in (0.0, 0.25, 0.5):
        p = np.array([frac * voxel, 0, 0, 0, 0, 0])
        for k, reg in regs.items():
            out[k]["smoothing"][f"{frac:g}_voxel"] = round(
                float(reg.resample(noise, p, brain).std() / noise[brain].std()), 3
            )
    coef = ndimage.spline_filter(reference.astype(np.float64), order=3, mode="constant")
    pts = np.argwhere(small).T.astype(np.float64)
    errs = {k: [] for k in regs}
    times = {k: [] for k in regs}
    for _ in range(20):
        p = np.concatenate([rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)])
        m = np.linalg.inv(affine) @ rigid_matrix(p) @ affine
        exact = ndimage.map_coordinates(coef, m[:3, :3] @ pts + m[:3, 3:], order=3, mode="constant", prefilter=False)
        for k, reg in regs.items():
            t0 = time.perf_counter()
            got = reg.resample(reference, p, small)
            times[k].append(1e3 * (time.perf_counter() - t0))
            errs[k].append(float(np.sqrt(np.mean((got - exact) ** 2))) / float(reference[brain].mean()))
    for k in regs:
        out[k]["relative_rms_error"] = round(float(np.mean(errs[k])), 5)
        out[k]["resample_5000_voxels_ms"] = round(float(np.median(times[k])), 3)
    return out


def _run_peers(reference, affine, volumes, motions, points, n, own_err) -> dict:
    from fmriface.benchmarks.motion_peers import PEERS

    n = min(n, len(volumes))
    out: dict[str, dict] = {}
    for name, peer in PEERS.items():
        print(f"bench motion: running {name} on {n} volumes ...", file=sys.stderr)
        try:
            with np.errstate(all="ignore"):  # rtspm divides by zero in its own convergence check
                params, times = peer(reference, affine, volumes[:n])
        except ImportError as exc:
            out[name] = {"installed": False, "error": f"not installed ({exc})"}
            continue
        except Exception as exc:  # noqa: BLE001 - a failing peer is reported, not fatal
            out[name] = {"installed": True, "error": f"{type(exc).__name__}: {exc}"}
            continue
        err = displacement_errors(params, motions[:n], points)
        out[name] = {
            "median_ms": float(1e3 * np.median(times)),
            "p95_ms": float(1e3 * np.percentile(times, 95)),
            "mean_error_mm": float(err.mean()),
            "max_error_mm": float(err.max()),
            "volumes": n,
            "fmriface_mean_error_mm_same_volumes": float(own_err[:n].mean()),
        }
    return out


def _print_table(r: dict) -> None:
    rows = [("fmriface (estimate + masked resample)", r["median_ms"], r["mean_error_mm"], r["max_error_mm"])]
    for name, peer in r["peers"].items():
        if "median_ms" in peer:
            rows.append(
                (f"{name} (estimate + reslice)", peer["median_ms"], peer["mean_error_mm"], peer["max_error_mm"])
            )
        else:
            print(f"  {name}: {peer['error']}", file=sys.stderr)
    lines = [
        f"{'tool':<42} {'median ms':>10} {'x fmriface':>10} {'mean err mm':>12} {'max err mm':>11}",
    ]
    for name, ms, mean_e, max_e in rows:
        lines.append(f"{name:<42} {ms:>10.2f} {ms / r['median_ms']:>10.1f} {mean_e:>12.4f} {max_e:>11.3f}")
    lines.append(
        f"(fmriface: p95 {r['p95_ms']:.2f} ms, min {r['min_ms']:.2f} ms, CPU time median {r['cpu_median_ms']:.2f} ms,"
        f" load average {r['load_average']};"
        f" estimate {r['estimate_median_ms']:.2f} ms, masked resample "
        f"{r['masked_resample_median_ms']:.2f} ms of {r['mask_voxels']} voxels, full resample "
        f"{r['full_resample_median_ms']:.2f} ms; {r['volumes']} volumes x {r['repeats']} passes, motion "
        f"{r['motion']} within {r['max_mm']} mm / {r['max_deg']} deg)"
    )
    print("\n".join(lines), file=sys.stderr)
