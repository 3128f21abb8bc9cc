"""The scanner emulator: writers of DICOM and NIfTI files as scanners export them, and ``replay``, which writes a
recorded run into a folder at TR pace with optional faults.
"""

from service.scanner.replay import FAULT_KINDS, ReplayFault, ScannerEmulator, volume_file_name
from service.scanner.writers import FORMATS, slice_paths, write_bytes, write_volume

__all__ = [
    "FAULT_KINDS",
    "ReplayFault",
    "ScannerEmulator",
    "volume_file_name",
    "FORMATS",
    "write_volume",
    "write_bytes",
    "slice_paths",
]
