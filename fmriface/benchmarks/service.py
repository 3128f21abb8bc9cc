"""Service latency and throughput: a simulated run written into a watched folder, through `serve`, to a subscriber.

A 64x64x36 EPI-like run (the twin's anatomy with a head-motion random walk and noise) is encoded beforehand as
scanner files in a staging folder; each file is then moved into the watched folder (atomic rename, as a scanner
export does) at TR pace, then all as fast as possible. The real service (`fmriface serve`: watcher -> motion
correction -> ~5,000 mask voxels -> online detrending -> mapping -> decoder.onnx -> ZeroMQ PUB + run records) runs
in its own process, as in a session, and a ZeroMQ subscriber in this one receives every frame. Latency is
measured from the rename to the frame being sent (header ``t.sent``), and per stage from the frame headers. The decoder is an untrained small-64 VAE-GAN exported to ONNX
(same graph and cost as a trained one; ``--decoder matmul`` uses a MatMul graph of the same sizes instead).

``--grids same,other`` runs it on the bundle's grid and on a later session's (another slab and head position,
sampled from the twin's templates on that grid; ``serve`` registers it at its first volume, which the warm-up
leaves out), one after the other: the cross-grid cost per volume, side by side.

``--matrix 64x64x36,104x104x72`` runs it on each acquisition matrix, one after the other (``--tr 2,0.8``: one TR per
matrix, or one for all): the field of view stays the twin's (192 x 192 x 126 mm), so 104x104x72 is a 1.85 x 1.85 x
1.75 mm grid (a modern 2 mm multiband protocol's matrix), and the mask keeps its size in mm^3: ``--voxels`` mask
voxels at 3 x 3 x 3.5 mm, scaled by the voxel volume (5,000 -> about 26,400 at 104x104x72). ``--format slices``
writes one file per slice (Siemens XA interoperability), renamed in back to back; the latency counts from its last
slice's rename. Besides rename -> sent, each run gives the service's own ``file_ready`` -> sent (``ready_*``; for
slices ``file_ready`` is when the watcher saw the volume's first slice).

``--browsers 0,3`` runs the whole benchmark once per count, one after another: with ``N`` > 0 an ``fmriface
dashboard`` (its own process) subscribes to the service's stream and ``N`` headless Chromium browsers show its
page throughout (``fmriface.benchmarks.dashboard.attach_pages``); ``side_by_side`` lists each run's figures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fmriface.common import free_address, progress, write_toml


def add_arguments(p) -> None:
    """Add this benchmark's options to the parser of ``fmriface bench service``."""
    p.add_argument("--n-paced", type=int, default=200, help="volumes of the TR-paced run")
    p.add_argument("--tr", default="0.15", help="TR of the paced run (s); a comma list gives one per --matrix (0.15)")
    p.add_argument("--n-asap", type=int, default=400, help="volumes of the as-fast-as-possible run")
    p.add_argument(
        "--voxels", type=int, default=5000, help="mask voxels at 3 x 3 x 3.5 mm (scaled with the voxel size)"
    )
    p.add_argument(
        "--matrix",
        default="64x64x36",
        help="acquisition matrix XxYxZ, a comma list run one after another (64x64x36,104x104x72: side by side)",
    )
    p.add_argument(
        "--format", default="mosaic", choices=("mosaic", "enhanced", "slices", "nifti"), help="scanner file format"
    )
    p.add_argument("--decoder", default="small-64", choices=("small-64", "matmul"), help="decoder.onnx to use")
    p.add_argument("--warmup", type=int, default=5, help="first volumes of each run left out of the statistics")
    p.add_argument(
        "--browsers",
        default="0",
        help="browsers on a dashboard of the stream, a comma list run one after another (0,3: side by side)",
    )
    p.add_argument(
        "--lsl",
        default="0",
        help="an `fmriface lsl` bridge on the stream, a comma list run one after another (0,1,0,1: without and with, "
        "alternating); with 1 the benchmark reruns itself in a network namespace holding only the loopback (root)",
    )
    p.add_argument("--browser-nice", type=int, default=0, help="CPU priority given up by those browsers (0-19)")
    p.add_argument(
        "--grids",
        default="same",
        help="the run's grid, a comma list run one after another: same (the bundle's) or other (a later "
        "session's slab and head position, registered by serve at its first volume); same,other: side by side",
    )


def _decoder_files(kind: str, out: Path) -> tuple[Path | None, int, int]:
    """(folder with decoder.onnx/encoder.onnx or None for the MatMul fixture, latent size, image size)."""
    if kind == "matmul":
        return None, 1024, 64
    import torch

    from models.config import preset
    from models.export import export_onnx
    from models.vaegan import VAEGAN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = VAEGAN(preset("small-64"))
    export_onnx(model, out)
    return out, model.cfg.latent_size, model.cfg.image_size


def _make_run(reference: np.ndarray, affine: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Volumes [n, X, Y, Z] of the anatomy under a smooth head-motion random walk, plus noise."""
    from service.motion import RigidRegistration

    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=[0.03, 0.03, 0.03, 0.03, 0.03, 0.03], size=(n, 6))
    params = np.clip(np.cumsum(steps, axis=0), -1.5, 1.5)
    reg = RigidRegistration().fit(reference, affine)
    vols = np.empty((n, *reference.shape), np.float32)
    for k in range(n):
        vols[k] = reg.resample(reference, params[k]) + rng.normal(scale=8.0, size=reference.shape)
    return np.clip(vols, 0, None), params


#: The later session of ``--grids other``: its slab and head offsets from the bundle's (drawn once, seed 7, within
#: the ranges of issue 17: 10 mm / 10 degrees for the head, 10 mm / 8 degrees for the slab).
def _other_session() -> tuple[np.ndarray, np.ndarray]:
    from fmriface.benchmarks.motion import draw_rigid

    rng = np.random.default_rng(7)
    return draw_rigid(rng, 10.0, 10.0, low=0.5), draw_rigid(rng, 10.0, 8.0, low=0.5)


def _make_other_grid_run(
    walk: np.ndarray, shape: tuple[int, int, int], seed: int, voxel: tuple[float, float, float] = (3.0, 3.0, 3.5)
) -> tuple[np.ndarray, np.ndarray]:
    """The same head-motion walk in a later session: volumes sampled from the twin's templates on that session's
    own grid (not resampled from the bundle's), with the head at its pose; returns (volumes, the grid's affine)."""
    from offline.twin.anatomy import anatomy_on_grid, scanner_affine
    from service.motion import params_from_matrix, rigid_matrix

    head, slab = _other_session()
    affine = rigid_matrix(slab) @ scanner_affine(shape, voxel)
    rng = np.random.default_rng(seed)
    vols = np.empty((len(walk), *shape), np.float32)
    with progress(total=len(walk), desc="other-grid run", unit="vol") as bar:
        for k, p in enumerate(walk):
            data, _ = anatomy_on_grid(affine, shape, params_from_matrix(rigid_matrix(p) @ rigid_matrix(head)))
            vols[k] = data + rng.normal(scale=8.0, size=shape)
            bar.update(1)
    return np.clip(vols, 0, None), affine


def _stage(vols: np.ndarray, affine: np.ndarray, tr: float, fmt: str, folder: Path, series: int) -> list[list[Path]]:
    """Each volume's files (one, or one per slice), written in ``folder`` to be renamed into the watched folder."""
    from service.scanner.replay import volume_file_name
    from service.scanner.writers import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, v in enumerate(vols):
        path = folder / volume_file_name(fmt, k + 1, series)
        data = np.rint(v) if fmt != "nifti" else v
        paths.append(write_volume(data, affine, path, fmt, acquisition=k + 1, tr=tr, series_number=series))
    return paths


def _serve_phase(
    bundle: Path,
    staged: list[list[Path]],
    watch: Path,
    runs: Path,
    tr: float,
    paced: bool,
    browsers: int = 0,
    browser_nice: int = 0,
    lsl: bool = False,
) -> dict[str, Any]:
    """Run `fmriface serve` (its own process, as in a session) while moving ``staged`` into ``watch`` (every
    ``tr`` s, or back to back); per-frame timings from its frame headers and its end-of-run summary. With
    ``browsers``, a dashboard and that many browsers watch the stream meanwhile; with ``lsl``, an ``fmriface lsl``
    bridge, with an LSL inlet on its motion stream."""
    import contextlib
    import json
    import subprocess
    import sys

    import zmq

    from service import protocol

    watch.mkdir(parents=True, exist_ok=True)
    n = len(staged)
    pub, pull = free_address(), free_address()
    # hwm 1000: the bench's subscriber must see every frame to time it (a display keeps the default 16)
    settings = {"runs": runs, "max_volumes": n, "heartbeat": 0.2, "hwm": 1000}
    settings["watcher"] = {"pattern": "*.dcm,*.nii", "gap_timeout_s": 10.0}
    config = write_toml(watch.parent / f"serve-{watch.name}.toml", settings)
    argv = [sys.executable, "-m", "fmriface", "serve", "--config", str(config), "--bundle", str(bundle)]
    argv += ["--watch", str(watch), "--pub", pub, "--pull", pull, "--json-log"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    sub = protocol.subscriber(ctx, pub, topics=("frame", "status", "end"), hwm=100000)
    renamed: dict[int, float] = {}
    frames: list[tuple[dict[str, Any], float]] = []
    wthread = None
    pages: dict[str, Any] = {"browsers": browsers}
    bridge: dict[str, Any] | None = None
    watchers = contextlib.ExitStack()
    try:
        deadline = time.monotonic() + 60
        while (msg := protocol.recv(sub, 500)) is None or msg.topic != "status":
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the service sent no status within 60 s:\n{proc.communicate()[1][-2000:]}")
        if browsers:
            from fmriface.benchmarks.dashboard import attach_pages

            pages = watchers.enter_context(attach_pages(pub, browsers, watch.parent, runs, browser_nice))
        if lsl:
            from fmriface.lsl.probe import attach_bridge

            bridge = watchers.enter_context(attach_bridge(pub, bundle))

        def writer() -> None:
            t0 = time.time() + 0.2
            for k, paths in enumerate(staged):
                if paced:
                    time.sleep(max(0.0, t0 + k * tr - time.time()))  # absolute schedule
                # a scanner writes each file when it shows it: its last write is now (intake times a volume from
                # its file's last write, and sets aside files written before serve started)
                for path in paths[:-1]:  # slices: back to back, in slice order, as a scanner exports them
                    os.utime(path)
                    os.replace(path, watch / path.name)
                os.utime(paths[-1])
                renamed[k] = time.time()  # the volume is complete in the watched folder from its last rename on
                os.replace(paths[-1], watch / paths[-1].name)

        wthread = threading.Thread(target=writer, name="scanner", daemon=True)
        wthread.start()
        bar = progress(total=n, desc=f"{'paced' if paced else 'asap'} run", unit="vol")
        try:
            while len(frames) < n:
                msg = protocol.recv(sub, 20000)
                if msg is None:
                    raise RuntimeError(f"no frame for 20 s after {len(frames)} of {n}")
                if msg.topic == "frame":
                    frames.append((msg.header, msg.received))
                    bar.update(1)
                elif msg.topic == "end":
                    break
        finally:
            bar.close()
        watchers.close()
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"the service exited with status {proc.returncode}:\n{err[-2000:]}")
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        watchers.close()
        if wthread is not None:
            wthread.join(30)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close(linger=0)
        ctx.term()
    return {"frames": frames, "renamed": renamed, "summary": summary, "pages": pages, "lsl": bridge}


_STAGES = (
    ("detect", "renamed", "file_ready"),  # the watcher sees the file (inotify)
    ("read", "file_ready", "read"),  # read and decoded into a volume
    ("queue", "read", "dequeued"),  # waits for the worker
    ("motion", "dequeued", "motion"),  # registration + masked resample
    ("decode", "motion", "decoded"),  # detrend, mapping, decoder.onnx
    ("send", "decoded", "sent"),  # header, publish
)


def _pct(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 95, 99)}


def _analyse(phase: dict[str, Any], warmup: int) -> dict[str, Any]:
    rows = []
    for header, received in phase["frames"]:
        k = header["volume"]
        if k < warmup:
            continue
        t = {**header["t"], "renamed": phase["renamed"][k], "received": received}
        rows.append(t)
    lat = np.array([1000 * (t["sent"] - t["renamed"]) for t in rows])
    stages = {name: _pct(np.array([1000 * (t[b] - t[a]) for t in rows])) for name, a, b in _STAGES}
    stages["subscriber"] = _pct(np.array([1000 * (t["received"] - t["sent"]) for t in rows]))
    ready = _pct(np.array([1000 * (t["sent"] - t["file_ready"]) for t in rows]))
    return {"latency": _pct(lat), "ready_latency": ready, "stages": stages, "n": len(rows)}


def _browser_counts(text: str) -> list[int]:
    from fmriface.common import UsageError

    try:
        counts = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--browsers must be a comma list of counts like 0,3; got {text!r}") from None
    if not counts or any(c < 0 or c > 8 for c in counts):
        raise UsageError(f"--browsers counts must be 0-8; got {text!r}")
    return counts


def _lsl_list(text: str) -> list[bool]:
    from fmriface.common import UsageError

    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items or any(x not in ("0", "1") for x in items):
        raise UsageError(f"--lsl must be a comma list of 0 and 1 like 0,1,0,1; got {text!r}")
    return [x == "1" for x in items]


def _grid_list(text: str) -> list[str]:
    from fmriface.common import UsageError

    grids = [g.strip() for g in text.split(",") if g.strip()]
    if not grids or any(g not in ("same", "other") for g in grids):
        raise UsageError(f"--grids must be a comma list of same and other; got {text!r}")
    return grids


def _figures(paced: dict[str, Any], asap: dict[str, Any], warmup: int, browsers: int) -> dict[str, Any]:
    """One run's headline figures: paced latency, as-fast-as-possible throughput and latency, the pages."""
    p, a = _analyse(paced, warmup), _analyse(asap, warmup)
    first = min(asap["renamed"].values())
    last_sent = max(h["t"]["sent"] for h, _ in asap["frames"])
    out = {
        "browsers": browsers,
        "p50_ms": p["latency"]["p50"],
        "p95_ms": p["latency"]["p95"],
        "p99_ms": p["latency"]["p99"],
        "volumes_per_s": round(len(asap["frames"]) / (last_sent - first), 1),
        "asap_p50_ms": a["latency"]["p50"],
        "asap_p99_ms": a["latency"]["p99"],
        "ready_p50_ms": p["ready_latency"]["p50"],
        "ready_p99_ms": p["ready_latency"]["p99"],
    }
    if paced.get("lsl") is not None:
        out.update(_lsl_figures(paced, asap, warmup))
    if browsers:
        out["page_frames"] = {"paced": paced["pages"].get("page_frames"), "asap": asap["pages"].get("page_frames")}
        out["pages_got_end"] = {
            "paced": paced["pages"].get("pages_got_end"),
            "asap": asap["pages"].get("pages_got_end"),
        }
        out["page_errors"] = paced["pages"].get("page_errors", 0) + asap["pages"].get("page_errors", 0)
    return out


def _lsl_figures(paced: dict[str, Any], asap: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Frame sent -> its sample at an LSL inlet (ms), paced and as fast as possible, and the bridge's counts."""
    from fmriface.lsl.probe import frame_to_sample_ms

    out: dict[str, Any] = {}
    for name, phase in (("lsl", paced), ("lsl_asap", asap)):
        sent = [h["t"]["sent"] for h, _ in phase["frames"]]
        lag = np.array(frame_to_sample_ms(sent, phase["lsl"]["received"])[warmup:])
        out[f"{name}_ms"] = _pct(lag) | {"max": round(float(lag.max()), 3)}
    out["lsl_bridge"] = {"paced": paced["lsl"]["bridge"], "asap": asap["lsl"]["bridge"]}
    return out


#: The twin's field of view (mm): 64x64x36 at 3 x 3 x 3.5 mm; every --matrix keeps it.
TWIN_FOV_MM = (192.0, 192.0, 126.0)
#: The voxel volume (mm^3) that --voxels counts mask voxels at.
TWIN_VOXEL_MM3 = 3.0 * 3.0 * 3.5


def _matrix_list(text: str) -> list[tuple[int, int, int]]:
    from fmriface.common import UsageError

    try:
        matrices = [tuple(int(n) for n in m.lower().split("x")) for m in text.split(",") if m.strip()]
    except ValueError:
        matrices = []
    if not matrices or any(len(m) != 3 or min(m) < 8 or max(m) > 512 for m in matrices):
        raise UsageError(f"--matrix must be a comma list like 64x64x36,104x104x72 (8 to 512 each); got {text!r}")
    return matrices  # type: ignore[return-value]


def _tr_list(text: str, n: int) -> list[float]:
    from fmriface.common import UsageError

    try:
        trs = [float(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        trs = []
    if len(trs) == 1:
        trs *= n
    if len(trs) != n or not all(np.isfinite(t) and t > 0 for t in trs):
        raise UsageError(f"--tr must be one positive TR or one per --matrix ({n}); got {text!r}")
    return trs


def voxel_size(matrix: tuple[int, int, int]) -> tuple[float, float, float]:
    """The voxel size (mm) of ``matrix`` over the twin's field of view (64x64x36 -> 3 x 3 x 3.5 mm)."""
    return tuple(f / n for f, n in zip(TWIN_FOV_MM, matrix))  # type: ignore[return-value]


def mask_voxels(voxels: int, voxel: tuple[float, float, float]) -> int:
    """The mask voxels of the same volume of cortex as ``voxels`` voxels of 3 x 3 x 3.5 mm."""
    return max(1, round(voxels * TWIN_VOXEL_MM3 / float(np.prod(voxel))))


def _prepare(matrix, args, work: Path, onnx, grids: list[str]) -> dict[str, Any]:
    """One matrix's bundle (in ``work``) and runs: the anatomy on its grid, the head-motion walk, a later session's."""
    from fmriface.benchmarks.synth import make_bundle
    from offline.twin import make_anatomy

    onnx_dir, latent, size = onnx
    voxel = voxel_size(matrix)
    anatomy = make_anatomy(matrix, voxel)
    n_mask = mask_voxels(args.voxels, voxel)
    make_bundle(work, n_voxels=n_mask, latent_size=latent, image_size=size, tr=2.0, anatomy=anatomy, onnx_dir=onnx_dir)
    vols, walk = _make_run(anatomy[0], anatomy[1], args.n_paced + args.n_asap, seed=0)
    runs_of = {"same": (vols, anatomy[1])}
    if "other" in grids:
        runs_of["other"] = _make_other_grid_run(walk, anatomy[0].shape, seed=0, voxel=voxel)
    return {"bundle": work, "runs_of": runs_of, "voxel": voxel, "mask_voxels": n_mask}


def run(args) -> dict[str, Any]:
    """Run the paced and the as-fast-as-possible runs through ``fmriface serve``; returns latency and throughput."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    grids, browsers = _grid_list(args.grids), _browser_counts(args.browsers)  # refused before any work
    bridges = _lsl_list(args.lsl)
    if any(bridges):
        from fmriface.lsl.isolation import isolated

        if not isolated():
            return _rerun_isolated(args)
    matrices = _matrix_list(args.matrix)
    trs = _tr_list(args.tr, len(matrices))
    work = Path(tempfile.mkdtemp(prefix="fmriface-bench-service-"))
    try:
        onnx = _decoder_files(args.decoder, work / "onnx")
        side: list[dict[str, Any]] = []
        first: dict[str, Any] = {}
        i = 0
        for m, (matrix, tr) in enumerate(zip(matrices, trs)):
            prep = _prepare(matrix, args, work / ("bundle" if m == 0 else f"bundle-{m}"), onnx, grids)
            for n_browsers, grid, lsl in [(n, g, b) for n in browsers for g in grids for b in bridges]:
                tag = "" if i == 0 else f"-{i}"  # each run its own staged files, watched folder and run id
                i += 1
                data, aff = prep["runs_of"][grid]
                paced_files = _stage(data[: args.n_paced], aff, tr, args.format, work / f"stage-paced{tag}", 1)
                asap_files = _stage(data[args.n_paced :], aff, tr, args.format, work / f"stage-asap{tag}", 2)
                runs, nice, bundle = work / "runs", args.browser_nice, prep["bundle"]
                paced = _serve_phase(
                    bundle, paced_files, work / f"watch-paced{tag}", runs, tr, True, n_browsers, nice, lsl
                )
                asap = _serve_phase(
                    bundle, asap_files, work / f"watch-asap{tag}", runs, tr, False, n_browsers, nice, lsl
                )
                figures = _figures(paced, asap, args.warmup, n_browsers)
                side.append({"matrix": "x".join(map(str, matrix)), "tr_s": tr, "grid": grid, "lsl": lsl, **figures})
                side[-1]["mask_voxels"] = prep["mask_voxels"]
                side[-1]["ready_p99_pct_of_tr"] = round(figures["ready_p99_ms"] / (10.0 * tr), 2)
                if grid == "other":
                    side[-1]["session"] = paced["summary"].get("session")
                if not first:
                    first = {"paced": paced, "asap": asap, "matrix": matrix, "tr": tr, **prep}
        return _result(args, first, side, onnx)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rerun_isolated(args) -> dict[str, Any]:
    """This benchmark again, in a network namespace holding only the loopback (LSL stays off the network)."""
    import json
    import subprocess
    import sys

    from fmriface.common import UsageError
    from fmriface.lsl.isolation import namespace_missing, run_isolated

    reason = namespace_missing()
    if reason:
        raise UsageError(f"--lsl 1 needs an isolated network namespace: {reason}")
    argv = [sys.executable, "-m", "fmriface", *args.argv]
    if "--json" not in argv:
        argv.append("--json")
    folder = Path(tempfile.mkdtemp(prefix="fmriface-bench-lsl-"))
    try:
        proc = run_isolated(argv, folder, stdout=subprocess.PIPE, text=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the benchmark in its network namespace exited with status {proc.returncode}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "network": "a namespace with only the loopback"}


def _result(args, first: dict[str, Any], side: list[dict[str, Any]], onnx) -> dict[str, Any]:
    """The benchmark's output: the first run's figures and stages, every run's side by side."""
    onnx_dir, latent, size = onnx
    paced, asap = first["paced"], first["asap"]
    p = _analyse(paced, args.warmup)
    a = _analyse(asap, args.warmup)
    return {
        "p50_ms": p["latency"]["p50"],
        "p95_ms": p["latency"]["p95"],
        "p99_ms": p["latency"]["p99"],
        "ready_latency_ms": p["ready_latency"],
        "volumes_per_s": side[0]["volumes_per_s"],
        "browsers": side[0]["browsers"],
        "grid": side[0]["grid"],
        "lsl": side[0].get("lsl_ms") is not None,
        "browser_nice": args.browser_nice,
        **({"side_by_side": side} if len(side) > 1 else {}),
        "stages": p["stages"],
        "asap": {
            "latency_ms": a["latency"],
            "stages": a["stages"],
            "frames_received": len(asap["frames"]),
            "volumes_ok": asap["summary"].get("volumes_ok"),
        },
        "targets": {"p50_ms": 15.0, "p99_ms": 30.0, "volumes_per_s": 200.0},
        "setup": {
            "grid": list(first["matrix"]),
            "voxel_mm": [round(v, 3) for v in first["voxel"]],
            "mask_voxels": first["mask_voxels"],
            "latent_size": latent,
            "image": [size, size, 3],
            "decoder": "small-64 VAE-GAN (untrained weights), ONNX" if onnx_dir else "MatMul+Sigmoid ONNX fixture",
            "format": args.format,
            "tr_paced_s": first["tr"],
            "volumes_paced": args.n_paced,
            "volumes_asap": args.n_asap,
            "warmup_excluded": args.warmup,
            "latency": "file renamed into the watched folder -> frame sent (header t.sent); ready_latency_ms: "
            "file_ready (the watcher saw the volume complete) -> sent",
            "cpu_count": os.cpu_count(),
        },
        "service_summary_paced": {k: paced["summary"].get(k) for k in ("volumes_ok", "volumes_failed", "sent")},
    }
