"""One run replayed live through ``fmriface serve`` with a bundle, checked against the same trials computed offline.

:func:`replay_check` serves ``bundle`` on a watched folder while the scanner emulator replays a BIDS run (with its
events, so trials are decoded), then computes the run's test trials offline from the whole run
(:func:`offline.reports.demo.offline_trial_latents`, the fit's computation) and returns the per-trial correlation
of the live and offline latents, the live run's per-stage times and what the run's manifest recorded of the
bundle. Used for aligned bundles (issue 32: an aligned subject decodes live as an unaligned one does) and by
``fmriface bench align``-style measurements; no display.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["replay_check"]


def _stage_medians(volumes: list[dict[str, Any]]) -> dict[str, float]:
    """Median ms per stage over the run's ok volumes (from the records' timestamps)."""
    stages = (("read", "file_ready", "read"), ("motion", "dequeued", "motion"), ("decode", "motion", "decoded"))
    out: dict[str, float] = {}
    ok = [v for v in volumes if v.get("status") == "ok" and isinstance(v.get("t"), dict)]
    for name, a, b in stages:
        values = [1000.0 * (v["t"][b] - v["t"][a]) for v in ok if a in v["t"] and b in v["t"]]
        if values:
            out[name] = round(float(np.median(values)), 3)
    total = [
        1000.0 * (v["t"]["decoded"] - v["t"]["file_ready"]) for v in ok if {"decoded", "file_ready"} <= set(v["t"])
    ]
    if total:
        out["ready_to_decoded"] = round(float(np.median(total)), 3)
    return out


def replay_check(bundle: Path, bold: Path, out: Path, speed: float = 10.0, say=print) -> dict[str, Any]:
    """Serve ``bundle`` while ``bold`` (a BIDS run with its events) is replayed; live against offline trials."""
    from fmriface.demo.live import run_live
    from offline.reports.demo import _read_tsv, offline_trial_latents
    from service.bundle import load_bundle
    from service.live.runlog import read_records
    from service.preprocess import PreprocessSpec

    cfg = SimpleNamespace(serve="serve-demo", replay_speed=speed, replay_format="nifti", seed=0, display=False)
    live = run_live(cfg, Path(bundle), Path(bold), Path(out), say)
    run = Path(live.run_dir)
    b = load_bundle(bundle)
    manifest = json.loads((run / "manifest.json").read_text())
    trials = [t for t in _read_tsv(run / "trials.tsv") if t.get("latent_row") not in (None, "")]
    latents = np.load(run / "trial_latents.npy")
    spec = PreprocessSpec.from_manifest(manifest.get("preprocess") or b.manifest)
    offline = offline_trial_latents(b, Path(bold), trials, spec)
    online = np.stack([latents[int(t["latent_row"])] for t in trials])
    r = [float(np.corrcoef(a, c)[0, 1]) for a, c in zip(online, offline)]
    return {
        "trials": len(trials),
        "median_r": round(float(np.median(r)), 5),
        "min_r": round(float(np.min(r)), 5),
        "volumes_ok": sum(v.get("status") == "ok" for v in read_records(run / "volumes.jsonl")),
        "stage_ms": _stage_medians(read_records(run / "volumes.jsonl")),
        "bundle_summary": manifest.get("bundle_summary"),
        "run_dir": str(run),
    }
