"""Real scanners' exports read as dcm2niix reads them, and handed on live, every volume once, in order.

The files are real (``tests/data/scanner-data``: Siemens XA30 interoperability and enhanced, Siemens VE11
mosaic, GE real-time EPI); what they should give comes from dcm2niix, not from fmriface's writers.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.intake.assembly import read_volume
from service.intake.inspect import format_report, inspect_path
from service.intake.watcher import VolumeWatcher
from service.volume import IntakeEvent, Volume
from tests.service.realdata import BY_NAME, SERIES, canonical, decompress, reference_volumes

IDS = [s.name for s in SERIES]


def _first_files_of_volumes(files: list[Path], n_volumes: int) -> list[Path]:
    """One file of each volume, by splitting the acquisition-ordered files into equal runs (independent rule)."""
    per = len(files) // n_volumes
    assert per * n_volumes == len(files)
    return [files[i * per] for i in range(n_volumes)]


@pytest.mark.parametrize("name", IDS)
def test_every_volume_equals_dcm2niix(name, tmp_path):
    series = BY_NAME[name]
    files = decompress(series, tmp_path / "files")
    ref_data, ref_affine = reference_volumes(series, tmp_path)
    assert ref_data.shape[3] >= series.volumes
    for t, path in enumerate(_first_files_of_volumes(files, series.volumes)):
        vol = read_volume(path)
        assert vol.acquisition == t + 1
        data, affine = canonical(vol.data, vol.affine)
        assert data.shape == ref_data.shape[:3] == series.matrix
        np.testing.assert_array_equal(data, ref_data[..., t])
        # the affines agree within 0.01 mm at every corner of the field of view
        corners = np.array(
            [[i, j, k, 1] for i in (0, data.shape[0]) for j in (0, data.shape[1]) for k in (0, data.shape[2])]
        )
        assert np.abs((corners @ affine.T - corners @ ref_affine.T)[:, :3]).max() < 0.01


def _feed(files: list[Path], folder: Path, n_expected: int, until=None, **config) -> list[Volume | IntakeEvent]:
    """Move ``files`` one by one into a watched folder (as a scanner's export does: written aside, renamed in) and
    collect what the watcher hands on until ``n_expected`` volumes are in and ``until(out)`` holds (when given),
    or the watcher has been quiet for 5 s."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Volume | IntakeEvent] = []

    def done() -> bool:
        return sum(isinstance(o, Volume) for o in out) >= n_expected and (until is None or until(out))

    with VolumeWatcher(str(folder), **config) as watcher:
        for f in files:
            part = folder / f".{f.name}.part"
            shutil.copyfile(f, part)
            part.rename(folder / f.name)
        while not done():
            got = watcher.get(timeout=5.0)
            if got is None:
                break
            out.append(got)
    return out


def _kinds(out: list) -> set[str]:
    return {o.kind for o in out if isinstance(o, IntakeEvent)}


def _problems(out: list) -> list[str]:
    return [f"{o.kind}: {o.reason}" for o in out if isinstance(o, IntakeEvent) and o.kind not in ("series", "polling")]


@pytest.mark.parametrize("order", ["acquisition", "shuffled-within-volumes"])
@pytest.mark.parametrize("name", IDS)
def test_fed_live_every_volume_is_handed_on_once_in_order(name, order, tmp_path):
    series = BY_NAME[name]
    files = decompress(series, tmp_path / "files")
    if order != "acquisition":
        per = len(files) // series.volumes
        rng = random.Random(7)
        shuffled = []
        for v in range(series.volumes):
            chunk = files[v * per : (v + 1) * per]
            rng.shuffle(chunk)
            shuffled += chunk
        files = shuffled
    out = _feed(files, tmp_path / "watch", series.volumes)
    vols = [o for o in out if isinstance(o, Volume)]
    assert not _problems(out)
    assert [v.index for v in vols] == list(range(series.volumes))
    assert [v.acquisition for v in vols] == list(range(1, series.volumes + 1))
    assert all(v.shape == series.matrix for v in vols)
    assert len({v.series for v in vols}) == 1  # one run, though XA MFSPLIT gives every volume a series


@pytest.mark.parametrize("name", IDS)
def test_inspect_reports_the_series_right(name, tmp_path):
    series = BY_NAME[name]
    decompress(series, tmp_path / "files")
    report = inspect_path(tmp_path / "files")
    assert not report["problems"] and len(report["series"]) == 1
    (s,) = report["series"]
    assert tuple(s["matrix"]) == series.matrix
    np.testing.assert_allclose(s["voxel_size_mm"], series.voxel_mm, atol=1e-3)
    assert s["tr_s"] == pytest.approx(series.tr_s)
    assert s["volumes"] == series.volumes and s["acquisitions"] == f"1-{series.volumes}"
    assert s["export"] == series.export and s["epi"]
    assert s["vendor"] and s["volumes_told_by"] and s["slices_told_by"]
    text = format_report(report) + json.dumps(report)
    assert series.export in text
    leaks = [p for p in series.patient if p.lower() in text.lower()]
    assert not leaks, f"patient fields in inspect's output: {leaks}"


def test_ge_volumes_are_told_apart_by_instance_number(tmp_path):
    files = decompress(BY_NAME["ge-epirt"], tmp_path / "files")
    assert {int(pydicom.dcmread(f, stop_before_pixels=True).AcquisitionNumber) for f in files} == {1}
    (s,) = inspect_path(tmp_path / "files")["series"]
    assert s["volumes_told_by"] == "InstanceNumber with 8 slices per volume"


def _strip_protocol(files: list[Path]) -> None:
    """Remove what tells an XA slice file's slice count (the Phoenix protocol, (0021,1019))."""
    for f in files:
        ds = pydicom.dcmread(f)
        block = ds.private_block(0x0021, "SIEMENS MR SDS 01")
        del ds[block.get_tag(0x19)]
        ds.save_as(f)


def test_xa_slices_without_a_slice_count_take_it_from_the_reference_grid(tmp_path):
    series = BY_NAME["siemens-xa30-interoperability"]
    files = decompress(series, tmp_path / "files")
    _strip_protocol(files)
    out = _feed(files[:33], tmp_path / "no-grid", 1, complete_timeout_s=0.5)
    assert not [o for o in out if isinstance(o, Volume)]
    reasons = " ".join(_problems(out))
    assert "slices_per_volume" in reasons and files[0].name in {Path(o.path).name for o in out if o.path}
    out = _feed(files, tmp_path / "grid", series.volumes, slices_per_volume=33)
    assert [v.index for v in out if isinstance(v, Volume)] == [0, 1, 2] and not _problems(out)
    report = inspect_path(tmp_path / "files")
    assert report["advice"] and "slices_per_volume" in " ".join(report["advice"])
    assert inspect_path(tmp_path / "files", slices_per_volume=33)["series"][0]["volumes"] == 3


def test_a_configured_xa_series_number_names_the_whole_mfsplit_run(tmp_path):
    series = BY_NAME["siemens-xa30-interoperability"]
    files = decompress(series, tmp_path / "files")
    out = _feed(
        files, tmp_path / "watch", series.volumes, series=7
    )  # the run's series (7001, 7002 ... are its volumes)
    assert [v.acquisition for v in out if isinstance(v, Volume)] == [1, 2, 3] and not _problems(out)


# --- bad input ------------------------------------------------------------------------------------------------


def _ge(tmp_path: Path) -> list[Path]:
    return decompress(BY_NAME["ge-epirt"], tmp_path / "files")


def test_a_truncated_slice_is_reported_and_the_other_volumes_go_on(tmp_path):
    files = _ge(tmp_path)
    files[10].write_bytes(files[10].read_bytes()[:5000])  # a slice of volume 2, cut
    config = dict(complete_timeout_s=0.3, retry_interval_s=0.02, gap_timeout_s=0.5)
    out = _feed(files, tmp_path / "watch", 2, until=lambda o: {"incomplete", "gap"} <= _kinds(o), **config)
    assert [o.acquisition for o in out if isinstance(o, Volume)] == [1, 3]
    named = [Path(o.path).name for o in out if isinstance(o, IntakeEvent) and o.kind == "incomplete" and o.path]
    assert files[10].name in named


def test_a_slice_of_another_series_in_a_volume_is_ignored(tmp_path):
    files = _ge(tmp_path)
    stray = tmp_path / "stray.dcm"
    ds = pydicom.dcmread(files[3])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesNumber = 99
    ds.save_as(stray)
    out = _feed([*files[:4], stray, *files[4:]], tmp_path / "watch", 3)
    assert [o.acquisition for o in out if isinstance(o, Volume)] == [1, 2, 3]
    ignored = [o for o in out if isinstance(o, IntakeEvent) and o.kind == "ignored"]
    assert ignored and Path(ignored[0].path).name == "stray.dcm" and "series 99" in ignored[0].reason


def test_a_missing_slice_leaves_its_volume_incomplete_and_the_next_handed_on(tmp_path):
    files = _ge(tmp_path)
    config = dict(complete_timeout_s=0.3, gap_timeout_s=0.5)
    out = _feed(
        files[:12] + files[13:], tmp_path / "watch", 2, until=lambda o: {"incomplete", "gap"} <= _kinds(o), **config
    )
    assert [o.acquisition for o in out if isinstance(o, Volume)] == [1, 3]
    incomplete = [o for o in out if isinstance(o, IntakeEvent) and o.kind == "incomplete"]
    assert incomplete[0].acquisition == 2 and "7 of 8 slices" in incomplete[0].reason
    gap = [o for o in out if isinstance(o, IntakeEvent) and o.kind == "gap"]
    assert gap[0].acquisitions == (2,)


def test_a_volume_whose_slice_count_differs_is_refused(tmp_path):
    series = BY_NAME["siemens-xa30-interoperability"]
    files = decompress(series, tmp_path / "files")
    third = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).AcquisitionNumber == 3]
    keep = sorted(third, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).SliceLocation))[:30]
    for f in third:
        if f not in keep:
            f.unlink()
            continue
        ds = pydicom.dcmread(f)
        block = ds.private_block(0x0021, "SIEMENS MR SDS 01")
        tag = block.get_tag(0x19)
        ds[tag].value = re.sub(rb"(sSliceArray\.lSize\s*=\s*)33", rb"\g<1>30", ds[tag].value)
        ds.save_as(f)
    files = [f for f in files if f.exists()]
    out = _feed(files, tmp_path / "watch", 2, until=lambda o: "mismatch" in _kinds(o))
    assert [o.acquisition for o in out if isinstance(o, Volume)] == [1, 2]
    mismatch = [o for o in out if isinstance(o, IntakeEvent) and o.kind == "mismatch"]
    assert mismatch[0].acquisition == 3 and "(64, 64, 30)" in mismatch[0].reason
