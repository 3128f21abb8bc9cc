"""The record a methods section needs, read from a run's folder: what CRED-nf asks of a real-time study.

:func:`run_report` reads ``runs/<run_id>/`` (nothing else) and returns the items of the CRED-nf checklist (Ros
et al. 2020) that a real-time fMRI run can answer: the feedback signal and how it was computed, its latency per
volume (file ready -> frame sent, and file ready -> on screen from the displays' flip acks), the control
condition (live or sham, how it was assigned, the source run and its hash), the volumes excluded and why, the
QA (volumes censored and why, mean tSNR in the mask, DVARS; docs/qa.md), the head motion (framewise displacement), and the software versions and bundle hash. :func:`format_reports` prints
one or more runs side by side (``fmriface report RUN [RUN ...]``); ``serve`` leaves ``report.md`` in the run's
folder when it closes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from service.live.runlog import read_records, read_trials

__all__ = ["ReportError", "run_report", "format_reports", "damaged_text", "FD_THRESHOLD_MM"]

#: Framewise displacement (Power et al. 2012, 50 mm head radius) above which a volume is counted as a spike.
FD_THRESHOLD_MM = 0.5


class ReportError(ValueError):
    """A folder that is not a run's records, or records that cannot be read; the message names the file."""

    user_error = True


def _pct(values: list[float] | np.ndarray) -> dict[str, float] | None:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in (50, 95, 99)} | {"max": round(float(arr.max()), 2)}


def _feedback_signal(manifest: dict[str, Any], state: dict[str, Any], events: list[dict[str, Any]]) -> dict:
    cfg = manifest.get("config") or {}
    interpolation = manifest.get("interpolation") or cfg.get("interpolation") or "linear"
    # the run's preprocessing: recorded as the bundle's spec; a run before it was kept its own flat options
    pre = manifest.get("preprocess") or {}
    window = pre.get("window") or {
        k: cfg.get(f"window_{k}" if k in ("start", "stop") else k)
        for k in ("start", "stop", "baseline_start", "baseline_stop")
    }
    detrend = pre.get("preprocessing") or cfg
    target = (state.get("target") or {}).get("source")
    targets = [e.get("stim_id") or "image" for e in events if e.get("kind") == "target"]
    if cfg.get("target_stim"):
        targets.insert(0, cfg["target_stim"])
    elif cfg.get("target_image"):
        targets.insert(0, Path(str(cfg["target_image"])).name)
    signal = str(cfg.get("feedback") or "target-correlation")
    value = {
        "target-correlation": (
            "Pearson correlation between the decoded latent and the target face's latent (the bundle's stimulus "
            "latent, or the target image encoded by encoder.onnx)"
        ),
        "attribute-projection": (
            f"the decoded latent's projection on the bundle's direction of {(cfg.get('feedback_options') or {}).get('attribute', 'an attribute')}"
        ),
    }.get(signal, f"the plugin signal {signal!r} (entry point group fmriface.feedback) of the decoded latent")
    out: dict[str, Any] = {
        "signal": signal,
        "value": value,
        "frame": (
            f"per volume: the latent decoded from the mean of the last {cfg.get('frame_average', 1)} preprocessed "
            f"volume(s), correlation averaged over the last {cfg.get('feedback_smooth', 3)} volume(s)"
        ),
        "trial": (
            f"per trial: the window estimate (mean of {window.get('start')}-{window.get('stop')} s after "
            f"onset minus {window.get('baseline_start')}-{window.get('baseline_stop')} s), decoded, unsmoothed"
        ),
        "preprocessing": (
            f"rigid motion correction to the bundle's reference ({interpolation} resampling), "
            f"online Legendre drift order {detrend.get('poly_order')}"
            f"{' + 6 motion regressors' if detrend.get('motion_regressors') else ''}, scale {detrend.get('scale')}"
        ),
        "also_sent": "projections of the latent on the bundle's attribute directions",
        "hrf_lag_s": cfg.get("hrf_lag"),
        "targets": targets or ([target.get("stim_id") or "image"] if target else []),
    }
    return out


def run_report(run_dir: str | Path, fd_threshold: float = FD_THRESHOLD_MM) -> dict[str, Any]:
    """The CRED-nf items of one run, from its records (see the module)."""
    run_dir = Path(run_dir)
    mpath = run_dir / "manifest.json"
    if not mpath.is_file():
        raise ReportError(f"{run_dir} is not a run folder (no manifest.json)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{run_dir}: manifest.json or state.json is not valid JSON: {exc}") from None
    # a crash's torn last line is named, never dropped silently (a damaged line before it is an error)
    damaged: dict[str, list[int]] = {}
    records = {}
    for name in ("volumes.jsonl", "flips.jsonl", "events.jsonl", "feedback.jsonl"):
        records[name] = read_records(run_dir / name, torn := [])
        if torn:
            damaged[name] = torn
    volumes, flips, events, feedback = (
        records[n] for n in ("volumes.jsonl", "flips.jsonl", "events.jsonl", "feedback.jsonl")
    )
    trials = read_trials(run_dir / "trials.tsv")
    session = _session(run_dir)

    ok = [v for v in volumes if v.get("status") == "ok"]
    latency = [1000.0 * (v["t"]["sent"] - v["t"]["file_ready"]) for v in ok if "sent" in v.get("t", {})]
    e2e = [1000.0 * f["e2e_s"] for f in flips if f.get("e2e_s") is not None]
    excluded = [v for v in volumes if v.get("status") != "ok"]
    reasons = Counter(
        f"{v.get('status')}: {v.get('reason') or str(v.get('error', '')).split(' (')[0][:120]}" for v in excluded
    )
    motion = np.array([v["motion"] for v in volumes if v.get("motion")], dtype=np.float64).reshape(-1, 6)
    fd = np.array([v["fd"] for v in volumes if v.get("fd") is not None], dtype=np.float64)
    control = dict(manifest.get("control") or {"condition": "live", "assigned_by": "config"})
    frames = [f for f in feedback if f.get("topic") == "frame"]
    shown = np.array([f["shown"]["value"] for f in frames if "value" in f.get("shown", {})], dtype=np.float64)
    real = np.array([f["real"]["value"] for f in frames if "value" in f.get("real", {})], dtype=np.float64)
    values: dict[str, Any] = {"frames": len(frames), "trials": sum(f.get("topic") == "trial" for f in feedback)}
    if shown.size:
        values["shown_mean"] = round(float(shown.mean()), 4)
        values["shown_sd"] = round(float(shown.std()), 4)
    if real.size:
        values["real_mean"] = round(float(real.mean()), 4)
        if real.size == shown.size and real.size > 2 and shown.std() > 0 and real.std() > 0:
            values["r_shown_real"] = round(float(np.corrcoef(shown, real)[0, 1]), 4)
    summary = manifest.get("summary") or {}
    qa = [v["qa"] for v in ok if isinstance(v.get("qa"), dict)]
    return {
        "run_id": manifest.get("run_id", run_dir.name),
        "state": manifest.get("state"),
        "created": manifest.get("created"),
        "tr_s": manifest.get("tr"),
        "control": control,
        "feedback_signal": _feedback_signal(manifest, state, events),
        "feedback_values": values,
        "latency_ms": {
            "file_to_sent": _pct(latency),
            "file_to_screen": _pct(e2e),
            "volumes_timed": len(latency),
            "flips": len(e2e),
        },
        "volumes": {
            "recorded": len(volumes),
            "ok": len(ok),
            "excluded": len(excluded),
            "reasons": dict(reasons.most_common()),
        },
        "trials": len(trials),
        "qa": _qa_summary(
            qa, (summary.get("qa") or {}).get("tsnr_mean"), (summary.get("qa") or {}).get("trials_censored")
        ),
        "motion": {
            "fd_mean_mm": round(float(fd.mean()), 4) if fd.size else None,
            "fd_max_mm": round(float(fd.max()), 4) if fd.size else None,
            "fd_threshold_mm": fd_threshold,
            "volumes_above": int((fd > fd_threshold).sum()),
            "max_translation_mm": round(float(np.abs(motion[:, :3]).max()), 3) if len(motion) else None,
            "max_rotation_deg": round(float(np.abs(motion[:, 3:]).max()), 3) if len(motion) else None,
            "session_offset": (summary.get("session") or session or {}).get("offset"),
        },
        "software": manifest.get("versions") or {},
        "bundle": manifest.get("bundle") or {},
        "provider": manifest.get("provider"),
        "stop_reason": summary.get("reason"),
        "damaged_lines": damaged,
    }


def _session(run_dir: Path) -> dict[str, Any] | None:
    """``session.json`` (the registration of a run on another session's grid), None without one."""
    path = run_dir / "session.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from None


def damaged_text(report: dict[str, Any]) -> str:
    """The damaged record lines of a run report, as one line (``none`` without any)."""
    parts = []
    for name, lines in (report.get("damaged_lines") or {}).items():
        shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
        parts.append(f"{name}: {len(lines)} torn line{'s' if len(lines) > 1 else ''} not read (line {shown})")
    return "; ".join(parts) or "none"


def _qa_summary(qa: list[dict[str, Any]], tsnr_mean: Any, trials_censored: Any) -> dict[str, Any]:
    """The QA of the decoded volumes: censored count and why, mean tSNR in the mask, DVARS and FD summaries."""
    by_reason = Counter(r for q in qa if q.get("censored") for r in q.get("reasons", []))

    def values(key: str) -> list[float]:
        return [float(q[key]) for q in qa if q.get(key) is not None]

    return {
        "judged": len(qa),
        "censored": sum(bool(q.get("censored")) for q in qa),
        "by_reason": dict(by_reason.most_common()),
        "tsnr_mean": tsnr_mean,
        "dvars": _pct(values("dvars")),
        "std_dvars": _pct(values("std_dvars")),
        "fd_mm": _pct(values("fd")),
        "trials_censored": len(trials_censored or []),
    }


def _qa_text(q: dict[str, Any]) -> str:
    if not q["judged"]:
        return "not recorded (a run before the QA)"
    why = ", ".join(f"{n}x {k}" for k, n in q["by_reason"].items()) or "none"
    return f"{q['censored']} of {q['judged']} ({why}); trials not decoded: {q['trials_censored']}"


def _control_text(c: dict[str, Any]) -> str:
    text = str(c.get("condition", "live"))
    if c.get("assigned_by") == "allocation":
        text += f" (allocated, participant {(c.get('allocation') or {}).get('participant')})"
    src = c.get("source")
    if src:
        text += f"; source run {src.get('run_id')} sha256 {str(src.get('sha256'))[:12]}"
    held = c.get("held")
    if held and (held.get("held_frames") or held.get("held_trials")):
        text += f"; held {held.get('held_frames')} frames, {held.get('held_trials')} trials"
    return text


def _lat(p: dict[str, float] | None) -> str:
    return "n/a" if not p else f"p50 {p['p50']:.1f}, p99 {p['p99']:.1f}, max {p['max']:.1f}"


def format_reports(reports: list[dict[str, Any]]) -> str:
    """One or more run reports as a Markdown table, one column per run, then the feedback signal once."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn) -> None:
        rows.append((label, [str(fn(r)) for r in reports]))

    row("state", lambda r: f"{r['state']} ({r['stop_reason']})")
    row("damaged record lines", damaged_text)
    row("control condition", lambda r: _control_text(r["control"]))
    row("TR (s)", lambda r: r["tr_s"])
    row("volumes ok / recorded", lambda r: f"{r['volumes']['ok']} / {r['volumes']['recorded']}")
    row("volumes excluded", lambda r: "; ".join(f"{n}x {k}" for k, n in r["volumes"]["reasons"].items()) or "none")
    row("trials decoded", lambda r: r["trials"])
    row("volumes censored (QA)", lambda r: _qa_text(r["qa"]))
    row("mean tSNR in the mask", lambda r: r["qa"]["tsnr_mean"] if r["qa"]["tsnr_mean"] is not None else "n/a")
    row("std DVARS", lambda r: _lat(r["qa"]["std_dvars"]))
    row("FD (mm)", lambda r: _lat(r["qa"]["fd_mm"]))
    row("feedback shown (mean, sd)", lambda r: _mean_sd(r["feedback_values"], "shown"))
    row("participant's own feedback (mean)", lambda r: r["feedback_values"].get("real_mean", "= shown"))
    row("r(shown, own)", lambda r: r["feedback_values"].get("r_shown_real", "1 (live)"))
    row("latency file -> sent (ms)", lambda r: _lat(r["latency_ms"]["file_to_sent"]))
    row(
        "latency file -> screen (ms)",
        lambda r: f"{_lat(r['latency_ms']['file_to_screen'])} ({r['latency_ms']['flips']} flips)",
    )
    row("FD mean / max (mm)", lambda r: f"{r['motion']['fd_mean_mm']} / {r['motion']['fd_max_mm']}")
    row("volumes FD > threshold", lambda r: f"{r['motion']['volumes_above']} (> {r['motion']['fd_threshold_mm']} mm)")
    row(
        "max |translation| / |rotation|",
        lambda r: f"{r['motion']['max_translation_mm']} mm / {r['motion']['max_rotation_deg']} deg",
    )
    row("session offset (mm, deg)", lambda r: r["motion"]["session_offset"] or "none (reference session)")
    row("bundle manifest sha256", lambda r: str(r["bundle"].get("manifest_sha256"))[:16])
    row(
        "fmriface / onnxruntime",
        lambda r: f"{r['software'].get('fmriface')} / {r['software'].get('onnxruntime')} ({r['provider']})",
    )
    row("python / numpy / scipy", lambda r: " / ".join(str(r["software"].get(k)) for k in ("python", "numpy", "scipy")))
    head = "| | " + " | ".join(r["run_id"] for r in reports) + " |"
    lines = [head, "|---" * (len(reports) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(v.replace("|", "/") for v in vals) + " |" for label, vals in rows]
    sig = reports[0]["feedback_signal"]
    lines += ["", "Feedback signal (CRED-nf):"]
    lines += [f"- {k}: {v}" for k, v in sig.items() if k not in ("targets",)]
    for r in reports:
        lines.append(f"- targets of {r['run_id']}: {', '.join(map(str, r['feedback_signal']['targets'])) or 'none'}")
    return "\n".join(lines)


def _mean_sd(values: dict[str, Any], key: str) -> str:
    if f"{key}_mean" not in values:
        return "no target (projections only)"
    return f"{values[f'{key}_mean']:.3f}, {values[f'{key}_sd']:.3f}"
