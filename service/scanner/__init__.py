"""The scanner emulator: writers of DICOM and NIfTI files as scanners export them, and ``replay``, which writes a
recorded run into a folder at TR pace with optional faults: file faults (truncated, corrupt, dropped, ...) and signal
faults (a spiked, zero or stepped volume, a spiked or dropped slice) with their ground truth.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "replay": ["FAULT_KINDS", "ReplayFault", "ScannerEmulator", "volume_file_name"],
        "signal": ["SIGNAL_FAULT_KINDS", "SignalFault", "SignalFaults"],
        "writers": ["FORMATS", "write_volume", "write_bytes", "slice_paths"],
    },
)
