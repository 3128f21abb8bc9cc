"""The BIDS copy of a serve run (service.live.bids_writer): the volumes as received, voxel-exact; valid at every
moment and after a crash (``fmriface bids-finish``); a resumed run goes on with the same BIDS run; the labels; the
events and derivatives; pybids indexes it and the BIDS validator finds no error."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fmriface import cli
from fmriface.benchmarks.synth import make_bundle, make_run
from service import protocol
from service.live.bids_writer import BidsArchive, BidsLabels, StagedNifti, next_run_index
from tests.service.harness import make_volume, serve, serve_config

TR = 2.0
STEM = "sub-01_ses-01_task-live_run-01"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=8, image_size=8, tr=TR)


def _volumes(synth, n: int, seed: int = 3, integers: bool = False) -> list:
    data = make_run(synth, [(4.0, 1), (10.0, 2)], n, amplitude=3.0, seed=seed)
    if integers:
        data = np.round(data)
    return [make_volume(i, np.ascontiguousarray(data[i]), synth.affine, TR) for i in range(n)]


def _events(tmp_path: Path) -> Path:
    """An events.tsv in a data set with its stimuli (copied into the BIDS copy's stimuli/)."""
    for name in ("test_00.png", "test_01.png"):
        (tmp_path / "data/stimuli/test").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/stimuli/test" / name).write_bytes(b"\x89PNG" + name.encode())
    path = tmp_path / "data/sub-01/func/events.tsv"
    path.parent.mkdir(parents=True)
    path.write_text(
        "onset\tduration\ttrial_type\tstim_file\n4.0\t1.0\ttest_face\ttest/test_00.png\n"
        "7.0\t1.0\tFix\tn/a\n10.0\t1.0\ttest_face\ttest/test_01.png\n"
    )
    return path


def test_staged_nifti_is_valid_at_every_moment_and_a_gap_reads_as_zeros(tmp_path):
    rng = np.random.default_rng(0)
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    staged = StagedNifti(tmp_path / "x_bold.nii").create((7, 8, 9), affine, 2.0)
    assert nib.load(tmp_path / "x_bold.nii").shape == (7, 8, 9, 0)
    vols = [rng.normal(size=(7, 8, 9)).astype(np.float32) for _ in range(4)]
    for k in (0, 1, 3):  # volume 2 never arrives
        staged.write(k, vols[k])
        img = nib.load(tmp_path / "x_bold.nii")
        assert img.shape[3] == k + 1 and img.header.get_zooms()[3] == 2.0
        np.testing.assert_array_equal(np.asarray(img.dataobj)[..., k], vols[k])
    staged.close()
    data = np.asarray(nib.load(tmp_path / "x_bold.nii").dataobj)
    assert not data[..., 2].any()
    np.testing.assert_array_equal(nib.load(tmp_path / "x_bold.nii").affine, affine)
    again = StagedNifti(tmp_path / "x_bold.nii").reopen()  # a resumed run goes on where the header says
    assert again.n_ == 4 and again.shape == (7, 8, 9)
    again.close()


def test_next_run_index_skips_the_runs_already_there(tmp_path):
    labels = BidsLabels()
    assert next_run_index(tmp_path, labels) == 1
    func = tmp_path / labels.func
    func.mkdir(parents=True)
    (func / f"{STEM}_bold.nii.gz").touch()
    (func / "sub-01_ses-01_task-live_run-03_bold.nii").touch()
    assert next_run_index(tmp_path, labels) == 2


def test_a_serve_run_is_kept_as_a_bids_run_voxel_exact(synth, tmp_path):
    vols = _volumes(synth, 14)
    cfg = serve_config(synth.path, tmp_path, events=_events(tmp_path), max_volumes=14)
    served = serve(cfg, vols)
    run_dir = served.service.run_dir_
    root = run_dir / "bids"
    func = root / "sub-01" / "ses-01" / "func"
    bold = nib.load(func / f"{STEM}_bold.nii.gz")
    assert not (func / f"{STEM}_bold.nii").exists()  # the staged file is gone once finished
    data = np.asarray(bold.dataobj)
    assert data.dtype == np.float32 and data.shape == (*vols[0].data.shape, 14)
    for v in vols:  # bit for bit, before motion correction, on the scanner's grid
        np.testing.assert_array_equal(data[..., v.index], v.data)
    np.testing.assert_allclose(bold.affine, synth.affine, atol=1e-5)
    assert bold.header.get_zooms()[3] == TR
    sidecar = json.loads((func / f"{STEM}_bold.json").read_text())
    assert sidecar == {"TaskName": "live", "RepetitionTime": TR}
    events = (func / f"{STEM}_events.tsv").read_text().splitlines()
    assert events[0] == "onset\tduration\ttrial_type\tstim_file"
    assert events[1:] == [
        "4.000\t1.000\ttest_face\ttest/test_00.png",
        "7.000\t1.000\tFix\tn/a",
        "10.000\t1.000\ttest_face\ttest/test_01.png",
    ]
    assert (root / "stimuli/test/test_01.png").read_bytes() == b"\x89PNGtest_01.png"
    deriv = root / "derivatives" / "fmriface" / "sub-01" / "ses-01" / "func"
    confounds = (deriv / f"{STEM}_desc-confounds_timeseries.tsv").read_text().splitlines()
    assert confounds[0].split("\t")[:7] == [
        "trans_x",
        "trans_y",
        "trans_z",
        "rot_x",
        "rot_y",
        "rot_z",
        "framewise_displacement",
    ]
    assert len(confounds) == 15
    trials = (deriv / f"{STEM}_desc-decoded_trials.tsv").read_text().splitlines()
    latents = np.load(run_dir / "trial_latents.npy")
    assert len(trials) == 1 + len(latents) and len(latents) >= 1
    row = trials[1].split("\t")
    np.testing.assert_allclose([float(v) for v in row[5:]], latents[0], rtol=1e-5)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["bids"] == {"root": str(root.resolve()), "bold": f"sub-01/ses-01/func/{STEM}_bold.nii.gz"}
    assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == "raw"


def test_integer_volumes_are_kept_as_int16_losslessly(synth, tmp_path):
    vols = _volumes(synth, 6, integers=True)
    served = serve(serve_config(synth.path, tmp_path, max_volumes=6), vols)
    bold = next((served.service.run_dir_ / "bids").rglob("*_bold.nii.gz"))
    img = nib.load(bold)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj, dtype=np.float32), np.stack([v.data for v in vols], -1))


def test_labels_from_options_or_a_trigger_event_never_the_folder(synth, tmp_path):
    vols = _volumes(synth, 4)
    cfg = serve_config(synth.path, tmp_path / "a", subject="07", session="2", task="faces", max_volumes=4)
    (tmp_path / "a").mkdir()
    served = serve(cfg, vols)
    assert (served.service.run_dir_ / "bids/sub-07/ses-2/func/sub-07_ses-2_task-faces_run-01_bold.nii.gz").is_file()
    trigger = {"kind": "trigger", "trigger_time": 0.0, "subject": "12", "session": 3, "run": 4}
    frames = [protocol.encode("event", trigger)]
    (tmp_path / "b").mkdir()
    served = serve(serve_config(synth.path, tmp_path / "b", max_volumes=4), vols, inbound=frames)
    names = [p.name for p in (served.service.run_dir_ / "bids").rglob("*_bold.nii.gz")]
    assert names == ["sub-12_ses-3_task-live_run-04_bold.nii.gz"]


def test_no_bids_copy_when_turned_off(synth, tmp_path):
    served = serve(serve_config(synth.path, tmp_path, bids=False, max_volumes=3), _volumes(synth, 3))
    assert not (served.service.run_dir_ / "bids").exists()
    assert "bids" not in json.loads((served.service.run_dir_ / "manifest.json").read_text())


def test_a_crashed_run_is_finished_by_bids_finish_and_a_resumed_run_goes_on(synth, tmp_path, capsys):
    vols = _volumes(synth, 10)
    run_dir = tmp_path / "runs" / "crashed"
    archive = BidsArchive(tmp_path / "out", run_dir, TR).start()
    run_dir.mkdir(parents=True)
    for v in vols[:6]:
        archive.volume(v)
    archive.stop()  # the process dies here: nothing finished
    staged = tmp_path / "out" / "sub-01/ses-01/func" / f"{STEM}_bold.nii"
    assert nib.load(staged).shape[3] == 6  # valid as it is
    assert cli.main(["bids-finish", str(run_dir)]) == 0
    bold = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bold"])
    assert bold.is_file() and not staged.exists()
    np.testing.assert_array_equal(np.asarray(nib.load(bold).dataobj), np.stack([v.data for v in vols[:6]], -1))
    # the resumed run: same BIDS run, the finished file unpacked and written on
    again = BidsArchive(tmp_path / "elsewhere", run_dir, TR).start()
    for v in vols[6:]:
        again.volume(v)
    assert again.close() == bold
    np.testing.assert_array_equal(np.asarray(nib.load(bold).dataobj), np.stack([v.data for v in vols], -1))
    assert not (tmp_path / "elsewhere").exists()


def test_bids_finish_names_a_folder_without_a_copy(tmp_path):
    from fmriface.common import UsageError

    with pytest.raises(UsageError, match="no bids.json"):
        cli.main(["bids-finish", str(tmp_path)])


def test_pybids_indexes_it_and_the_validator_finds_no_error(synth, tmp_path):
    bids = pytest.importorskip("bids")
    # a run id that reads as no BIDS entity: pybids takes entities from the whole path, so a folder above the root
    # named like ``run-8903...`` (a default run id that starts with digits) would give run 8903 (docs/runs.md)
    cfg = serve_config(synth.path, tmp_path, events=_events(tmp_path), max_volumes=8, run_id="live")
    served = serve(cfg, _volumes(synth, 8))
    root = served.service.run_dir_ / "bids"
    layout = bids.BIDSLayout(str(root), validate=True)
    files = layout.get(suffix="bold", extension=".nii.gz")
    assert len(files) == 1 and files[0].entities["run"] == 1 and files[0].entities["task"] == "live"
    assert layout.get_metadata(files[0].path)["RepetitionTime"] == TR
    assert len(layout.get(suffix="events")) == 1
    validate(root)


def validator() -> list[str]:
    """The command line of the BIDS validator (npm's ``bids-validator`` run by node), or a skip saying why."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make system-deps installs it): the BIDS validator cannot run")
    cache = Path(os.environ.get("FMRIFACE_BIDS_VALIDATOR", Path.home() / ".cache/fmriface/bids-validator"))
    for script in (
        cache / "node_modules/bids-validator/bin/bids-validator",
        cache / "node_modules/.bin/bids-validator",
    ):
        if script.exists():
            return [node, str(script.resolve())]
    pytest.skip(f"bids-validator is not installed under {cache} (make system-deps: npm install bids-validator)")


def validate(root: Path) -> dict:
    """Run the validator on ``root``; assert it reports no error; its JSON output."""
    argv = [*validator(), "--json", str(root)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"validator output is not JSON (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        ) from None
    issues = report.get("issues", {})
    errors = (
        issues.get("errors")
        if "errors" in issues
        else [i for i in issues.get("issues", []) if i.get("severity") == "error"]
    )
    assert not errors, json.dumps(errors, indent=1)[:4000]
    return report


@pytest.mark.parametrize("name", [s.name for s in __import__("tests.service.realdata", fromlist=["SERIES"]).SERIES])
def test_real_dicom_exports_kept_equal_to_dcm2niix_and_without_the_patient(name, tmp_path):
    """The real fixtures (tests/data/scanner-data): the BIDS copy of the volumes as intake reads them equals
    dcm2niix's conversion of the same files, and no patient field reaches any file of it (the files carry them)."""
    from service.intake.assembly import read_volume
    from tests.service.intake.test_real_scanners import _first_files_of_volumes
    from tests.service.realdata import BY_NAME, canonical, decompress, reference_volumes

    series = BY_NAME[name]
    files = decompress(series, tmp_path / "files")
    ref_data, ref_affine = reference_volumes(series, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    archive = BidsArchive(tmp_path / "bids", run_dir, series.tr_s).start()
    for t, path in enumerate(_first_files_of_volumes(files, series.volumes)):
        vol = read_volume(path)
        vol.index = t
        archive.volume(vol)
    bold = archive.close()
    data, affine = canonical(np.asarray(nib.load(bold).dataobj), nib.load(bold).affine)
    np.testing.assert_array_equal(data, ref_data[..., : series.volumes])
    assert np.abs(affine - ref_affine).max() < 0.01
    sidecar = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["RepetitionTime"] == pytest.approx(series.tr_s, abs=0.01) and sidecar["Manufacturer"]
    assert sidecar.get("PhaseEncodingAxis") in (None, "i", "j")
    blob = b""
    for f in (tmp_path / "bids").rglob("*"):
        if f.is_file():
            blob += gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    blob += (run_dir / "bids.json").read_bytes()
    assert any(p.encode() in b"".join(f.read_bytes() for f in files) for p in series.patient)  # they carry them
    for secret in series.patient:
        assert secret.encode() not in blob, secret
    validate(tmp_path / "bids")
