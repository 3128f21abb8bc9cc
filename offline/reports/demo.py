"""The final report of ``fmriface demo``: what the live loop decoded, how fast, and how it agrees with offline.

Reads the live run's record (``runs/<run_id>/``: volumes.jsonl, trials.tsv, trial_latents.npy, flips.jsonl),
the messages the demo received, the bundle and the fit's evaluation, and writes ``report/index.html`` with PNG
figures and ``report/summary.json``:

- the held-out test faces beside their face-space reconstruction (the ceiling) and their live reconstruction
  (the mean of the ``trial`` images the service published for that face);
- latency per stage (file ready -> read -> dequeued -> motion -> decoded -> sent) and end to end, and the
  display's flip acks (file ready -> on screen) where a display ran;
- the motion the service estimated beside the twin's ground truth;
- online/offline agreement: the service's trial latents against the same trials' latents computed offline from
  the whole run (realigned with the same motion correction, the same window estimate, the same mapping).
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from offline.decoding.evaluate import pairwise_accuracy  # noqa: E402
from service.bundle import Bundle, load_bundle  # noqa: E402
from service.live.runlog import read_volumes  # noqa: E402
from service.preprocess import PreprocessSpec  # noqa: E402

__all__ = ["write_demo_report", "offline_trial_latents"]

_STAGES = ("file_ready", "read", "dequeued", "motion", "decoded", "sent")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [dict(r) for r in csv.DictReader(f, delimiter="\t")]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _load_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _decode(bundle: Bundle, latents: np.ndarray) -> np.ndarray:
    """Images [N, H, W, 3] in [0, 1] from the bundle's decoder.onnx (the service's session helpers)."""
    from service.live.onnx_session import decode_fn, make_session

    session, _ = make_session(bundle.decoder_path, device="cpu", threads=0)
    return np.clip(decode_fn(session)(latents).transpose(0, 2, 3, 1), 0, 1)


def offline_trial_latents(
    bundle: Bundle, holdout: Path, trials: list[dict[str, str]], spec: PreprocessSpec
) -> np.ndarray:
    """Latents of ``trials`` computed offline from the whole held-out run, as ``fmriface fit`` computes them.

    The run is realigned to the bundle's reference with the service's own motion correction (warm-started
    volume to volume; a run on another session's grid registered to the reference first and tracked from that
    offset, as the fit does: :func:`offline.decoding.estimates.track_run`), its mask voxels detrended over the
    whole run (motion within the session) with the live run's :class:`~service.preprocess.PreprocessSpec` (the
    model the fit uses), each trial's window estimate taken with :func:`service.window.window_estimate`, and
    mapped with the bundle's linear map. The live service fits the same model causally, volume by volume.
    """
    import nibabel as nib

    from offline.decoding.estimates import register_run_session, track_run
    from service.motion import MotionTracker
    from service.window import window_estimate

    img = nib.load(str(holdout))
    data = np.asarray(img.dataobj, dtype=np.float32)
    # a fresh fit, resampling with the kernel the live run used (the bundle's, unless serve was told otherwise)
    tracker = MotionTracker(interpolation=spec.interpolation).fit(bundle.reference, bundle.affine)
    offset = None  # on the bundle's grid: the first volume starts at 0
    if tracker.grid_of(data.shape[:3], img.affine) != "reference":
        offset = register_run_session(tracker, data, img.affine, name=holdout.name).params
    x, motion, _ = track_run(tracker, data, img.affine, bundle.mask, offset)
    resid = spec.detrend(x, motion)
    est = window_estimate(resid, np.array([float(t["onset"]) for t in trials]), bundle.tr, spec.window)
    return ((est - bundle.x_mean) / bundle.x_scale) @ bundle.weights + bundle.bias


def _faces_figure(path: Path, stims: list[str], originals, ceiling, live) -> None:
    n = len(stims)
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n + 1.2, 3.8), squeeze=False)
    rows = (("stimulus", originals), ("face space", ceiling), ("live fMRI", live))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle("Held-out test faces and their live reconstructions from the replayed run", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_figure(path: Path, vols: list[dict[str, Any]], flips: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [v for v in vols if v.get("status") == "ok" and all(s in v.get("t", {}) for s in _STAGES)]
    stages = {}
    for a, b in zip(_STAGES[:-1], _STAGES[1:]):
        stages[f"{a}->{b}"] = np.array([1000 * (v["t"][b] - v["t"][a]) for v in ok])
    e2e = np.array([1000 * (v["t"]["sent"] - v["t"]["file_ready"]) for v in ok])
    screen = np.array([1000 * float(f["e2e_s"]) for f in flips if f.get("e2e_s") is not None])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, vals in stages.items():
        if len(vals):
            axes[0].hist(vals, bins=40, histtype="step", label=f"{name} (p50 {np.median(vals):.1f} ms)")
    axes[0].set_xlabel("ms")
    axes[0].set_title("per stage")
    axes[0].legend(fontsize=7)
    if len(e2e):
        axes[1].hist(e2e, bins=40, alpha=0.7, label=f"file ready -> published (p50 {np.median(e2e):.1f} ms)")
    if len(screen):
        axes[1].hist(screen, bins=40, alpha=0.5, label=f"file ready -> on screen (p50 {np.median(screen):.1f} ms)")
    axes[1].set_xlabel("ms")
    axes[1].set_title("end to end")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

    def pct(v: np.ndarray) -> dict[str, float] | None:
        return (
            None
            if not len(v)
            else {q: round(float(np.percentile(v, p)), 2) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}
        )

    return {"stages_ms": {k: pct(v) for k, v in stages.items()}, "published_ms": pct(e2e), "on_screen_ms": pct(screen)}


def _motion_figure(path: Path, vols: list[dict[str, Any]], truth: np.ndarray | None) -> dict[str, Any]:
    rows = sorted((v["volume"], v["motion"]) for v in vols if v.get("status") == "ok" and v.get("motion"))
    est = np.array([m for _, m in rows]) if rows else np.zeros((0, 6))
    idx = np.array([i for i, _ in rows], int)
    labels = ("x", "y", "z")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    info: dict[str, Any] = {"volumes": len(rows)}
    for j in range(3):
        for ax, off, unit in ((axes[0], 0, "mm"), (axes[1], 3, "deg")):
            if len(est):
                ax.plot(idx, est[:, off + j] - est[:, off + j].mean(), label=f"{labels[j]} service")
            if truth is not None and len(idx):
                tr_ = truth[idx, off + j]
                ax.plot(idx, tr_ - tr_.mean(), "--", color=ax.lines[-1].get_color(), label=f"{labels[j]} truth")
            ax.set_xlabel("volume")
            ax.set_ylabel(unit + " (demeaned)")
    axes[0].set_title("translation")
    axes[1].set_title("rotation")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if truth is not None and len(est) > 2:
        d = (est - est.mean(0)) - (truth[idx] - truth[idx].mean(0))
        info["rms_error_vs_truth"] = {"mm": round(float(np.sqrt((d[:, :3] ** 2).mean())), 4),
                                      "deg": round(float(np.sqrt((d[:, 3:] ** 2).mean())), 4)}  # fmt: skip
    return info


def _truth_motion(twin: Path, holdout: Path) -> np.ndarray | None:
    stem = holdout.name.split("_bold.nii")[0]
    hits = sorted((twin / "derivatives" / "twin").rglob(f"{stem}_motion.tsv"))
    if not hits:
        return None
    rows = _read_tsv(hits[0])
    keys = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
    return np.array([[float(r[k]) for k in keys] for r in rows])


def write_demo_report(
    out: Path, bundle: Path, fit_dir: Path, live: Any, holdout: Path, times: dict[str, float | None]
) -> dict[str, Any]:
    """Write ``out/report/index.html`` + PNGs + ``summary.json``; returns paths and the printed summary."""
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    b = load_bundle(bundle)
    twin = out / "twin"
    run = Path(live.run_dir)
    vols = read_volumes(run)
    trials = _read_tsv(run / "trials.tsv")
    flips = _read_jsonl(run / "flips.jsonl")
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else {}
    summary: dict[str, Any] = {"holdout_run": holdout.name, "volumes": live.n_volumes, "times_s": times}
    summary["bids_copy"] = manifest.get("bids")  # where the live run's BIDS copy is: its root and its _bold.nii.gz

    # faces: mean live trial image per test stimulus, beside the stimulus and the face-space ceiling
    by_stim: dict[str, list[np.ndarray]] = {}
    for m in live.messages.get("trial", []):
        if m.header.get("trial_type") == "test_face" and m.header.get("stim_id"):
            by_stim.setdefault(m.header["stim_id"], []).append(m.image().astype(np.float32) / 255.0)
    stims = sorted(by_stim)
    if stims:
        originals = [_load_png(twin / "stimuli" / s) for s in stims]
        ceiling = _decode(b, np.stack([b.stimulus_latent(s) for s in stims]))
        live_imgs = [np.mean(by_stim[s], axis=0) for s in stims]
        _faces_figure(rep / "faces.png", stims, originals, ceiling, live_imgs)

    # live pairwise decoding from the run record's trial latents, averaged over repeats
    lat_path = run / "trial_latents.npy"
    test_rows = [(i, t) for i, t in enumerate(trials) if t.get("trial_type") == "test_face"]
    if lat_path.is_file() and test_rows:
        lat = np.load(lat_path)
        groups: dict[str, list[np.ndarray]] = {}
        for _, t in test_rows:
            groups.setdefault(t["stim_id"], []).append(lat[int(t["latent_row"])])
        ids = sorted(groups)
        pred = np.stack([np.mean(groups[s], axis=0) for s in ids])
        true = np.stack([b.stimulus_latent(s) for s in ids])
        if len(ids) >= 2:
            pw = pairwise_accuracy(pred, true)
            # as the fit reports it too: also with both sides centred on the mean training latent
            centre = np.load(bundle / "attributes.npz")["train_latents"].mean(axis=0)
            pwc = pairwise_accuracy(pred - centre, true - centre)
            summary["live_pairwise_latent"] = {
                "accuracy": round(float(pw.accuracy), 4),
                "accuracy_centred": round(float(pwc.accuracy), 4),
                "n_faces": len(ids),
            }

        # online / offline agreement on the same trials
        # the live run's preprocessing as it recorded it (the bundle's spec for a run that predates the record)
        recorded = manifest.get("preprocess")
        spec = PreprocessSpec.from_manifest(recorded if recorded else b.manifest)
        rows = [t for _, t in test_rows]
        off = offline_trial_latents(b, holdout, rows, spec)
        onl = np.stack([lat[int(t["latent_row"])] for t in rows])
        r = [float(np.corrcoef(a, c)[0, 1]) for a, c in zip(onl, off)]
        summary["online_offline"] = {"median_r": round(float(np.median(r)), 4), "min_r": round(float(np.min(r)), 4),
                                     "trials": len(r)}  # fmt: skip
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(off.ravel(), onl.ravel(), s=2, alpha=0.3)
        ax.set_xlabel("offline (whole-run) trial latents")
        ax.set_ylabel("live trial latents")
        ax.set_title(f"online vs offline, median r = {np.median(r):.3f}")
        fig.tight_layout()
        fig.savefig(rep / "agreement.png", dpi=100)
        plt.close(fig)

    summary["latency"] = _latency_figure(rep / "latency.png", vols, flips)
    summary["motion"] = _motion_figure(rep / "motion.png", vols, _truth_motion(twin, holdout))
    status: dict[str, int] = {}
    for v in vols:
        status[v.get("status", "?")] = status.get(v.get("status", "?"), 0) + 1
    summary["record"] = {"volumes_by_status": status, "trials": len(trials), "flips": len(flips)}
    summary["live_wall_s"] = round(live.wall_s, 1)
    summary["display"] = live.display_note or "ran"
    frames = sorted(Path(live.frames_dir).glob("*.png")) if live.frames_dir else []
    summary["display_frames_saved"] = len(frames)
    if frames:
        pick = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, min(8, len(frames)))]
        fig, axes = plt.subplots(1, len(pick), figsize=(1.6 * len(pick), 1.9), squeeze=False)
        for ax, f in zip(axes[0], pick):
            ax.imshow(_load_png(f))
            ax.set_title(f.stem[-10:], fontsize=6)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(rep / "display.png", dpi=100)
        plt.close(fig)
    ev_path = next(iter(sorted(Path(fit_dir).rglob("evaluation.json"))), None)
    if ev_path is not None:
        ev = json.loads(ev_path.read_text())
        summary["offline_evaluation"] = {
            k: ev[k] for k in ("pairwise", "pairwise_centred", "permutation", "gender", "imagery") if k in ev
        }
    (rep / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    html_path = _write_html(rep, summary, ev_path)
    return {"html": html_path, "summary": summary, "summary_text": _summary_text(summary)}


def _fmt_pairwise(pw: dict[str, Any]) -> str:
    parts = []
    for space, d in pw.items():
        if isinstance(d, dict):
            vals = ", ".join(f"{k} {_acc(v):.0%}" for k, v in d.items() if _acc(v) is not None)
            parts.append(f"{space}: {vals}")
    return "; ".join(parts)


def _acc(v: Any) -> float | None:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, dict) and isinstance(v.get("accuracy"), (int, float)):
        return float(v["accuracy"])
    return None


def _summary_text(s: dict[str, Any]) -> str:
    lines = [f"fmriface demo: replayed {s['holdout_run']} ({s['volumes']} volumes) live in {s['live_wall_s']} s"]
    lat = s.get("latency", {}).get("published_ms")
    if lat:
        lines.append(f"  latency file ready -> published: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
    scr = s.get("latency", {}).get("on_screen_ms")
    if scr:
        lines.append(f"  latency file ready -> on screen: p50 {scr['p50']} ms, p99 {scr['p99']} ms")
    if "live_pairwise_latent" in s:
        lp = s["live_pairwise_latent"]
        lines.append(
            f"  live pairwise decoding of {lp['n_faces']} test faces (latent space): {lp['accuracy']:.0%}"
            f" ({lp['accuracy_centred']:.0%} with latents centred on the training mean)"
        )
    if "online_offline" in s:
        lines.append(f"  online vs offline trial latents: median r = {s['online_offline']['median_r']}")
    ev = s.get("offline_evaluation", {})
    if "pairwise" in ev:
        lines.append("  offline evaluation (pairwise): " + _fmt_pairwise(ev["pairwise"]))
    if "pairwise_centred" in ev:
        lines.append("  offline evaluation (pairwise, centred): " + _fmt_pairwise(ev["pairwise_centred"]))
    lines.append(
        f"  record: {s['record']['volumes_by_status']}, {s['record']['trials']} trials, {s['record']['flips']} flips"
    )
    lines.append(f"  display: {s['display']}, {s['display_frames_saved']} frames saved")
    steps = ", ".join(f"{k} {'reused' if v is None else f'{v:.0f} s'}" for k, v in s["times_s"].items())
    lines.append(f"  steps: {steps}")
    return "\n".join(lines)


def _write_html(rep: Path, s: dict[str, Any], ev_path: Path | None) -> Path:
    def img(name: str, caption: str) -> str:
        if not (rep / name).is_file():
            return f"<p><em>{html.escape(caption)}: not available in this run.</em></p>"
        return (
            f'<figure><img src="{name}" style="max-width:100%"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )

    fit_link = f"<p>The offline fit report: <code>{html.escape(str(ev_path.parent))}</code></p>" if ev_path else ""
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>fmriface demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;}} pre{{background:#f4f4f4;padding:1em}}</style>
</head><body><h1>fmriface demo</h1>
<pre>{html.escape(_summary_text(s))}</pre>
<h2>Test faces and their live reconstructions</h2>
{img("faces.png", "top: the held-out test faces; middle: their face-space reconstruction (the ceiling); bottom: the mean of the faces the service decoded live from their trials")}
<h2>Latency</h2>{img("latency.png", "per stage and end to end, from the run record (volumes.jsonl) and the display's flip acks")}
<h2>Motion</h2>{img("motion.png", "motion estimated by the service beside the twin's ground truth (both demeaned: the service's reference is the mean of the first run)")}
<h2>Online / offline agreement</h2>{img("agreement.png", "trial latents from the live service against the same trials computed offline from the whole run")}
<h2>What the display showed</h2>{img("display.png", "frames saved by fmriface display --headless")}
{fit_link}
<h2>All numbers</h2><pre>{html.escape(json.dumps(s, indent=2, default=str))}</pre>
</body></html>"""
    path = rep / "index.html"
    path.write_text(body)
    return path
