"""What a scanner export file or folder holds: format, series, matrix, voxel size, TR, acquisitions, problems.

The engine of ``fmriface inspect``: every file is read as intake would read it (so the problems listed are the
ones the service would meet), grouped by series, and summarised. Nothing about the patient is reported.

Every file present was written before a service started now, so each series is an earlier run to it
(:mod:`service.intake.stale`): the report gives each series' age (its newest and oldest file) and the ``fmriface
serve`` command line to run next: a plain one for a run still to come, ``--take-earlier-run`` to decode one
present.
"""

from __future__ import annotations

import os
import shlex
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from service.dicom.parse import DicomImage
from service.intake.assembly import assemble, read_image, sniff
from service.intake.stale import age_text
from service.volume import IntakeError, UnsupportedFileError, Volume

__all__ = ["inspect_path", "format_report", "compact_ranges"]


def compact_ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1-3,5,7-8"``."""
    nums = sorted(set(numbers))
    parts: list[str] = []
    start = prev = None
    for n in nums + [None]:  # type: ignore[list-item]
        if start is not None and (n is None or n != prev + 1):
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if n is not None and start is None:
            start = n
        prev = n
    return ",".join(parts)


def _files(path: Path, recursive: bool) -> list[Path]:
    if path.is_file():
        return [path]
    walk = path.rglob("*") if recursive else path.iterdir()
    out = []
    for p in walk:
        if p.name.startswith(".") or not p.is_file():
            continue  # folders, FIFOs, devices (which would block a reader) and dangling links
        if p.is_symlink() and path.resolve() not in p.resolve().parents:
            continue  # never follow links out of the folder
        out.append(p)
    return sorted(out)


def inspect_path(
    path: str | Path, recursive: bool = False, slices_per_volume: int | None = None, max_file_bytes: int = 64 << 20
) -> dict[str, Any]:
    """Summarise a file or a folder; JSON-ready.

    Files are grouped into runs and volumes by intake's own rules (a Siemens XA MFSPLIT run, with a series per
    volume, is one run); ``slices_per_volume`` stands in for the reference grid where no header gives it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    problems: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    series: dict[str, dict[str, Any]] = {}
    slices: dict[tuple[str, int], list[DicomImage]] = defaultdict(list)
    written: dict[Path, float] = {}  # file -> its last write
    files = _files(path, recursive)
    for f in files:
        try:
            st = f.stat()
            size, written[f] = st.st_size, st.st_mtime
            if size > max_file_bytes:
                problems.append(
                    {
                        "file": str(f),
                        "kind": "too-large",
                        "reason": f"{size} bytes, more than one volume can be; not read",
                    }
                )
                continue
            with f.open("rb") as fh:
                head = fh.read(132)
            if sniff(f, head) is None:
                ignored.append({"file": str(f), "reason": "neither DICOM nor NIfTI"})
                continue
            got = read_image(f)
        except UnsupportedFileError as exc:
            ignored.append({"file": str(f), "reason": exc.reason})
            continue
        except IntakeError as exc:
            problems.append({"file": str(f), "kind": exc.kind, "reason": exc.reason})
            continue
        except OSError as exc:
            problems.append({"file": str(f), "kind": "unreadable", "reason": str(exc)})
            continue
        if isinstance(got, DicomImage) and got.fmt == "slice":
            if not got.slices_expected and slices_per_volume:
                got.with_slices_per_volume(slices_per_volume, "--slices-per-volume")
            if not got.slices_expected:
                problems.append({"file": str(f), "kind": "ambiguous", "reason": _NO_SLICE_COUNT})
                continue
            slices[(got.run_uid, got.acquisition)].append(got)
            continue
        _add(series, got if isinstance(got, Volume) else _volume(got, problems), got, written.get(f, 0.0))
    for (_, acq), group in slices.items():
        expected = group[0].slices_expected
        if expected and len(group) < expected:
            problems.append(
                {
                    "file": str(group[0].path),
                    "kind": "incomplete",
                    "reason": f"acquisition {acq}: {len(group)} of {expected} slices",
                }
            )
            continue
        _add(series, _volume(group, problems), group[0], max(written.get(Path(g.path), 0.0) for g in group))
    now = time.time()
    summaries = [
        _summary(s, now) for s in sorted(series.values(), key=lambda s: (s["number"] is None, s["number"] or 0))
    ]
    if not summaries and not problems:
        what = "no files" if not files else f"{len(files)} file(s), none a DICOM or NIfTI image volume"
        problems.append({"file": str(path), "kind": "empty", "reason": f"{what}: nothing a scanner exported"})
    return {
        "path": str(path),
        "files": len(files),
        "series": summaries,
        "ignored_files": ignored,
        "problems": problems,
        "advice": _advice(summaries, problems),
        "next": _next_commands(path, summaries),
    }


_NO_SLICE_COUNT = (
    "slice file whose headers do not say how many slices a volume has: serve takes it from the bundle's reference "
    "grid; here, pass --slices-per-volume N"
)


def _advice(summaries: list[dict[str, Any]], problems: list[dict[str, str]]) -> list[str]:
    """What to set when the folder is ambiguous: several EPI runs, or slices whose count no header gives."""
    out = []
    epi = [s for s in summaries if s["epi"]]
    if len(epi) > 1:
        numbers = ", ".join(str(s["series_number"]) for s in epi)
        out.append(
            f"{len(epi)} EPI runs (series {numbers}): serve follows the first run that starts after it does (with "
            "--take-earlier-run: the newest one present on the bundle's grid); set [watcher] series = N in the serve "
            "config to follow another"
        )
    if any(p["kind"] == "ambiguous" for p in problems):
        out.append("set [watcher] slices_per_volume (serve sets it from the bundle's reference grid)")
    return out


def _next_commands(path: Path, summaries: list[dict[str, Any]]) -> list[str]:
    """The ``fmriface serve`` command lines to run next, for a folder: the run to come, and the newest run present
    (every file here was written before a serve started now, so that one needs ``--take-earlier-run``)."""
    if not path.is_dir():
        return []
    base = f"fmriface serve --bundle BUNDLE --watch {shlex.quote(str(path))}"
    out = [f"{base}    (start it before the run: follows the first run written after it starts)"]
    epi = [s for s in summaries if s["epi"] and s["age_s"] is not None]
    if epi:
        newest = min(epi, key=lambda s: s["age_s"])
        out.append(
            f"{base} --take-earlier-run    (decodes series {newest['series_number']}, written "
            f"{age_text(newest['age_s'])} ago, from its start; a series other than the newest on the bundle's grid: "
            "[watcher] series = N)"
        )
    return out


def _volume(images: DicomImage | list[DicomImage], problems: list[dict[str, str]]) -> Volume | None:
    images = images if isinstance(images, list) else [images]
    try:
        return assemble(images)
    except IntakeError as exc:
        problems.append({"file": str(exc.path), "kind": exc.kind, "reason": exc.reason})
        return None


def _add(series: dict[str, dict[str, Any]], vol: Volume | None, source: DicomImage | Volume, written: float) -> None:
    if vol is None:
        return
    key = vol.series or f"nifti:{vol.path.parent}"
    numbers = sorted({vol.series_number} - {None})
    entry = series.setdefault(
        key,
        {
            "uid": vol.series,
            "number": vol.series_number,
            "numbers": set(),
            "vendor": getattr(source, "vendor", "") or "",
            "export": getattr(source, "export", "") or ("nifti" if isinstance(source, Volume) else ""),
            "volumes_from": getattr(source, "volume_from", "") or "one volume per file",
            "slices_from": getattr(source, "slices_from", "") or "one volume per file",
            "description": getattr(source, "series_description", ""),
            "epi": getattr(source, "exclusion", None) is None,
            "not_epi_because": getattr(source, "exclusion", None),
            "formats": Counter(),
            "matrices": Counter(),
            "voxel_sizes": Counter(),
            "trs": Counter(),
            "acquisitions": [],
            "files": 0,
            "newest": 0.0,
            "oldest": float("inf"),
        },
    )
    if written > 0:
        entry["newest"], entry["oldest"] = max(entry["newest"], written), min(entry["oldest"], written)
    entry["numbers"].update(numbers)
    if vol.acquisition >= max(entry["acquisitions"], default=vol.acquisition):  # the later volumes tell the rule
        entry["volumes_from"] = getattr(source, "volume_from", "") or entry["volumes_from"]
    entry["formats"][vol.fmt] += 1
    entry["matrices"][vol.shape] += 1
    entry["voxel_sizes"][tuple(round(v, 4) for v in vol.voxel_size)] += 1
    entry["trs"][vol.tr] += 1
    entry["acquisitions"].append(vol.acquisition)
    entry["files"] += 1


def _summary(entry: dict[str, Any], now: float) -> dict[str, Any]:
    acqs = entry["acquisitions"]
    counts = Counter(acqs)
    missing = sorted(set(range(min(acqs), max(acqs) + 1)) - set(acqs)) if acqs else []
    notes = []
    if len(entry["matrices"]) > 1:
        notes.append(
            f"matrices differ within the series: {dict((str(list(k)), v) for k, v in entry['matrices'].items())}"
        )
    if len(entry["trs"]) > 1:
        notes.append(f"TRs differ within the series: {sorted(map(str, entry['trs']))}")
    numbers = sorted(entry["numbers"])
    if len(numbers) > 1:
        notes.append(
            f"one run in {len(numbers)} series ({numbers[0]}-{numbers[-1]}): an XA MFSPLIT export gives every volume "
            "a series of its own; intake follows them as one run"
        )
    return {
        "series_uid": entry["uid"],
        "series_number": entry["number"],
        "description": entry["description"],
        "vendor": entry["vendor"],
        "export": entry["export"],
        "volumes_told_by": entry["volumes_from"],
        "slices_told_by": entry["slices_from"],
        "epi": entry["epi"],
        "not_epi_because": entry["not_epi_because"],
        "format": entry["formats"].most_common(1)[0][0],
        "matrix": list(entry["matrices"].most_common(1)[0][0]),
        "voxel_size_mm": list(entry["voxel_sizes"].most_common(1)[0][0]),
        "tr_s": entry["trs"].most_common(1)[0][0],
        "volumes": len(acqs),
        "acquisitions": compact_ranges(acqs),
        "missing": compact_ranges(missing),
        "duplicates": sorted(a for a, n in counts.items() if n > 1),
        "notes": notes,
        # seconds since its newest and oldest file were written: to a serve started now, an earlier run
        "age_s": round(now - entry["newest"], 1) if entry["newest"] > 0 else None,
        "oldest_age_s": round(now - entry["oldest"], 1) if entry["newest"] > 0 else None,
    }


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_path`'s result."""
    lines = [f"{report['path']}: {report['files']} file(s), {len(report['series'])} series"]
    for s in report["series"]:
        epi = "EPI" if s["epi"] else f"not EPI ({s['not_epi_because']})"
        vox = "x".join(f"{v:g}" for v in s["voxel_size_mm"])
        tr = f"{s['tr_s']:g} s" if s["tr_s"] else "unknown"
        lines.append(f"  series {s['series_number']} {s['description']!r} [{epi}]")
        lines.append(f"    {s['vendor'] or 'unknown vendor'}, export {s['export'] or 'unknown'}")
        lines.append(f"    volumes told apart by {s['volumes_told_by']}; slices per volume from {s['slices_told_by']}")
        lines.append(f"    format {s['format']}, matrix {'x'.join(map(str, s['matrix']))}, voxel {vox} mm, TR {tr}")
        lines.append(f"    {s['volumes']} volume(s), acquisitions {s['acquisitions']}")
        if s.get("age_s") is not None:
            lines.append(
                f"    written {age_text(s['age_s'])} ago (the oldest file {age_text(s['oldest_age_s'])}): an earlier "
                "run to a serve started now, not followed without --take-earlier-run"
            )
        if s["missing"]:
            lines.append(f"    missing acquisitions: {s['missing']}")
        if s["duplicates"]:
            lines.append(f"    duplicated acquisitions: {s['duplicates']}")
        lines += [f"    note: {n}" for n in s["notes"]]
    lines += [f"  advice: {a}" for a in report.get("advice", [])]
    lines += [f"  next: {c}" for c in report.get("next", [])]
    if report["problems"]:
        lines.append(f"  problems ({len(report['problems'])}):")
        lines += [f"    {os.path.basename(p['file'])}: {p['kind']}: {p['reason']}" for p in report["problems"]]
    else:
        lines.append("  no problems found")
    for item in report["ignored_files"][:10]:
        lines.append(f"  ignored {os.path.basename(item['file'])}: {item['reason']}")
    if len(report["ignored_files"]) > 10:
        lines.append(f"  ... and {len(report['ignored_files']) - 10} more ignored files")
    return "\n".join(lines)
