"""What a scanner export folder or file holds: format, series, matrix, voxel size, TR, acquisitions, problems.

Reads every file as the service's intake would (Siemens mosaic and XA enhanced DICOM, one-file-per-slice DICOM,
Philips DICOM, NIfTI-1/2 3-D), groups them by series and prints, per series: the format, matrix, voxel size,
TR, the acquisition numbers present, missing and duplicated, whether it is an EPI series the service would
follow (derived, MoCo, phase and localizer series are not), how long ago its files were written (to a serve
started now, every series present is an earlier run, not followed without --take-earlier-run), and then the
problems found (incomplete or corrupt files, matrices that differ) and the `fmriface serve` command lines to run
next. No patient-identifying field is ever printed.

The exit status is 0; with ``--strict`` it is 1 when problems were found.

Examples
--------
fmriface inspect /data/export/20260301_subject
fmriface inspect 001_000007_000001.dcm --json
fmriface inspect /mnt/scanner --recursive --strict
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fmriface.common import emit, parser


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Options of ``fmriface inspect`` (also from a TOML file with ``--config``)."""

    recursive: bool = False
    strict: bool = False
    slices_per_volume: int | None = None


def main(argv: list[str] | None = None) -> int:
    """Inspect the path and print the report; returns 1 under --strict when problems were found, else 0."""
    p = parser("inspect", __doc__)
    p.add_argument("path", type=Path, help="a scanner export folder or one file")
    p.add_argument("--recursive", action="store_true", default=None, help="also look in sub-folders")
    p.add_argument("--strict", action="store_true", default=None, help="exit with status 1 when problems are found")
    p.add_argument(
        "--slices-per-volume",
        type=int,
        default=None,
        help="slices in one volume, for slice files whose headers do not say (serve takes the bundle's grid)",
    )
    p.add_argument("--config", help="TOML file or preset name with the options of InspectConfig")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    from fmriface.config import load_config, resolve_config
    from service.intake.inspect import format_report, inspect_path

    config = resolve_config(args.config, "inspect")
    given = (("recursive", args.recursive), ("strict", args.strict), ("slices_per_volume", args.slices_per_volume))
    overrides = {k: v for k, v in given if v is not None}
    cfg = load_config(InspectConfig, config, overrides)
    report = inspect_path(args.path, recursive=cfg.recursive, slices_per_volume=cfg.slices_per_volume)
    if args.json:
        emit(report, True)
    else:
        print(format_report(report))
    return 1 if cfg.strict and report["problems"] else 0
