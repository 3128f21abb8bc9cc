"""The real-time service: everything that runs during the scan.

Watching the scanner's export folder, reading volumes, motion correction, online preprocessing, decoding with
onnxruntime, publishing over ZeroMQ, run logs and the scanner emulator for replay. It never imports torch,
``offline``, ``stimulus`` or psychopy (enforced by import-linter), so it installs light and starts fast.

The public names below are imported on first use, so ``import service.protocol`` (all the stimulus programs
need) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Bundle": "service.bundle",
    "BundleError": "service.bundle",
    "load_bundle": "service.bundle",
    "write_manifest": "service.bundle",
    "RigidRegistration": "service.motion",
    "GridMismatchError": "service.motion",
    "framewise_displacement": "service.motion",
    "realign_run": "service.motion",
    "rigid_matrix": "service.motion",
    "Volume": "service.volume",
    "IntakeEvent": "service.volume",
    "IntakeError": "service.volume",
    "read_volume": "service.intake.readers",
    "write_volume": "service.scanner.writers",
    "VolumeWatcher": "service.intake.watcher",
    "WatcherConfig": "service.intake.watcher",
    "inspect_path": "service.intake.inspect",
    "WindowSpec": "service.window",
    "window_estimate": "service.window",
    "TrialWindows": "service.window",
    "OnlinePreprocessor": "service.online",
    "detrend_offline": "service.online",
    "make_session": "service.live.onnx_session",
    "Service": "service.live.serve",
    "ServeConfig": "service.live.serve",
    "StartupError": "service.live.serve",
    "ScannerEmulator": "service.scanner.replay",
    "FAULT_KINDS": "service.scanner.replay",
    "RunLog": "service.live.runlog",
    "read_volumes": "service.live.runlog",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
