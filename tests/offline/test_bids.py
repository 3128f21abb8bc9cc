"""The BIDS loader on a hand-made tiny data set laid out like ds001761."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from offline.datasets.bids import BidsError, load_bids, load_stimuli, stimulus_table


def _run(func, stem, n_vol, events, rng, tr=None):
    data = (rng.normal(size=(5, 6, 7, n_vol)) * 10 + 500).astype(np.int16)
    data[0, 0, 0, :] = np.arange(n_vol)  # the volume index, so order is checkable
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.5, 1.0]))
    img.header.set_zooms((3.0, 3.0, 3.5, 2.5))
    nib.save(img, func / f"{stem}_bold.nii.gz")
    if tr is not None:
        (func / f"{stem}_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": "faces"}))
    pd.DataFrame(events).to_csv(func / f"{stem}_events.tsv", sep="\t", index=False, na_rep="n/a")


@pytest.fixture
def bids_root(tmp_path, rng):
    root = tmp_path / "ds"
    (root / "stimuli" / "train").mkdir(parents=True)
    (root / "stimuli" / "test").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    (root / "task-imagery_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))  # inherited
    for i in range(3):
        img = np.zeros((12, 16, 3), np.uint8)
        img[..., i] = 200
        img[:, :2] = 255  # asymmetric border, so the centre crop is checkable
        Image.fromarray(img).save(root / "stimuli" / "train" / f"train_{i:05d}.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(root / "stimuli" / "test" / "test_00.png")
    for ses in ("01", "02"):
        (root / "sub-01" / f"ses-{ses}" / "func").mkdir(parents=True)
    f1 = root / "sub-01" / "ses-01" / "func"
    f2 = root / "sub-01" / "ses-02" / "func"
    train = {
        "onset": [0.0, 3.0, 6.0, 9.0],
        "duration": [1.0] * 4,
        "trial_type": ["train_face", "Fix", "train_face", "train_face"],
        "stim_file": ["train/train_00000.png", None, "train/train_00001.png", "train/train_00002.png"],
        "oneback": [0, 0, 0, 0],
    }
    _run(f2, "sub-01_ses-02_task-faces_run-01", 9, train, rng, tr=2.0)
    _run(f1, "sub-01_ses-01_task-faces_run-02", 8, train, rng, tr=2.0)
    test = {"onset": [2.0], "duration": [1.0], "trial_type": ["test_face"], "stim_file": ["test/test_00.png"]}
    _run(f1, "sub-01_ses-01_task-faces_run-01", 10, test, rng, tr=2.0)
    img = {"onset": [0.0], "duration": [12.0], "trial_type": ["Img"], "stim_file": ["test/test_00.png"]}
    _run(f2, "sub-01_ses-02_task-imagery_run-02", 11, img, rng)
    return root


def test_runs_are_indexed_in_acquisition_order_with_kinds(bids_root):
    sub = load_bids(bids_root)
    assert sub.subject == "01"
    names = [r.name for r in sub.runs]
    assert names == [
        "sub-01_ses-01_task-faces_run-01",
        "sub-01_ses-01_task-faces_run-02",
        "sub-01_ses-02_task-faces_run-01",
        "sub-01_ses-02_task-imagery_run-02",
    ]
    assert [r.kind for r in sub.runs] == ["test", "train", "train", "imagery"]
    assert [r.tr for r in sub.runs] == [2.0, 2.0, 2.0, 2.0]  # the imagery TR from the top-level sidecar
    assert sub.summary()["runs"] == {"test": 1, "train": 2, "imagery": 1}
    ev = sub.of_kind("train")[0].events
    assert ev["stim_file"].isna().sum() == 1 and ev["trial_type"].tolist()[1] == "Fix"
    data, affine = sub.runs[0].load()
    assert data.shape == (5, 6, 7, 10) and data.dtype == np.float32
    np.testing.assert_array_equal(data[0, 0, 0], np.arange(10))
    assert affine[2, 2] == 3.5


def test_tr_falls_back_to_the_header(bids_root):
    (bids_root / "task-imagery_bold.json").unlink()
    imagery = load_bids(bids_root, "sub-01").of_kind("imagery")[0]
    assert imagery.tr == 2.5


def test_stimuli_are_found_cropped_and_resized(bids_root):
    ims = load_stimuli(bids_root, ["train/train_00001.png", "test_00.png"], size=6)
    assert ims.shape == (2, 6, 6, 3) and ims.dtype == np.uint8
    assert ims[0, :, :, 1].mean() > 150 and ims[0, :, :, 0].max() < 60  # green face, white border cropped off
    assert abs(int(ims[1].mean()) - 90) <= 1  # found by name when the path is not relative to stimuli/
    with pytest.raises(BidsError, match="not found"):
        load_stimuli(bids_root, ["train/missing.png"], size=6)
    assert stimulus_table(bids_root) is None


def test_stimuli_are_framed_as_the_face_space_was_trained(tmp_path):
    from PIL import Image

    # a 100 x 80 photograph: a 6-pixel white frame inside the central square, the rest grey
    img = np.full((100, 80, 3), 120, np.uint8)
    img[10:90, :][:6] = img[10:90, :][-6:] = 255
    img[10:90, :6] = img[10:90, -6:] = 255
    (tmp_path / "stimuli").mkdir()
    Image.fromarray(img).save(tmp_path / "stimuli" / "face.png")
    framed = {f: load_stimuli(tmp_path, ["face.png"], 20, f)[0] for f in ("central-80", "square", "resize")}
    assert framed["central-80"].min() == framed["central-80"].max() == 120  # the central 80% lies inside the frame
    assert framed["square"][0].min() == 255 and framed["square"][10, 10, 0] == 120  # the frame is the border
    assert framed["resize"][0].max() == 120 and framed["resize"][2].min() > 200  # whole image squeezed
    with pytest.raises(ValueError, match="unknown framing 'tight'"):
        load_stimuli(tmp_path, ["face.png"], 20, "tight")
    odd = np.arange(99 * 102 * 3, dtype=np.uint32).reshape(99, 102, 3).astype(np.uint8)
    Image.fromarray(odd).save(tmp_path / "stimuli" / "odd.png")  # 102 wide, 99 high: the square is 99 x 99
    np.testing.assert_array_equal(load_stimuli(tmp_path, ["odd.png"], 99, "square")[0], odd[:, 1:100])
    (tmp_path / "stimuli" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(BidsError, match="bad.png cannot be read as an image"):
        load_stimuli(tmp_path, ["bad.png"], 20, "square")


def test_bad_data_sets_are_named(tmp_path, bids_root):
    with pytest.raises(BidsError, match="not a folder"):
        load_bids(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BidsError, match="dataset_description.json"):
        load_bids(tmp_path / "empty")
    with pytest.raises(BidsError, match="no subject '02'"):
        load_bids(bids_root, "02")
    bad = next((bids_root / "sub-01" / "ses-01" / "func").glob("*run-01_events.tsv"))
    bad.write_text("onset\tstim_file\n1.0\tx.png\n")
    with pytest.raises(BidsError, match="lacks the columns duration, trial_type"):
        load_bids(bids_root)
