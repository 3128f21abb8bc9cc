"""The scanner emulator: writers of DICOM and NIfTI files as scanners export them, and ``replay``, which writes a
recorded run into a folder at TR pace with optional faults.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "replay": ["FAULT_KINDS", "ReplayFault", "ScannerEmulator", "volume_file_name"],
        "writers": ["FORMATS", "write_volume", "write_bytes", "slice_paths"],
    },
)
