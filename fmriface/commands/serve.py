"""Run the real-time service: watch a scanner export folder, decode each volume, publish faces over ZeroMQ.

Every volume the scanner writes into --watch is motion-corrected to the bundle's reference, its mask voxels
detrended online and decoded (mapping -> decoder.onnx); a `frame` message goes out on --pub for each volume and a
`trial` message for each trial whose window is complete (trials from --events or from the experiment's `event`
messages on --pull). The run is recorded under --runs/<run id>/; restarting on the same folder resumes it.
Stops on Ctrl-C / SIGTERM, after --max-volumes, or after --idle-timeout seconds without a volume.

Only the run that starts after serve does is followed: files already in --watch that were written before serve
started (by their file time and DICOM acquisition time) are an earlier run's, reported once per series with their
age and not decoded; `fmriface inspect DIR` says which, and what to run. --take-earlier-run follows a run that began
before serve did (the newest EPI series present on the bundle's grid); a restart in the middle of a run resumes
it without the option (its records name its files).

Example:
  fmriface serve --bundle out/bundle --watch /data/export --events run-01_events.tsv --max-volumes 195
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from fmriface.common import parser
from fmriface.config import load_config, resolve_config

_OPTIONS = {
    # option: (config key, type, help)
    "--bundle": ("bundle", str, "bundle folder written by `fmriface fit`"),
    "--watch": ("watch", str, "the scanner's export folder to watch"),
    "--runs": ("runs", str, "folder of the run records (default runs/)"),
    "--run-id": ("run_id", str, "run name (default: derived from --watch, so a restart resumes)"),
    "--pub": ("pub", str, "ZeroMQ address to publish frames on (default tcp://127.0.0.1:5556)"),
    "--pull": ("pull", str, "ZeroMQ address for events and flip acks (default tcp://127.0.0.1:5557)"),
    "--events": ("events", str, "BIDS events.tsv with the run's trials"),
    "--tr": ("tr", float, "repetition time in s (default: the bundle's)"),
    "--hrf-lag": ("hrf_lag", float, "seconds from stimulus to the BOLD response a frame shows (default 5)"),
    "--target-stim": ("target_stim", str, "neurofeedback target: a stimulus file name of the bundle"),
    "--target-image": ("target_image", str, "neurofeedback target: an image file (encoded by encoder.onnx)"),
    "--max-volumes": ("max_volumes", int, "stop after N volumes"),
    "--idle-timeout": ("idle_timeout", float, "stop after S seconds without a new volume"),
    "--startup-timeout": ("startup_timeout", float, "stop if no volume arrives within S seconds"),
    "--device": ("device", str, "onnxruntime device: cpu, cuda or auto"),
    "--threads": ("threads", int, "onnxruntime threads"),
    "--heartbeat": ("heartbeat", float, "seconds between status messages (default 1)"),
    "--sham-source": ("sham_source", str, "sham (yoked) feedback: a finished run folder runs/<run_id>/ to replay"),
    "--allocation": ("allocation", str, "blinded allocation TSV (participant_id, condition, source_run)"),
    "--participant": ("participant", str, "the participant's ID in the allocation file"),
    "--curve-secret": ("curve_secret", str, "CurveZMQ: the service's secret key file (fmriface keys)"),
    "--curve-allowed": ("curve_allowed", str, "CurveZMQ: folder of the peers' allowed public keys"),
    "--bids-out": ("bids_out", str, "BIDS root the run is kept in (default runs/<run_id>/bids/)"),
    "--subject": ("subject", str, "BIDS subject label (default: the experiment's trigger, else 01)"),
    "--session": ("session", str, "BIDS session label (default: the experiment's trigger, else 01)"),
    "--task": ("task", str, "BIDS task label (default live)"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the service until the run ends and print its run id, run folder and summary as one JSON line; returns
    0, or 1 when the run stopped by an error (records that cannot be written, the watch folder gone)."""
    p = parser("serve", __doc__)
    p.add_argument("--config", help="TOML file or preset name (serve-demo, serve-tiny); options override it")
    for opt, (_, typ, help_) in _OPTIONS.items():
        p.add_argument(opt, type=typ, default=None, help=help_)
    p.add_argument("--json-log", action="store_true", default=None, help="log one JSON object per line on stderr")
    p.add_argument(
        "--unblind-operator",
        action="store_true",
        help="with --allocation, status messages name the condition (live or sham) instead of 'blinded'",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the bundle's SHA-256 check at start")
    p.add_argument("--no-bids", action="store_true", help="keep no BIDS copy of the run's volumes")
    p.add_argument(
        "--take-earlier-run",
        action="store_true",
        help="follow a run that began before serve started (the newest EPI series present on the bundle's grid); "
        "by default files written before the start are an earlier run's and are not followed",
    )
    t_start = time.time()  # files written before this are an earlier run's
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # before numpy loads: one volume's work is too small to split

    from service.live.serve import ServeConfig, Service, setup_logging

    overrides = {key: getattr(args, opt[2:].replace("-", "_")) for opt, (key, _, _) in _OPTIONS.items()}
    overrides["json_log"] = args.json_log
    if args.unblind_operator:
        overrides["blind_operator"] = False
    if args.no_verify:
        overrides["verify_bundle"] = False
    if args.no_bids:
        overrides["bids"] = False
    cfg = load_config(ServeConfig, resolve_config(args.config, "serve"), overrides)
    cfg = _live_run_only(cfg, t_start, args.take_earlier_run)
    setup_logging(cfg.json_log)
    service = Service(cfg).start()
    summary = service.run()
    print(json.dumps({"run_id": service.runlog_.run_id, "run_dir": str(service.run_dir_), **summary}))
    if service.error_ is not None:  # a stop by an error is a failure, whatever the run managed before it
        print(f"fmriface serve: run {service.runlog_.run_id} stopped by an error: {service.error_}", file=sys.stderr)
        return 1
    return 0


def _live_run_only(cfg, t_start: float, take_earlier: bool):
    """The config whose intake follows only files written after ``t_start`` (unless ``take_earlier``, or the
    config's own ``[watcher] since`` / ``take_earlier``), and the run being resumed, whose records name its files."""
    from service.live.runlog import RecordError, read_records
    from service.live.startup import StartupError, choose_run_id

    try:  # the run serve will open: a resumed one's files say which series is its own
        records = read_records(Path(cfg.runs) / choose_run_id(cfg) / "volumes.jsonl")
    except (StartupError, RecordError, OSError, ValueError, TypeError):  # TypeError: no --watch
        records = []  # Service.start reports what is wrong with the run
    taken = [str(r["file"]) for r in records if r.get("file") and r.get("status") in ("ok", "discarded")]
    names = tuple(dict.fromkeys(taken))  # any one of them present names the series
    watcher = cfg.watcher
    return replace(
        cfg,
        watcher=replace(
            watcher,
            since=t_start if watcher.since is None else watcher.since,
            take_earlier=watcher.take_earlier or take_earlier,
            resume_files=watcher.resume_files or names,
        ),
    )
