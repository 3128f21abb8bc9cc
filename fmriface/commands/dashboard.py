"""The operator's dashboard in a browser: run, head motion, latency, faces and problems, live.

A process of its own: it subscribes to the service's published stream (--sub; CurveZMQ with --curve-secret and
--curve-server-key, as `fmriface display`) and serves a page over HTTP that updates as each message arrives
(Server-Sent Events): run state and counts, the six motion parameters and framewise displacement against a
threshold, latency per stage with p50/p99, the face decoded for each volume and each trial beside its stimulus
(--stimuli), the neurofeedback value, the intake's problems, the run's summary and, with --runs (the service's
runs folder), the on-screen latency from the displays' flip acks and the session's earlier runs one click away.

It binds 127.0.0.1 by default (no token needed there); bound to any other address (--host 0.0.0.0) it requires
a token, printed at start in the address to open (or --token / $FMRIFACE_DASHBOARD_TOKEN). A slow or closed
browser never delays anything: each page has a bounded queue of its own, and the service does not know the
dashboard is there. Stops on Ctrl-C / SIGTERM or after --duration seconds; prints a summary.

Examples
--------
fmriface dashboard --sub tcp://127.0.0.1:5556 --runs runs/ --stimuli twin/stimuli
fmriface dashboard --host 0.0.0.0 --port 8050 --curve-secret keys/dashboard.key_secret --curve-server-key keys/server.key
"""

from __future__ import annotations

import sys
from pathlib import Path

from fmriface.common import UsageError, emit, parser
from service.extras import missing_extra


def main(argv: list[str] | None = None) -> int:
    """Serve the dashboard until Ctrl-C, SIGTERM or --duration, then print its summary; returns 0."""
    p = parser("dashboard", __doc__)
    p.add_argument("--config", help="a TOML file with the options below (keys as the long options, with _)")
    p.add_argument("--sub", help="the service's PUB address (default tcp://127.0.0.1:5556)")
    p.add_argument("--host", help="address to serve the page on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8050; 0 picks a free one)")
    p.add_argument("--runs", type=Path, help="the service's runs folder (intake problems, flip acks, earlier runs)")
    p.add_argument("--stimuli", type=Path, help="the stimulus folder: a trial's stim_id is a path inside it")
    p.add_argument("--token", help="the token to require (default: none on loopback, a random one elsewhere)")
    p.add_argument("--require-token", action="store_true", default=None, help="require a token on loopback too")
    p.add_argument("--fd-threshold", type=float, help="framewise displacement threshold in mm (default 0.5)")
    p.add_argument("--history", type=int, help="volumes kept for the plots (default 1000)")
    p.add_argument("--image-format", choices=["png", "jpeg"], help="how faces go to the page (default png)")
    p.add_argument("--curve-secret", type=Path, help="CurveZMQ: this dashboard's secret key file (fmriface keys)")
    p.add_argument("--curve-server-key", type=Path, help="CurveZMQ: the service's public key file")
    p.add_argument("--nice", type=int, help="CPU priority to give up, 0-19 (default 10: the service comes first)")
    p.add_argument("--duration", type=float, help="stop after S seconds (default: run until stopped)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise UsageError(missing_extra("aiohttp", "the dashboard", "dashboard")) from None
    from fmriface.config import load_config, resolve_config
    from fmriface.dashboard.server import DashboardConfig, run_dashboard

    overrides = {
        "sub": args.sub, "host": args.host, "port": args.port, "runs": args.runs, "stimuli": args.stimuli,
        "token": args.token, "require_token": args.require_token, "fd_threshold": args.fd_threshold,
        "history": args.history, "image_format": args.image_format, "curve_secret": args.curve_secret,
        "curve_server_key": args.curve_server_key, "duration": args.duration, "nice": args.nice,
    }  # fmt: skip
    cfg = load_config(DashboardConfig, resolve_config(args.config, "dashboard"), overrides)
    if cfg.stimuli is not None and not Path(cfg.stimuli).is_dir():
        raise UsageError(f"--stimuli {cfg.stimuli} is not a folder")

    def announce(lines: list[str]) -> None:
        print("\n".join(lines), flush=True)

    try:
        summary = run_dashboard(cfg, announce)
    except OSError as exc:
        raise UsageError(f"cannot serve on {cfg.host}:{cfg.port}: {exc.strerror or exc}; pass another --port") from None
    emit(summary, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
