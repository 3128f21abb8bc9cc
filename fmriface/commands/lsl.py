"""Republish the service's stream as Lab Streaming Layer (LSL) outlets, for EEG-fMRI and stimulus software.

A process of its own: it subscribes to the service's published stream (--sub; CurveZMQ with --curve-secret and
--curve-server-key, as `fmriface display`) and pushes four LSL streams per run: fmriface-feedback (the feedback
value, one sample per volume), fmriface-latent (the decoded latent, one sample per trial), fmriface-motion (six
motion parameters, FD and the QA metrics, per volume) and fmriface-markers (run start and end, trials, censored
volumes, as JSON strings). Each sample is stamped with the time its volume's file was ready, mapped onto LSL's
clock, so LabRecorder writes it on one clock with the EEG, eye tracker and stimulus streams. Each stream's
metadata gives its channels (label, unit), the run id and the bundle's manifest SHA-256 (with --bundle).

The service does not wait for it: a bridge that falls behind loses messages for itself alone (counted).
LSL's discovery and outlets reach the whole local network unless its lsl_api.cfg says otherwise (LSLAPICFG;
ResolveScope = machine keeps discovery on this host).

Examples
--------
fmriface lsl --sub tcp://127.0.0.1:5556 --bundle fit/bundle
fmriface lsl --sub tcp://scanner-pc:5556 --curve-secret keys/lsl.key_secret --curve-server-key keys/server.key
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from fmriface.common import UsageError, emit, parser
from service.extras import missing_extra


def main(argv: list[str] | None = None) -> int:
    """Bridge until Ctrl-C, SIGTERM, --duration or (--exit-on-end) the run's end; prints a summary; returns 0."""
    p = parser("lsl", __doc__)
    p.add_argument("--sub", default="tcp://127.0.0.1:5556", help="the service's PUB address")
    p.add_argument("--bundle", type=Path, help="the run's bundle: latent size and manifest SHA-256 for the metadata")
    p.add_argument("--curve-secret", type=Path, help="CurveZMQ: this bridge's secret key file (fmriface keys)")
    p.add_argument("--curve-server-key", type=Path, help="CurveZMQ: the service's public key file")
    p.add_argument("--exit-on-end", action="store_true", help="stop after the first run's end message")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default: run until stopped)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)
    try:
        import pylsl  # noqa: F401
    except ImportError:
        raise UsageError(missing_extra("pylsl", "fmriface lsl", "lsl")) from None
    from fmriface.lsl import BridgeConfig, LslBridge

    try:
        cfg = BridgeConfig(
            sub=args.sub,
            bundle=args.bundle,
            curve_secret=args.curve_secret,
            curve_server_key=args.curve_server_key,
            exit_on_end=args.exit_on_end,
            duration=args.duration,
        )
        bridge = LslBridge(cfg)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    emit(bridge.run(stop), args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
