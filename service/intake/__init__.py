"""Intake: from the scanner's files to :class:`service.volume.Volume` objects.

The watcher (events or polling) sees files appear and finish, sniffs and reads them (DICOM mosaic, enhanced,
slice files, NIfTI), assembles slice files into volumes, orders them by acquisition (series bookkeeping: gaps,
duplicates, the followed series) and hands complete volumes on; a helper process parses while volumes queue.
``inspect`` says what an export folder holds. See ``docs/architecture.md``.
"""

from service.intake.assembly import assemble, read_image, read_slices, read_volume, sniff
from service.intake.inspect import compact_ranges, format_report, inspect_path
from service.intake.parse_offload import ParseOffload
from service.intake.series import Sequencer, SeriesFilter
from service.intake.watcher import VolumeWatcher, WatcherConfig

__all__ = [
    "inspect_path",
    "format_report",
    "compact_ranges",
    "ParseOffload",
    "read_volume",
    "read_slices",
    "read_image",
    "assemble",
    "sniff",
    "SeriesFilter",
    "Sequencer",
    "WatcherConfig",
    "VolumeWatcher",
]
