"""The real-time service: everything that runs during the scan.

Watching the scanner's export folder, reading volumes, motion correction, online preprocessing, decoding with
onnxruntime, publishing over ZeroMQ, run logs and the scanner emulator for replay. It never imports torch,
``offline``, ``stimulus`` or psychopy (enforced by import-linter), so it installs light and starts fast.

The public names below are imported on first use (``lazy_loader``), so ``import service.protocol`` (all the
stimulus programs need) loads nothing else.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bundle": ["Bundle", "BundleError", "load_bundle", "write_manifest"],
        "motion": ["RigidRegistration", "GridMismatchError", "framewise_displacement", "realign_run", "rigid_matrix"],
        "volume": ["Volume", "IntakeEvent", "IntakeError"],
        "intake.readers": ["read_volume"],
        "intake.watcher": ["VolumeWatcher", "WatcherConfig"],
        "intake.inspect": ["inspect_path"],
        "scanner.writers": ["write_volume"],
        "scanner.replay": ["ScannerEmulator", "FAULT_KINDS"],
        "window": ["WindowSpec", "window_estimate", "TrialWindows"],
        "online": ["OnlinePreprocessor", "detrend_offline"],
        "live.onnx_session": ["make_session"],
        "live.serve": ["Service", "ServeConfig", "StartupError"],
        "live.runlog": ["RunLog", "read_volumes"],
    },
)
