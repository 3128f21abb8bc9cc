"""The real-time service: everything that runs during the scan.

Watching the scanner's export folder, reading volumes, motion correction, online preprocessing, decoding with
onnxruntime, publishing over ZeroMQ, run logs and the scanner emulator for replay. It never imports torch,
``offline``, ``stimulus`` or psychopy (enforced by import-linter), so it installs light and starts fast.

The names most callers need, each taken from its room's public names on first use (``lazy_loader``), so
``import service.protocol`` (all the stimulus programs need) loads nothing else.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bundle": ["Bundle", "BundleError", "load_bundle", "write_manifest"],
        "motion": [
            "MotionTracker",
            "RigidRegistration",
            "GridMismatchError",
            "framewise_displacement",
            "realign_run",
            "rigid_matrix",
        ],
        "volume": ["Volume", "IntakeEvent", "IntakeError"],
        "window": ["WindowSpec", "window_estimate", "TrialWindows"],
        "online": ["OnlinePreprocessor", "detrend_offline"],
        "intake": ["read_volume", "VolumeWatcher", "WatcherConfig", "inspect_path"],
        "scanner": ["write_volume", "ScannerEmulator", "FAULT_KINDS"],
        "live": ["Service", "ServeConfig", "StartupError", "RunLog", "read_volumes", "make_session"],
    },
)
