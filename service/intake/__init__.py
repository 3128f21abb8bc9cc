"""Intake: from the scanner's files to :class:`service.volume.Volume` objects.

The watcher (events or polling) sees files appear and finish, sniffs and reads them (DICOM mosaic, enhanced,
slice files, NIfTI), assembles slice files into volumes, orders them by acquisition (series bookkeeping: gaps,
duplicates, the followed series) and hands complete volumes on; a helper process parses while volumes queue.
``inspect`` says what an export folder holds. See ``docs/architecture.md``.

Names are imported on first use (``lazy_loader``).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "assembly": ["assemble", "read_image", "read_slices", "read_volume", "sniff"],
        "inspect": ["compact_ranges", "format_report", "inspect_path"],
        "parse_offload": ["ParseOffload"],
        "series": ["Sequencer", "SeriesFilter"],
        "watcher": ["VolumeWatcher", "WatcherConfig"],
    },
)
