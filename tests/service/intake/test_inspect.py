"""`fmriface inspect`: formats, series, matrix, voxel size, TR, acquisitions and problems of an export folder."""

from __future__ import annotations

import json

import pytest

from fmriface.commands import inspect as inspect_command
from service.intake.inspect import compact_ranges, inspect_path
from service.scanner.writers import write_bytes, write_volume
from tests.service.dicom.test_formats import AFFINES, make_volume

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-4455", "PatientBirthDate": "19690102"}


@pytest.fixture
def export(tmp_path):
    """A scanner export: an EPI run with a gap and a duplicate, a localizer, a cut file, NIfTI, a text file."""
    folder = tmp_path / "export"
    aff = AFFINES["las"]
    for i, acq in enumerate((1, 2, 3, 5, 5)):
        write_volume(
            make_volume(acq),
            aff,
            folder / f"epi_{i}.dcm",
            "mosaic",
            acquisition=acq,
            tr=2.0,
            series_number=3,
            patient=PATIENT,
        )
    write_volume(
        make_volume(1),
        aff,
        folder / "loc.dcm",
        "enhanced",
        acquisition=1,
        tr=None,
        series_number=1,
        series_description="localizer",
    )
    for acq in (1, 2):
        write_volume(
            make_volume(acq), aff, folder / f"ge_{acq}", "slices", acquisition=acq, tr=1.5, series_number=9, vendor="ge"
        )
    cut = write_volume(make_volume(6), aff, folder / "epi_cut.dcm", "mosaic", acquisition=6, tr=2.0, series_number=3)[0]
    blob = cut.read_bytes()
    write_bytes(cut, blob[: len(blob) - 100])
    (folder / "ge_2_s0003.dcm").unlink()  # one slice of GE volume 2 missing
    write_volume(make_volume(4), AFFINES["ras"], folder / "sub" / "vol4.nii.gz", "nifti", acquisition=4, tr=2.5)
    (folder / "README.txt").write_text("exported by the scanner console\n" * 10)
    return folder


def test_compact_ranges():
    assert compact_ranges([5, 1, 2, 3, 7, 8]) == "1-3,5,7-8"
    assert compact_ranges([]) == "" and compact_ranges([4]) == "4"


def test_folder_report(export):
    report = inspect_path(export)
    by_number = {s["series_number"]: s for s in report["series"]}
    epi = by_number[3]
    assert epi["format"] == "mosaic" and epi["epi"] and epi["matrix"] == [10, 12, 7]
    assert epi["voxel_size_mm"] == [3.0, 3.0, 3.5] and epi["tr_s"] == 2.0
    assert epi["acquisitions"] == "1-3,5" and epi["missing"] == "4" and epi["duplicates"] == [5]
    assert not by_number[1]["epi"] and "localizer" in by_number[1]["not_epi_because"]
    assert by_number[9]["format"] == "slices" and by_number[9]["acquisitions"] == "1" and by_number[9]["tr_s"] == 1.5
    problems = {(p["file"].rsplit("/", 1)[-1], p["kind"]) for p in report["problems"]}
    assert problems == {("epi_cut.dcm", "incomplete"), ("ge_2_s0001.dcm", "incomplete")}
    assert [i["file"].rsplit("/", 1)[-1] for i in report["ignored_files"]] == ["README.txt"]
    assert all(s["series_number"] != 4 for s in report["series"])  # sub-folder not read without recursive
    nested = inspect_path(export, recursive=True)
    assert any(s["format"] == "nifti" and s["tr_s"] == 2.5 for s in nested["series"])


def test_command_json_text_strict_and_privacy(export, capsys):
    assert inspect_command.main([str(export), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert {s["series_number"] for s in report["series"]} == {1, 3, 9}
    assert inspect_command.main([str(export), "--strict"]) == 1
    text = capsys.readouterr().out
    assert "missing acquisitions: 4" in text and "epi_cut.dcm: incomplete" in text
    for secret in ("Doe", "Jane", "PID-4455", "19690102"):
        assert secret not in out and secret not in text


def test_special_files_and_outside_links_are_skipped(export, tmp_path):
    import os

    before = inspect_path(export)["files"]
    os.mkfifo(export / "pipe.dcm")  # opening it would block
    outside = write_volume(
        make_volume(8), AFFINES["las"], tmp_path / "elsewhere" / "x.dcm", "mosaic", acquisition=8, tr=2.0
    )[0]
    (export / "link.dcm").symlink_to(outside)
    report = inspect_path(export)
    assert report["files"] == before  # neither the pipe nor the link out of the folder was read
    assert all(s["acquisitions"] != "8" for s in report["series"])


def test_single_file_and_missing_path(export, capsys):
    assert inspect_command.main([str(export / "epi_0.dcm"), "--strict"]) == 0
    text = capsys.readouterr().out
    assert "1 file(s), 1 series" in text and "no problems found" in text
    with pytest.raises(FileNotFoundError):
        inspect_command.main([str(export / "nope")])
